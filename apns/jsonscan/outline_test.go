package jsonscan

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// outlined is an Outline in strings, for comparisons: name=value each.
type outlined struct {
	outer, inner []string
	innerMember  string // "" if none
}

func outlineOf(data []byte, o *Outline) outlined {
	list := func(l *MemberList) []string {
		var s []string
		for i := range l.Len() {
			s = append(s, string(l.At(i).Name(data))+"="+string(l.At(i).Value(data)))
		}
		return s
	}
	got := outlined{outer: list(&o.Outer), inner: list(&o.Inner)}
	if m, ok := o.InnerMember(); ok {
		got.innerMember = string(m.Name(data)) + "=" + string(m.Value(data))
	}
	return got
}

// TestValidOutline: the outer object's members, and those of its first
// member named as asked if its value is an object; nothing deeper, and
// nothing but a valid object is valid.
func TestValidOutline(t *testing.T) {
	many := `{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"b":{"x":9}}`
	var manyOuter []string
	for i := range 9 {
		manyOuter = append(manyOuter, `"k`+strconv.Itoa(i)+`"=`+strconv.Itoa(i))
	}
	for _, tt := range []struct {
		in   string
		ok   bool
		want outlined
	}{
		{`{}`, true, outlined{}},
		{` {"a":1, "b":{"c":[{"d":2}],"e":{"f":3}}} `, true, outlined{
			outer:       []string{`"a"=1`, `"b"={"c":[{"d":2}],"e":{"f":3}}`},
			inner:       []string{`"c"=[{"d":2}]`, `"e"={"f":3}`},
			innerMember: `"b"={"c":[{"d":2}],"e":{"f":3}}`}},
		{`{"a":{"b":{"c":1}}}`, true, outlined{outer: []string{`"a"={"b":{"c":1}}`}}},
		{`{"\u0062":{"x":1}}`, true, outlined{
			outer: []string{`"\u0062"={"x":1}`}, inner: []string{`"x"=1`}, innerMember: `"\u0062"={"x":1}`}},
		{`{"b":1,"b":{"x":1}}`, true, outlined{outer: []string{`"b"=1`, `"b"={"x":1}`}, innerMember: `"b"=1`}},
		{`{"b":{}}`, true, outlined{outer: []string{`"b"={}`}, innerMember: `"b"={}`}},
		{many, true, outlined{outer: append(manyOuter, `"b"={"x":9}`), inner: []string{`"x"=9`}, innerMember: `"b"={"x":9}`}},
		{`[{"a":1}]`, false, outlined{}},
		{`"x"`, false, outlined{}},
		{`{"a":1`, false, outlined{}},
		{`{"a":1}x`, false, outlined{}},
		{`{"a":{"b":tru}}`, false, outlined{}},
	} {
		var o Outline
		ok, _ := ValidOutline([]byte(tt.in), "b", &o)
		if ok != tt.ok {
			t.Errorf("%s: valid %v, want %v", tt.in, ok, tt.ok)
			continue
		}
		if got := outlineOf([]byte(tt.in), &o); ok && !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s:\n got %q\nwant %q", tt.in, got, tt.want)
		}
	}
}

// TestValidOutlineDepth: ValidOutline refuses nesting where Valid does,
// in the outer object's members and in the inner object's.
func TestValidOutlineDepth(t *testing.T) {
	for k := MaxDepth - 4; k <= MaxDepth; k++ {
		nest := strings.Repeat("[", k) + strings.Repeat("]", k)
		for _, in := range []string{`{"a":` + nest + `}`, `{"b":{"x":` + nest + `}}`, `{"a":{"x":` + nest + `}}`} {
			var o Outline
			got, _ := ValidOutline([]byte(in), "b", &o)
			if want := Valid([]byte(in)); got != want {
				t.Errorf("%d deep in %.12s…: ValidOutline %v, Valid %v", k, in, got, want)
			}
		}
	}
}

