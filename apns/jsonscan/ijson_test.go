package jsonscan

import (
	"encoding/json"
	"strconv"
	"testing"
	"unicode/utf8"
)

func TestValidUnicode(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want bool
	}{
		{`"plain"`, true},
		{`"é \u00e9 \ud83d\ude00"`, true},
		{`"\\ud800"`, true}, // an escaped backslash, then text
		{`"\ud800"`, false},
		{`"\ud800\u0041"`, false},
		{`"\udc00"`, false},
		{`"\ud800x\udc00"`, false},
		{"\"\xff\"", false},
		{"\"\xed\xa0\x80\"", false}, // a surrogate written as UTF-8
	} {
		if got := ValidUnicode([]byte(tt.in)); got != tt.want {
			t.Errorf("ValidUnicode(%s) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestNames(t *testing.T) {
	var s Names
	for i := range 40 {
		if s.Seen([]byte(`"k` + strconv.Itoa(i) + `"`)) {
			t.Fatalf("name %d seen before", i)
		}
	}
	if !s.Seen([]byte(`"k\u0031"`)) {
		t.Fatal(`"k\u0031" is "k1", seen before`)
	}
	var small Names
	if small.Seen([]byte(`"a"`)) || !small.Seen([]byte(`"\u0061"`)) {
		t.Fatal("escaped repeat not found")
	}
}

// FuzzUnquote: Unquote agrees with encoding/json on the strings Valid and
// ValidUnicode accept.
func FuzzUnquote(f *testing.F) {
	for _, s := range []string{`"a"`, `"\u00e9\n\t\"\\\/"`, `"\ud83d\ude00"`, `"\ud800"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !Valid(b) || len(b) == 0 || b[0] != '"' || SkipString(b, 0) != len(b) || !ValidUnicode(b) {
			return
		}
		var want string
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("encoding/json refused %q: %v", b, err)
		}
		got := Unquote(b)
		if string(got) != want || !utf8.Valid(got) {
			t.Fatalf("Unquote(%q) = %q, want %q", b, got, want)
		}
	})
}

// TestMembers: each member of the object at i, in order, names quoted and
// values raw, nested objects whole; fn stops the walk.
func TestMembers(t *testing.T) {
	var got []string
	Members([]byte(` { "a" : [1,{"a":2}], "b":"x" , "\u0061" : 3 } `), 1, func(name, value []byte) bool {
		got = append(got, string(name)+"="+string(value))
		return len(got) < 2
	})
	if len(got) != 2 || got[0] != `"a"=[1,{"a":2}]` || got[1] != `"b"="x"` {
		t.Fatalf("members %q", got)
	}
}
