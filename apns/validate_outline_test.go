package apns

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns/jsonscan"
)

// outlineCases are payloads whose verdict depends on where and how the
// push-type rules find their members (read from jsonscan.ValidOutline's
// outline): escaped names, members past the 8 the outline holds inline and
// past the 16 Repeated compares pair by pair, aps not first, nesting at
// jsonscan.MaxDepth. Each verdict is the one Validate gave before the
// outline (b6b28af), checked by a differential run against it.
func outlineCases() []struct {
	name    string
	push    PushType
	payload string
	want    error
} {
	aps := func(members ...string) string { return `{"aps":{` + strings.Join(members, ",") + `}}` }
	filler := func(n int, escaped bool) string {
		var s []string
		for i := range n {
			if escaped {
				s = append(s, `"\u006b`+strconv.Itoa(i)+`":1`)
			} else {
				s = append(s, `"k`+strconv.Itoa(i)+`":1`)
			}
		}
		return strings.Join(s, ",")
	}
	nest := func(k int) string { return strings.Repeat("[", k) + strings.Repeat("]", k) }
	start := []string{`"event":"start"`, `"timestamp":1796083200`, `"attributes-type":"T"`, `"attributes":{}`, `"alert":"a"`}
	return []struct {
		name    string
		push    PushType
		payload string
		want    error
	}{
		{"aps escaped inside", PushTypeAlert, `{"a\u0070s":{}}`, nil},
		{"aps escaped with a slash", PushTypeAlert, `{"ap\/s":{}}`, ErrNoAPS},
		{"aps and a NUL", PushTypeAlert, `{"aps\u0000":{}}`, ErrNoAPS},
		{"aps not an object, then one that is", PushTypeAlert, `{"aps":1,"aps":{}}`, ErrDuplicateKey},
		{"aps escaped not an object, then one that is", PushTypeAlert, `{"\u0061ps":[],"aps":{}}`, ErrDuplicateKey},
		{"aps after 17 members", PushTypeAlert, `{` + filler(17, false) + `,"aps":{}}`, nil},
		{"a top member repeated past 16", PushTypeAlert, `{` + filler(17, false) + `,"aps":{},"k0":2}`, ErrDuplicateKey},
		{"an aps member repeated past 8, escaped", PushTypeAlert, aps(filler(9, true), `"k3":2`), ErrDuplicateKey},
		{"an aps member repeated past 16", PushTypeAlert, aps(filler(17, false), `"k16":2`), ErrDuplicateKey},
		{"the same pair, once escaped", PushTypeAlert, aps(`"\ud83d\ude00":1`, `"😀":2`), ErrDuplicateKey},
		{"a member name not UTF-8", PushTypeAlert, "{\"aps\":{},\"\xff\":1}", ErrInvalidUTF8},
		{"MaxDepth inside aps", PushTypeAlert, aps(`"x":` + nest(jsonscan.MaxDepth-1)), nil},
		{"past MaxDepth inside aps", PushTypeAlert, aps(`"x":` + nest(jsonscan.MaxDepth)), ErrInvalidPayload},
		{"MaxDepth beside aps", PushTypeAlert, `{"aps":{},"y":` + nest(jsonscan.MaxDepth) + `}`, nil},
		{"past MaxDepth beside aps", PushTypeAlert, `{"aps":{},"y":` + nest(jsonscan.MaxDepth+1) + `}`, ErrInvalidPayload},
		{"background escaped", PushTypeBackground, aps(`"content\u002davailable":1`), nil},
		{"background past 16 members", PushTypeBackground, aps(filler(17, true), `"content-available":1`), nil},
		{"background 1.0", PushTypeBackground, aps(`"content-available":1.0`), ErrMissingContentAvail},
		{"background twice", PushTypeBackground, aps(`"content-available":0`, `"content-available":1`), ErrDuplicateKey},
		{"mdm fully escaped with aps", PushTypeMDM, `{"aps":{},"\u006d\u0064\u006d":"m"}`, nil},
		{"mdm empty", PushTypeMDM, `{"mdm":""}`, ErrMissingMDM},
		{"mdm twice, once escaped", PushTypeMDM, `{"mdm":"x","m\u0064m":"y"}`, ErrDuplicateKey},
		{"mdm with a repeated aps member", PushTypeMDM, `{"mdm":"x","aps":{"a":1,"a":1}}`, ErrDuplicateKey},
		{"mdm past 16 members", PushTypeMDM, `{` + filler(17, false) + `,"mdm":"m"}`, nil},
		{"live start, escaped names", PushTypeLiveActivity, aps(`"\u0065vent":"start"`, `"timest\u0061mp":1796083200`, `"attributes\u002dtype":"T"`, `"\u0061ttributes":{}`, `"\u0061lert":null`), nil},
		{"live start past 16 members", PushTypeLiveActivity, aps(append([]string{filler(17, true)}, start...)...), nil},
		{"live start without alert past 16", PushTypeLiveActivity, aps(append([]string{filler(17, false)}, start[:4]...)...), ErrBadLiveActivity},
		{"live event escaped in its value", PushTypeLiveActivity, aps(`"event":"st\u0061rt"`, `"timestamp":1796083200`), ErrBadLiveActivity},
		{"live content-state an array", PushTypeLiveActivity, aps(`"event":"update"`, `"timestamp":1796083200`, `"content\u002dstate":[]`), ErrBadLiveActivity},
		{"live rules read aps only", PushTypeLiveActivity, `{"event":"end","timestamp":1796083200,"aps":{}}`, ErrBadLiveActivity},
	}
}

// TestValidateOutline: Validate's verdict on outlineCases.
func TestValidateOutline(t *testing.T) {
	t.Parallel()
	for _, tc := range outlineCases() {
		n := &Notification{Token: Token(bytes.Repeat([]byte{1}, 32)), Payload: []byte(tc.payload), PushType: tc.push,
			Topic: "com.example.app" + TopicSuffix(tc.push)}
		if tc.push == PushTypeBackground {
			n.Priority = PriorityConserve
		}
		err := n.Validate(HTTP2Limits)
		if tc.want == nil {
			require.NoError(t, err, tc.name)
			continue
		}
		require.ErrorIs(t, err, tc.want, tc.name)
	}
}