// TestRepeated: the first name an earlier member has, compared unescaped,
// with the names compared pair by pair and past maxPairwise in a map.
func TestRepeated(t *testing.T) {
	names := func(n int) []string {
		var s []string
		for i := range n {
			s = append(s, `"k`+strconv.Itoa(i)+`":`+strconv.Itoa(i))
		}
		return s
	}
	obj := func(members ...string) string { return "{" + strings.Join(members, ",") + "}" }
	for _, tt := range []struct {
		in, want string
	}{
		{`{}`, ""},
		{`{"a":1,"b":2}`, ""},
		{`{"a":1,"b":2,"a":3,"b":4}`, `"a"`},
		{`{"a":1,"\u0061":2}`, `"\u0061"`},
		{`{"\u0061":1,"a":2}`, `"a"`},
		{`{"a":{"x":1},"b":{"x":2}}`, ""}, // deeper names are not the outer object's
		{obj(names(maxPairwise)...), ""},
		{obj(append(names(maxPairwise), `"k3":0`)...), `"k3"`},
		{obj(append(names(40), `"k\u0033\u0039":0`)...), `"k\u0033\u0039"`},
		{obj(names(40)...), ""},
	} {
		var o Outline
		if ok, _ := ValidOutline([]byte(tt.in), "", &o); !ok {
			t.Fatalf("%s: not valid", tt.in)
		}
		if got := string(o.Outer.Repeated([]byte(tt.in))); got != tt.want {
			t.Errorf("%s: Repeated %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzValidOutline: ValidOutline accepts exactly the valid objects, reports
// ValidUnicode, records what ValidObject reports and the inner object's
// members as Members walks them, and Repeated agrees with a map of the
// unescaped names.
func FuzzValidOutline(f *testing.F) {
	for _, c := range append(validCases, invalidCases...) {
		f.Add([]byte(c))
	}
	f.Add([]byte(`{"aps":{"alert":"hi","x":{"y":[1,{"z":2}]}},"a":[],"\u00e9":"\ud800"}`))
	f.Add([]byte(`{"\u0061ps":{"a":1,"\u0061":2},"aps":3}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var o Outline
		valid, unicode := ValidOutline(b, "aps", &o)
		wantValid := Valid(b) && strings.HasPrefix(strings.TrimLeft(string(b), " \t\r\n"), "{")
		var outer []string
		var values [][2]string // name, value
		objValid, objUnicode := ValidObject(b, func(name, value []byte) {
			outer = append(outer, string(name)+"="+string(value))
			values = append(values, [2]string{string(name), string(value)})
		})
		if valid != wantValid || valid != objValid || unicode != objUnicode {
			t.Fatalf("%q: ValidOutline %v %v, want %v; ValidObject %v %v", b, valid, unicode, wantValid, objValid, objUnicode)
		}
		if !valid {
			return
		}
		if unicode != ValidUnicode(b) {
			t.Fatalf("%q: ValidOutline says unicode %v, ValidUnicode %v", b, unicode, !unicode)
		}
		got := outlineOf(b, &o)
		if !reflect.DeepEqual(got.outer, outer) {
			t.Fatalf("%q: outer %q, ValidObject %q", b, got.outer, outer)
		}
		var wantInner []string
		wantMember := ""
		for i, nv := range values {
			name, value := nv[0], nv[1]
			if string(Unquote([]byte(name))) != "aps" {
				continue
			}
			wantMember = outer[i]
			if value[0] == '{' {
				Members([]byte(value), 0, func(name, value []byte) bool {
					wantInner = append(wantInner, string(name)+"="+string(value))
					return true
				})
			}
			break
		}
		if got.innerMember != wantMember || !reflect.DeepEqual(got.inner, wantInner) {
			t.Fatalf("%q: inner %q %q, want %q %q", b, got.innerMember, got.inner, wantMember, wantInner)
		}
		for _, l := range []*MemberList{&o.Outer, &o.Inner} {
			want := ""
			seen := map[string]bool{}
			for i := range l.Len() {
				name := l.At(i).Name(b)
				if k := string(Unquote(name)); seen[k] {
					want = string(name)
					break
				} else {
					seen[k] = true
				}
			}
			if got := string(l.Repeated(b)); got != want {
				t.Fatalf("%q: Repeated %q, want %q", b, got, want)
			}
		}
	})
}

// TestValidOutlineReused: an Outline used again records the new input's
// outline only, as a zero one would, whatever it held (more than 8
// members, an inner member, escaped names).
func TestValidOutlineReused(t *testing.T) {
	first := `{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"\u0062":{"x":9,"y":1}}`
	for _, in := range []string{`{"a":1,"b":{"z":2}}`, `{"b":1}`, `{}`, first} {
		var reused, fresh Outline
		if ok, _ := ValidOutline([]byte(first), "b", &reused); !ok {
			t.Fatalf("%s: not valid", first)
		}
		if ok, _ := ValidOutline([]byte(in), "b", &reused); !ok {
			t.Fatalf("%s: not valid", in)
		}
		ValidOutline([]byte(in), "b", &fresh)
		got, want := outlineOf([]byte(in), &reused), outlineOf([]byte(in), &fresh)
		if !reflect.DeepEqual(got, want) || reused.Outer.Escaped() != fresh.Outer.Escaped() {
			t.Errorf("%s after %s:\n got %q\nwant %q", in, first, got, want)
		}
	}
}
