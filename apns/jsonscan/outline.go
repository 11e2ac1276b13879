package jsonscan

// Outline is what ValidOutline records of an object, as offsets into its
// input: the object's own members (Outer) and, if its first member named
// as asked has an object as value, that object's members (Inner). Deeper
// members are not recorded. The zero Outline is empty.
type Outline struct {
	Outer, Inner MemberList
	found        bool // a member named as asked is in Outer, at at
	at           int
}

// reset empties o for ValidOutline to record another input's outline.
func (o *Outline) reset() {
	o.Outer.reset()
	o.Inner.reset()
	o.found, o.at = false, 0
}

// InnerMember returns the outer member whose object's members are Inner:
// the first one named as asked, whatever its value; ok is false if there
// is none.
func (o *Outline) InnerMember() (m Member, ok bool) {
	if !o.found {
		return Member{}, false
	}
	return o.Outer.At(o.at), true
}

// MemberList lists the members of one object, in input order. The first 8
// are held inline; more go to a slice, which allocates.
type MemberList struct {
	small   [8]Member
	more    []Member
	n       int
	escaped bool // some name holds a backslash escape
}

// A Member is one member of an object, as offsets into the input.
type Member struct {
	nameStart, nameEnd, valueStart, valueEnd int32
}

// Name is the member's name, quoted as in data.
func (m Member) Name(data []byte) []byte { return data[m.nameStart:m.nameEnd] }

// Value is the member's value, as in data.
func (m Member) Value(data []byte) []byte { return data[m.valueStart:m.valueEnd] }

func (l *MemberList) add(m Member, escaped bool) {
	if l.n < len(l.small) {
		l.small[l.n] = m
	} else {
		l.more = append(l.more, m)
	}
	l.n++
	l.escaped = l.escaped || escaped
}

// reset empties l, keeping the capacity of its slice.
func (l *MemberList) reset() { l.more, l.n, l.escaped = l.more[:0], 0, false }

// Len is the number of members.
func (l *MemberList) Len() int { return l.n }

// At is the i-th member, 0 ≤ i < Len.
func (l *MemberList) At(i int) Member {
	if i < len(l.small) {
		return l.small[i]
	}
	return l.more[i-len(l.small)]
}

// Escaped reports whether some member's name holds an escape: if not,
// names can be compared as they are in the input.
func (l *MemberList) Escaped() bool { return l.escaped }

// maxPairwise bounds the names Repeated compares pair by pair (at most
// 120 comparisons of short names); past it, or once a name is escaped,
// it keeps them unescaped in a map, which allocates.
const maxPairwise = 16

// Repeated returns the first name (quoted, as in data) that an earlier
// member of the list already has, compared after unescaping (RFC 7493
// §2.3: "a" and "\u0061" are the same), or nil if every name is unique.
func (l *MemberList) Repeated(data []byte) []byte {
	if l.n <= maxPairwise && !l.escaped {
		for i := 1; i < l.n; i++ {
			name := l.At(i).Name(data)
			for j := range i {
				if string(l.At(j).Name(data)) == string(name) {
					return name
				}
			}
		}
		return nil
	}
	seen := make(map[string]struct{}, l.n)
	for i := range l.n {
		name := l.At(i).Name(data)
		k := Unquote(name)
		if _, ok := seen[string(k)]; ok {
			return name
		}
		seen[string(k)] = struct{}{}
	}
	return nil
}
