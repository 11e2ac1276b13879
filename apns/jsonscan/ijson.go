package jsonscan

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
)

// The I-JSON (RFC 7493) checks: valid UTF-8 with no escaped lone
// surrogates, and member names that do not repeat. They work on input Valid
// accepted.

// ValidUnicode reports whether valid JSON p is UTF-8 and every escaped
// surrogate (\ud800 to \udfff) is half of a pair (RFC 7493 §2.1).
func ValidUnicode(p []byte) bool {
	if !utf8.Valid(p) {
		return false
	}
	for i := 0; ; {
		k := bytes.IndexByte(p[i:], '\\')
		if k < 0 {
			return true
		}
		i += k
		if p[i+1] != 'u' {
			i += 2 // \" \\ \/ \b \f \n \r \t
			continue
		}
		r := hex4(p[i+2 : i+6])
		i += 6
		switch {
		case r < 0xd800 || r > 0xdfff:
		case r >= 0xdc00: // a low half alone
			return false
		case i+6 > len(p) || p[i] != '\\' || p[i+1] != 'u':
			return false // a high half alone
		default:
			if lo := hex4(p[i+2 : i+6]); lo < 0xdc00 || lo > 0xdfff {
				return false
			}
			i += 6
		}
	}
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		default:
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}

// Backslash is bytes.IndexByte(s, '\\') for the short strings of member
// names, which it is asked about: small enough to be inlined.
func Backslash(s []byte) int {
	for i, c := range s {
		if c == '\\' {
			return i
		}
	}
	return -1
}

// Unquote returns the content of the JSON string s (with its quotes) from
// input Valid and ValidUnicode accepted. Without escapes it returns a
// subslice of s; with them, a new slice.
func Unquote(s []byte) []byte {
	s = s[1 : len(s)-1]
	k := bytes.IndexByte(s, '\\')
	if k < 0 {
		return s
	}
	out := make([]byte, k, len(s))
	copy(out, s)
	for i := k; i < len(s); {
		c := s[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		switch s[i+1] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := hex4(s[i+2 : i+6])
			i += 6
			if utf16.IsSurrogate(r) && i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
				r = utf16.DecodeRune(r, hex4(s[i+2:i+6]))
				i += 6
			}
			out = utf8.AppendRune(out, r)
			continue
		default: // " \ /
			out = append(out, s[i+1])
		}
		i += 2
	}
	return out
}

// Members calls fn with the name (quoted, as in p) and the value of each
// member of the object at p[i] == '{' (p valid), in order, until fn
// returns false.
func Members(p []byte, i int, fn func(name, value []byte) bool) {
	i++ // '{'
	for {
		i = SkipSpace(p, i)
		if i >= len(p) || p[i] == '}' {
			return
		}
		if p[i] == ',' {
			i = SkipSpace(p, i+1)
		}
		kEnd := SkipString(p, i)
		name := p[i:kEnd]
		i = SkipSpace(p, SkipSpace(p, kEnd)+1) // past ':'
		vEnd := SkipValue(p, i)
		if !fn(name, p[i:vEnd]) {
			return
		}
		i = vEnd
	}
}

// Names finds a repeated member name of one object (RFC 7493 §2.3): names
// are compared after unescaping, so "a" and "\u0061" are the same. The
// zero Names is empty. Up to 8 names without escapes, the common case, are
// kept as they are in the input and compared as bytes; past 8 names, or
// once one is escaped, every name is kept unescaped in a map (which
// allocates).
type Names struct {
	small [8][]byte // quoted names, as in the input
	n     int
	more  map[string]struct{}
}

// Seen records name (quoted, as in the input) and reports whether it was
// recorded before.
func (s *Names) Seen(name []byte) bool {
	if s.more != nil || s.n == len(s.small) || Backslash(name) >= 0 {
		return s.seenMap(name)
	}
	for _, k := range s.small[:s.n] {
		if string(k) == string(name) {
			return true
		}
	}
	s.small[s.n] = name
	s.n++
	return false
}

// seenMap is Seen once the names are kept in the map.
func (s *Names) seenMap(name []byte) bool {
	if s.more == nil {
		s.more = make(map[string]struct{}, 2*len(s.small))
		for _, k := range s.small[:s.n] {
			s.more[string(Unquote(k))] = struct{}{}
		}
	}
	k := Unquote(name)
	if _, ok := s.more[string(k)]; ok {
		return true
	}
	s.more[string(k)] = struct{}{}
	return false
}
