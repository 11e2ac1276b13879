// Package jsonscan scans JSON fast and without allocating, for the hot
// paths of payload checks (package apns) and job decoding (package
// consumer): Valid validates, and the Skip functions step over parts of
// input that is known to be valid.
package jsonscan

import "encoding/binary"

// Valid reports whether data is one valid JSON value (RFC 8259, with
// surrounding white space), as encoding/json.Valid does, several times
// faster: strings, the bulk of a job, are skipped a run at a time rather
// than byte by byte through a state machine. It is sound: it never accepts
// what json.Valid rejects (FuzzValid checks it). It refuses nesting deeper
// than MaxDepth, which json.Valid accepts: callers ask json.Valid when
// Valid says no.
func Valid(data []byte) bool {
	v := validator{b: data}
	return v.whole()
}

// ValidI is Valid and ValidUnicode in one call: valid reports Valid,
// unicode ValidUnicode (false when valid is). Text that is all ASCII
// without \u escapes, most of it, needs no second pass.
func ValidI(data []byte) (valid, unicode bool) {
	v := validator{b: data}
	if !v.whole() {
		return false, false
	}
	return true, v.unicode()
}

// whole validates v.b as one value with surrounding white space.
func (v *validator) whole() bool {
	v.ws()
	if !v.value(0) {
		return false
	}
	v.ws()
	return v.i == len(v.b)
}

// unicode is ValidUnicode(v.b) for input it validated.
func (v *validator) unicode() bool {
	return !v.high && !v.uEscape || ValidUnicode(v.b)
}

// ValidMembers is Valid for an object that also reports, in the same pass,
// its members and those of the objects that are its members' values: for
// each, once its value is validated, fn gets the name of the outer member
// it belongs to (nil for the outer object's own), its name and its value
// (names quoted, as in data; values raw). Deeper members are not reported.
// The members of an outer member's object come before that member. Like
// ValidI, it reports validity (false for anything Valid refuses, and for a
// value that is not an object; fn may have been called by then) and
// ValidUnicode.
func ValidMembers(data []byte, fn func(parent, name, value []byte)) (valid, unicode bool) {
	v := validator{b: data}
	return v.object1(fn)
}

// ValidObject is ValidMembers for the outer object's own members only: fn
// gets each one's name (quoted) and value once its value is validated.
func ValidObject(data []byte, fn func(name, value []byte)) (valid, unicode bool) {
	v := validator{b: data, outerOnly: true}
	return v.object1(func(_, name, value []byte) { fn(name, value) })
}

// object1 validates v.b as one object, reporting members to fn.
func (v *validator) object1(fn func(parent, name, value []byte)) (valid, unicode bool) {
	v.ws()
	if v.i >= len(v.b) || v.b[v.i] != '{' || !v.members(1, nil, fn) {
		return false, false
	}
	v.ws()
	if v.i != len(v.b) {
		return false, false
	}
	return true, v.unicode()
}

// members validates the object at v.i, at depth; with fn, it reports the
// members to fn as ValidMembers (or, outerOnly, ValidObject) says.
func (v *validator) members(depth int, parent []byte, fn func(parent, name, value []byte)) bool {
	v.i++ // '{'
	v.ws()
	if v.i < len(v.b) && v.b[v.i] == '}' {
		v.i++
		return true
	}
	for {
		ns := v.i
		if v.i >= len(v.b) || v.b[v.i] != '"' || !v.str() {
			return false
		}
		name := v.b[ns:v.i]
		v.ws()
		if v.i >= len(v.b) || v.b[v.i] != ':' {
			return false
		}
		v.i++
		v.ws()
		vs := v.i
		var ok bool
		if fn != nil && depth == 1 && !v.outerOnly && v.i < len(v.b) && v.b[v.i] == '{' {
			ok = v.members(2, name, fn)
		} else {
			ok = v.value(depth)
		}
		if !ok {
			return false
		}
		if fn != nil {
			fn(parent, name, v.b[vs:v.i])
		}
		v.ws()
		if v.i >= len(v.b) {
			return false
		}
		switch v.b[v.i] {
		case ',':
			v.i++
			v.ws()
		case '}':
			v.i++
			return true
		default:
			return false
		}
	}
}

// MaxDepth bounds the nesting Valid accepts (encoding/json allows 10 000).
const MaxDepth = 1000

