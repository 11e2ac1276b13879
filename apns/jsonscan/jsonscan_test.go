package jsonscan

import (
	"encoding/binary"
	"encoding/json"
	"math/bits"
	"math/rand/v2"
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

// TestNotPlain8 checks the word-at-a-time test of str against the byte
// table: its lowest mark is exactly the first byte that is not plain, for
// one odd byte among plain ones and for random words.
func TestNotPlain8(t *testing.T) {
	word := func(b [8]byte) uint64 { return binary.LittleEndian.Uint64(b[:]) }
	first := func(b [8]byte) int { // by the table
		for i, c := range b {
			if !plain[c] {
				return i
			}
		}
		return 8
	}
	check := func(b [8]byte) {
		t.Helper()
		got := 8
		if m := notPlain8(word(b)); m != 0 {
			got = bits.TrailingZeros64(m) / 8
		}
		if want := first(b); got != want {
			t.Fatalf("notPlain8(%q): first byte not plain at %d, want %d", b, got, want)
		}
	}
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 8; pos++ {
			b := [8]byte{'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a'}
			b[pos] = byte(c)
			check(b)
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
		check(b)
	}
}
