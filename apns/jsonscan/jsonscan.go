// Package jsonscan scans JSON fast and without allocating, for the hot
// paths of payload checks (package apns) and job decoding (package
// consumer): Valid validates, and the Skip functions step over parts of
// input that is known to be valid.
package jsonscan

import (
	"encoding/binary"
	"math"
	"math/bits"
)

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

// ValidObject is Valid for an object that also reports, in the same pass,
// its own members: fn gets each one's name (quoted, as in data) and value
// once its value is validated. It reports validity (false for anything
// Valid refuses, and for a value that is not an object; fn may have been
// called by then) and, as ValidI, ValidUnicode.
func ValidObject(data []byte, fn func(name, value []byte)) (valid, unicode bool) {
	v := validator{b: data}
	v.ws()
	return v.whole1(v.i < len(v.b) && v.b[v.i] == '{' && v.members(1, fn))
}

// ValidOutline is Valid for an object that also records, in the same pass
// and without allocating for up to 8 members an object, its outline in o:
// the object's members, and those of its first member named inner (as
// unescaped) if that member's value is an object. It reports validity and
// ValidUnicode as ValidObject; o is complete only for valid input. What o
// held before is dropped (an Outline may be used again; its slice of
// members past 8 is kept for reuse). Input longer than 2 GiB is refused.
func ValidOutline(data []byte, inner string, o *Outline) (valid, unicode bool) {
	o.reset()
	if len(data) > math.MaxInt32 {
		return false, false
	}
	v := validator{b: data, inner: inner}
	v.ws()
	return v.whole1(v.i < len(v.b) && v.b[v.i] == '{' && v.outline(1, &o.Outer, o))
}

// whole1 ends a validation that validated an object at v.i (ok): only
// white space may follow it.
func (v *validator) whole1(ok bool) (valid, unicode bool) {
	if !ok {
		return false, false
	}
	v.ws()
	if v.i != len(v.b) {
		return false, false
	}
	return true, v.unicode()
}

// members validates the object at v.i, at depth, reporting its members to
// fn if given (ValidObject's outer object). It is every validation's loop
// over members, so it is written out: memberName and memberEnd, which are
// too large to be inlined, would cost two calls a member.
func (v *validator) members(depth int, fn func(name, value []byte)) bool {
	if v.open() {
		return true
	}
	for {
		ns := v.i
		if v.i >= len(v.b) || v.b[v.i] != '"' || !v.str() {
			return false
		}
		ne := v.i
		v.ws()
		if v.i >= len(v.b) || v.b[v.i] != ':' {
			return false
		}
		v.i++
		v.ws()
		vs := v.i
		if !v.value(depth) {
			return false
		}
		if fn != nil {
			fn(v.b[ns:ne], v.b[vs:v.i])
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

// outline is members for the outer object (depth 1, o not nil) or its
// inner one (depth 2, o nil), recording their members in rec.
func (v *validator) outline(depth int, rec *MemberList, o *Outline) bool {
	if v.open() {
		return true
	}
	for {
		ns, ne, esc, ok := v.memberName()
		if !ok {
			return false
		}
		vs := v.i
		if o != nil && !o.found && NameIs(v.b[ns:ne], esc, v.inner) {
			o.found, o.at = true, rec.n
			if v.i < len(v.b) && v.b[v.i] == '{' {
				ok = v.outline(depth+1, &o.Inner, nil)
			} else {
				ok = v.value(depth)
			}
		} else {
			ok = v.value(depth)
		}
		if !ok {
			return false
		}
		rec.add(Member{int32(ns), int32(ne), int32(vs), int32(v.i)}, esc)
		if more, ok := v.memberEnd(); !more {
			return ok
		}
	}
}

// open steps into the object at v.i: past its '{' and what white space
// follows; for an empty object, past its '}' too, and it says so.
func (v *validator) open() (empty bool) {
	v.i++ // '{'
	v.ws()
	if v.i < len(v.b) && v.b[v.i] == '}' {
		v.i++
		return true
	}
	return false
}

// memberName validates a member's name and the colon after it (with white
// space around); [ns:ne] is the name, quoted, and esc says whether it holds
// an escape.
func (v *validator) memberName() (ns, ne int, esc, ok bool) {
	ns = v.i
	v.esc = false
	if v.i >= len(v.b) || v.b[v.i] != '"' || !v.str() {
		return 0, 0, false, false
	}
	ne, esc = v.i, v.esc
	v.ws()
	if v.i >= len(v.b) || v.b[v.i] != ':' {
		return 0, 0, false, false
	}
	v.i++
	v.ws()
	return ns, ne, esc, true
}

// memberEnd validates what follows a member's value: a comma (more: a
// member follows) or the object's '}'.
func (v *validator) memberEnd() (more, ok bool) {
	v.ws()
	if v.i >= len(v.b) {
		return false, false
	}
	switch v.b[v.i] {
	case ',':
		v.i++
		v.ws()
		return true, true
	case '}':
		v.i++
		return false, true
	}
	return false, false
}

// NameIs reports whether the member name (quoted, as in the input) is s
// once unescaped; escaped says whether the name may hold an escape (if
// not, it is compared as it is). An escaped name is unquoted only if it is
// short enough to be s, so asking costs at most len(s) escapes.
func NameIs(name []byte, escaped bool, s string) bool {
	if len(name) == len(s)+2 && string(name[1:len(name)-1]) == s {
		return true
	}
	return escaped && len(name) <= 6*len(s)+2 && Backslash(name) >= 0 && string(Unquote(name)) == s
}

// MaxDepth bounds the nesting Valid accepts (encoding/json allows 10 000).
const MaxDepth = 1000

type validator struct {
	b       []byte
	i       int
	high    bool   // a string holds a byte past ASCII
	uEscape bool   // a string holds a \u escape
	esc     bool   // the last string holds an escape
	inner   string // ValidOutline's inner member name
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

func (v *validator) object(depth int) bool { return v.members(depth, nil) }

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

// notPlain8 marks, in the high bit of each byte, the bytes of w that are
// not plain (see plain). The lowest mark is exact: it is the first byte that
// is not plain (little-endian: the first in the input). Marks above it may
// be wrong (a borrow carries into the next byte); callers read only the
// lowest.
func notPlain8(w uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote, backslash := w^(ones*'"'), w^(ones*'\\')
	control := (w - ones*0x20) &^ w       // high bit set below 0x20
	q := (quote - ones) &^ quote          // high bit set at a quote
	bs := (backslash - ones) &^ backslash // high bit set at a backslash
	return (w | control | q | bs) & highs // w's own high bits: past ASCII
}

// str skips a string starting at its opening quote. Plain bytes are
// skipped eight at a time, up to the first that is not.
func (v *validator) str() bool {
	b := v.b
	i := v.i + 1
	for {
		if i+8 <= len(b) {
			m := notPlain8(binary.LittleEndian.Uint64(b[i:]))
			if m == 0 {
				i += 8
				continue
			}
			i += bits.TrailingZeros64(m) / 8
		} else {
			for i < len(b) && plain[b[i]] {
				i++
			}
			if i >= len(b) {
				return false
			}
		}
		switch c := b[i]; {
		case c == '"':
			v.i = i + 1
			return true
		case c == '\\':
			v.esc = true
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
