package jsonscan

import (
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
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
		ok, _ := ValidMembers([]byte(tt.in), func(parent, name, value []byte) {
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
		got, unicode := ValidMembers(b, func(_, _, _ []byte) {})
		if got != want {
			t.Fatalf("%q: ValidMembers %v, want %v", b, got, want)
		}
		if got && unicode != ValidUnicode(b) {
			t.Fatalf("%q: ValidMembers says unicode %v, ValidUnicode %v", b, unicode, !unicode)
		}
	})
}

// FuzzValidI: ValidI reports what Valid and ValidUnicode report.
func FuzzValidI(f *testing.F) {
	for _, s := range append(validCases, invalidCases...) {
		f.Add([]byte(s))
	}
	for _, s := range []string{`"\ud800"`, `{"a":"\ud800"}`, "[\"\xff\"]", `{"\u00e9":1}`, "{\"\xc3\xa9\":2}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		valid, unicode := ValidI(b)
		if want := Valid(b); valid != want {
			t.Fatalf("%q: ValidI valid %v, Valid %v", b, valid, want)
		}
		if want := valid && ValidUnicode(b); unicode != want {
			t.Fatalf("%q: ValidI unicode %v, ValidUnicode %v", b, unicode, want)
		}
	})
}

// TestValidI: the unicode verdict of the one-pass check, ASCII or not.
func TestValidI(t *testing.T) {
	for _, tt := range []struct {
		in             string
		valid, unicode bool
	}{
		{`{"a":"plain"}`, true, true},
		{`{"a":"\u00e9"}`, true, true},
		{`{"a":"\ud800"}`, true, false},
		{"{\"a\":\"caf\xc3\xa9\"}", true, true},
		{"{\"a\":\"\xff\"}", true, false},
		{"{\"\xff\":1}", true, false},
		{`{"a":`, false, false},
	} {
		valid, unicode := ValidI([]byte(tt.in))
		if valid != tt.valid || unicode != tt.unicode {
			t.Errorf("ValidI(%q) = %v, %v; want %v, %v", tt.in, valid, unicode, tt.valid, tt.unicode)
		}
	}
}

// FuzzValidObject: ValidObject agrees with ValidMembers and reports the
// outer members only, in order.
func FuzzValidObject(f *testing.F) {
	for _, c := range append(validCases, invalidCases...) {
		f.Add([]byte(c))
	}
	f.Add([]byte(`{"aps":{"alert":"hi","x":{"y":[1,{"z":2}]}},"a":[],"\u00e9":"\ud800"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var outer, all []string
		valid, unicode := ValidObject(b, func(name, value []byte) { outer = append(outer, string(name)+"="+string(value)) })
		wantValid, wantUnicode := ValidMembers(b, func(parent, name, value []byte) {
			if parent == nil {
				all = append(all, string(name)+"="+string(value))
			}
		})
		if valid != wantValid || unicode != wantUnicode {
			t.Fatalf("%q: ValidObject %v %v, ValidMembers %v %v", b, valid, unicode, wantValid, wantUnicode)
		}
		if !reflect.DeepEqual(outer, all) {
			t.Fatalf("%q: ValidObject reports %q, ValidMembers %q", b, outer, all)
		}
	})
}

// TestPlain8 checks the word-at-a-time test of str against the byte table:
// exact for one odd byte among plain ones, and never yes for a word that
// holds a byte that is not plain.
func TestPlain8(t *testing.T) {
	word := func(b [8]byte) uint64 { return binary.LittleEndian.Uint64(b[:]) }
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 8; pos++ {
			b := [8]byte{'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a'}
			b[pos] = byte(c)
			if got := plain8(word(b)); got != plain[c] {
				t.Fatalf("plain8(%q) = %v, want %v", b, got, plain[c])
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1_000_000 {
		var b [8]byte
		for i := range b {
			b[i] = byte(0x20 + r.IntN(0x60)) // mostly plain
			if r.IntN(8) == 0 {
				b[i] = byte(r.IntN(256))
			}
		}
		all := true
		for _, c := range b {
			all = all && plain[c]
		}
		if plain8(word(b)) && !all {
			t.Fatalf("plain8(%q) = true, but it holds a byte that is not plain", b)
		}
	}
}