type validator struct {
	b         []byte
	i         int
	high      bool // a string holds a byte past ASCII
	uEscape   bool // a string holds a \u escape
	outerOnly bool // members reports the outer object's members only
}

// ws skips whitespace. Its common case, none, is inlined.
func (v *validator) ws() {
	if v.i < len(v.b) && v.b[v.i] > ' ' {
		return
	}
	v.skipSpace()
}

func (v *validator) skipSpace() {
	for v.i < len(v.b) {
		switch v.b[v.i] {
		case ' ', '\t', '\n', '\r':
			v.i++
		default:
			return
		}
	}
}

func (v *validator) value(depth int) bool {
	if v.i >= len(v.b) || depth > MaxDepth {
		return false
	}
	switch c := v.b[v.i]; {
	case c == '"':
		return v.str()
	case c == '{':
		return v.object(depth + 1)
	case c == '[':
		return v.array(depth + 1)
	case c == '-' || c >= '0' && c <= '9':
		return v.number()
	case c == 't':
		return v.lit("true")
	case c == 'f':
		return v.lit("false")
	case c == 'n':
		return v.lit("null")
	}
	return false
}

func (v *validator) lit(s string) bool {
	if len(v.b)-v.i < len(s) || string(v.b[v.i:v.i+len(s)]) != s {
		return false
	}
	v.i += len(s)
	return true
}

func (v *validator) object(depth int) bool { return v.members(depth, nil, nil) }

func (v *validator) array(depth int) bool {
	v.i++ // '['
	v.ws()
	if v.i < len(v.b) && v.b[v.i] == ']' {
		v.i++
		return true
	}
	for {
		if !v.value(depth) {
			return false
		}
		v.ws()
		if v.i >= len(v.b) {
			return false
		}
		switch v.b[v.i] {
		case ',':
			v.i++
			v.ws()
		case ']':
			v.i++
			return true
		default:
			return false
		}
	}
}

// plain marks the bytes a string holds as they are: ASCII from the space
// on, but for the quote and the backslash.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plain8 reports whether the 8 bytes of w are all plain (see plain). It
// may say no for plain bytes that follow a byte that is not (a borrow),
// never yes for one that is not.
func plain8(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote, backslash := w^(ones*'"'), w^(ones*'\\')
	control := (w - ones*0x20) &^ w       // high bit set below 0x20
	q := (quote - ones) &^ quote          // high bit set at a quote
	bs := (backslash - ones) &^ backslash // high bit set at a backslash
	return (w|control|q|bs)&highs == 0    // w's own high bits: past ASCII
}

// str skips a string starting at its opening quote.
func (v *validator) str() bool {
	b := v.b
	i := v.i + 1
	for {
		for i+8 <= len(b) && plain8(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		for i < len(b) && plain[b[i]] {
			i++
		}
		if i >= len(b) {
			return false
		}
		switch c := b[i]; {
		case c == '"':
			v.i = i + 1
			return true
		case c == '\\':
			if i+1 >= len(b) {
				return false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return false
				}
				v.uEscape = true
				i += 6
			default:
				return false
			}
		case c < 0x20:
			return false
		default:
			v.high = true
			i++
		}
	}
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func (v *validator) number() bool {
	b := v.b
	i := v.i
	if b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return false
	case b[i] == '0':
		i++
	case b[i] >= '1' && b[i] <= '9':
		for i++; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return false
		}
		for i++; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return false
		}
		for i++; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		}
	}
	v.i = i
	return true
}

// SkipSpace returns the index of the first byte at or after i that is not
// JSON white space.
func SkipSpace(p []byte, i int) int {
	for i < len(p) && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r') {
		i++
	}
	return i
}

// SkipString returns the index just past the string starting at
// p[i] == '"' (p is valid JSON).
func SkipString(p []byte, i int) int {
	for i++; i < len(p); i++ {
		switch p[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// SkipValue returns the index just past the value starting at p[i] (p is
// valid JSON); a number or literal ends at the first delimiter or white
// space after it.
func SkipValue(p []byte, i int) int {
	switch p[i] {
	case '"':
		return SkipString(p, i)
	case '{', '[':
		depth := 0
		for ; i < len(p); i++ {
			switch p[i] {
			case '"':
				i = SkipString(p, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return i
	}
	for ; i < len(p); i++ { // number, true, false, null
		switch p[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
	}
	return i
}
