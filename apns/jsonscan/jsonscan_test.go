package jsonscan

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var validCases = []string{
	`{}`, `[]`, `""`, `0`, `-0`, `1.5e+10`, `-12.25E-3`, `true`, `false`, `null`,
	` {"a" : [1, 2, {"b": null}], "c": "x\"y\\z\/\b\f\n\r\t\u00e9"} `,
	`{"id":"job-1","token":"abab","payload":{"aps":{"alert":"hello"}},"priority":10}`,
	"\"caf\xc3\xa9\"", "\"\xff\"", // encoding/json does not check UTF-8 either
	strings.Repeat("[", 500) + strings.Repeat("]", 500),
}

var invalidCases = []string{
	``, ` `, `{`, `}`, `{"a"}`, `{"a":}`, `{"a":1,}`, `[1,]`, `[1 2]`, `{a:1}`, `{"a":1}}`,
	`01`, `-`, `1.`, `.5`, `1e`, `1e+`, `+1`, `tru`, `nul`, `"abc`, `"\x"`, `"\u12g4"`, `"\u12"`,
	"\"a\nb\"", "\"\x00\"", `{"a":1} x`, `[1]]`, `"\`,
	strings.Repeat("[", 2000) + strings.Repeat("]", 2000), // deeper than MaxDepth: the slow way
}

func TestValidJSON(t *testing.T) {
	for _, s := range validCases {
		require.True(t, json.Valid([]byte(s)), "%q", s)
		require.True(t, Valid([]byte(s)), "%q", s)
	}
	for _, s := range invalidCases {
		require.False(t, Valid([]byte(s)), "%q", s)
	}
}

// FuzzValid: Valid never accepts what encoding/json rejects, and
// agrees with it on everything nested less than MaxDepth.
func FuzzValid(f *testing.F) {
	for _, s := range append(validCases, invalidCases...) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, want := Valid(b), json.Valid(b)
		if got && !want {
			t.Fatalf("Valid accepts %q, json.Valid does not", b)
		}
		if want && !got && depth(b) <= MaxDepth {
			t.Fatalf("Valid refuses %q, json.Valid accepts it", b)
		}
	})
}

// depth is an upper bound of b's nesting.
func depth(b []byte) int {
	d, m := 0, 0
	for _, c := range b {
		switch c {
		case '[', '{':
			d++
			m = max(m, d)
		case ']', '}':
			d--
		}
	}
	return m
}

func BenchmarkValid(b *testing.B) {
	job := []byte(`{"id":"123e4567-e89b-12d3-a456-426614174000","token":"` + strings.Repeat("ab", 32) +
		`","payload":{"aps":{"alert":{"title":"Hello","body":"` + strings.Repeat("x", 100) + `"},"badge":1,"sound":"default"}}}`)
	b.Run("jsonscan.Valid", func(b *testing.B) {
		b.SetBytes(int64(len(job)))
		for b.Loop() {
			Valid(job)
		}
	})
	b.Run("json.Valid", func(b *testing.B) {
		b.SetBytes(int64(len(job)))
		for b.Loop() {
			json.Valid(job)
		}
	})
}

// TestValidMembers: the outer object's members and its objects' members
// are reported once validated, inner ones first; deeper ones and anything
// but a valid object are not.
func TestValidMembers(t *testing.T) {
	type member struct{ parent, name, value string }
	tests := []struct {
		in   string
		ok   bool
		want []member
	}{
		{`{}`, true, nil},
		{` {"a":1, "b":{"c":[{"d":2}],"e":{"f":3}}} `, true, []member{
			{"", `"a"`, `1`}, {`"b"`, `"c"`, `[{"d":2}]`}, {`"b"`, `"e"`, `{"f":3}`}, {"", `"b"`, `{"c":[{"d":2}],"e":{"f":3}}`}}},
		{`[{"a":1}]`, false, nil},
		{`"x"`, false, nil},
		{`{"a":1`, false, []member{{"", `"a"`, `1`}}},
		{`{"a":1}x`, false, []member{{"", `"a"`, `1`}}},
		{`{"a":{"b":tru}}`, false, nil},
	}
	for _, tt := range tests {
		var got []member
		ok := ValidMembers([]byte(tt.in), func(parent, name, value []byte) {
			got = append(got, member{string(parent), string(name), string(value)})
		})
		if ok != tt.ok || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %v %v, want %v %v", tt.in, ok, got, tt.ok, tt.want)
		}
		if ok && !Valid([]byte(tt.in)) {
			t.Errorf("%s: ValidMembers accepts what Valid refuses", tt.in)
		}
	}
}

// FuzzValidMembers: ValidMembers accepts exactly the valid objects.
func FuzzValidMembers(f *testing.F) {
	for _, c := range validCases {
		f.Add([]byte(c))
	}
	f.Add([]byte(`{"aps":{"alert":"hi","x":{"y":[1,{"z":2}]}},"a":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := strings.TrimLeft(string(b), " \t\r\n")
		want := Valid(b) && strings.HasPrefix(s, "{")
		if got := ValidMembers(b, func(_, _, _ []byte) {}); got != want {
			t.Fatalf("%q: ValidMembers %v, want %v", b, got, want)
		}
	})
}
