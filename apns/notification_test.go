package apns

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jetpush/apns-worker/apns/jsonscan"

	"github.com/stretchr/testify/require"
)

func TestParseToken(t *testing.T) {
	t.Parallel()
	tok, err := ParseToken(strings.Repeat("ab", 32))
	require.NoError(t, err)
	require.Equal(t, Token(bytes.Repeat([]byte{0xab}, 32)), tok)
	require.Equal(t, strings.Repeat("ab", 32), tok.String())
	require.Equal(t, "abababab…", tok.LogValue().String())

	for _, bad := range []string{"", "a", "zz", strings.Repeat("ab", 101)} {
		_, err := ParseToken(bad)
		require.ErrorIs(t, err, ErrInvalidToken, bad)
		require.ErrorIs(t, err, ErrInvalidNotification, bad)
	}
	// What is wrong is said first: a character, not the length it makes.
	for bad, want := range map[string]string{
		strings.Repeat("ab", 16) + " " + strings.Repeat("ab", 16):       `' ' at offset 32 is not a hex digit`,
		strings.Repeat("ab", 16) + "-" + strings.Repeat("ab", 16) + "a": `'-' at offset 32 is not a hex digit`,
		"zz":                    `'z' at offset 0 is not a hex digit`,
		strings.Repeat("a", 65): "65 hex digits, want an even number from 2 to 200",
	} {
		_, err := ParseToken(bad)
		require.ErrorContains(t, err, want, bad)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tok32 := Token(bytes.Repeat([]byte{1}, 32))
	ok := func(mut func(n *Notification)) *Notification {
		n := &Notification{Token: tok32, Payload: []byte(`{"aps":{"alert":"hi"}}`)}
		if mut != nil {
			mut(n)
		}
		return n
	}
	tests := []struct {
		name    string
		n       *Notification
		limits  Limits
		wantErr error
	}{
		{"valid binary", ok(nil), BinaryLimits, nil},
		{"valid http2 short token", ok(func(n *Notification) { n.Token = Token{1, 2, 3} }), HTTP2Limits, nil},
		{"binary wants 32 bytes", ok(func(n *Notification) { n.Token = Token{1, 2, 3} }), BinaryLimits, ErrInvalidToken},
		{"empty token", ok(func(n *Notification) { n.Token = nil }), HTTP2Limits, ErrInvalidToken},
		{"aps after other keys", ok(func(n *Notification) {
			n.Payload = []byte(` { "a" : [1,{"aps":2}], "b":"x\"aps\"" , "aps" : {} } `)
		}), BinaryLimits, nil},
		{"nested aps only", ok(func(n *Notification) { n.Payload = []byte(`{"a":{"aps":1}}`) }), BinaryLimits, ErrNoAPS},
		{"aps in a string", ok(func(n *Notification) { n.Payload = []byte(`{"x":"\"aps\""}`) }), BinaryLimits, ErrNoAPS},
		{"empty object", ok(func(n *Notification) { n.Payload = []byte(`{}`) }), BinaryLimits, ErrNoAPS},
		{"expiration before 1970", ok(func(n *Notification) { n.Expiration = time.Unix(-1, 0) }), HTTP2Limits, ErrInvalidExpiration},
		{"expiration past 32 bits", ok(func(n *Notification) { n.Expiration = time.Unix(1<<32, 0) }), BinaryLimits, ErrInvalidExpiration},
		{"expiration at the last 32-bit second", ok(func(n *Notification) { n.Expiration = time.Unix(1<<32-1, 0) }), BinaryLimits, nil},
		{"expiration now: try once", ok(func(n *Notification) { n.Expiration = ExpireNow }), BinaryLimits, nil},
		{"mdm without aps", ok(func(n *Notification) { n.PushType, n.Payload = PushTypeMDM, []byte(`{"mdm":"PushMagic"}`) }), HTTP2Limits, nil},
		{"mdm with aps", ok(func(n *Notification) { n.PushType, n.Payload = PushTypeMDM, []byte(`{"aps":{},"mdm":"m"}`) }), HTTP2Limits, nil},
		{"mdm escaped name", ok(func(n *Notification) { n.PushType, n.Payload = PushTypeMDM, []byte(`{"\u006ddm":"m"}`) }), BinaryLimits, nil},
		{"mdm without mdm", ok(func(n *Notification) { n.PushType, n.Payload = PushTypeMDM, []byte(`{"aps":{"mdm":"m"}}`) }), HTTP2Limits, ErrMissingMDM},
		{"mdm a number", ok(func(n *Notification) { n.PushType, n.Payload = PushTypeMDM, []byte(`{"mdm":1}`) }), HTTP2Limits, ErrMissingMDM},
		{"mdm with a bad aps", ok(func(n *Notification) { n.PushType, n.Payload = PushTypeMDM, []byte(`{"mdm":"m","aps":[]}`) }), HTTP2Limits, ErrApsNotObject},
		{"mdm not an object", ok(func(n *Notification) { n.PushType, n.Payload = PushTypeMDM, []byte(`["mdm"]`) }), HTTP2Limits, ErrInvalidPayload},
		{"mdm member without the push type", ok(func(n *Notification) { n.Payload = []byte(`{"mdm":"m"}`) }), HTTP2Limits, ErrNoAPS},
		{"array", ok(func(n *Notification) { n.Payload = []byte(`[{"aps":1}]`) }), BinaryLimits, ErrInvalidPayload},
		{"not json", ok(func(n *Notification) { n.Payload = []byte(`{"aps":`) }), BinaryLimits, ErrInvalidPayload},
		{"too large binary", ok(func(n *Notification) {
			n.Payload = []byte(`{"aps":"` + strings.Repeat("x", 2048) + `"}`)
		}), BinaryLimits, ErrPayloadTooLarge},
		{"priority 1 binary", ok(func(n *Notification) { n.Priority = PriorityLow }), BinaryLimits, ErrInvalidPriority},
		{"priority 1 http2", ok(func(n *Notification) { n.Priority = PriorityLow }), HTTP2Limits, nil},
		{"priority 7", ok(func(n *Notification) { n.Priority = 7 }), HTTP2Limits, ErrInvalidPriority},
		{"background at 10", ok(func(n *Notification) {
			n.PushType, n.Priority = PushTypeBackground, PriorityImmediate
		}), HTTP2Limits, ErrInvalidPriority},
		{"unknown push type", ok(func(n *Notification) { n.PushType = "spam" }), HTTP2Limits, ErrInvalidPushType},
		{"collapse id 65", ok(func(n *Notification) { n.CollapseID = strings.Repeat("c", 65) }), HTTP2Limits, ErrInvalidCollapseID},
		{"uuid upper", ok(func(n *Notification) { n.ID = "123E4567-E89B-12D3-A456-426614174000" }), HTTP2Limits, ErrInvalidID},
		{"uuid ok", ok(func(n *Notification) { n.ID = "123e4567-e89b-12d3-a456-426614174000" }), HTTP2Limits, nil},
		{"topic with space", ok(func(n *Notification) { n.Topic = "com.example app" }), HTTP2Limits, ErrInvalidTopic},
		// One case per rule of the contract (README, "Job format").
		{"aps a string", ok(func(n *Notification) { n.Payload = []byte(`{"aps":"hi"}`) }), HTTP2Limits, ErrApsNotObject},
		{"aps a number", ok(func(n *Notification) { n.Payload = []byte(`{"aps":1}`) }), HTTP2Limits, ErrApsNotObject},
		{"aps a bool", ok(func(n *Notification) { n.Payload = []byte(`{"aps":true}`) }), HTTP2Limits, ErrApsNotObject},
		{"aps an array", ok(func(n *Notification) { n.Payload = []byte(`{"aps":[{}]}`) }), HTTP2Limits, ErrApsNotObject},
		{"aps null", ok(func(n *Notification) { n.Payload = []byte(`{"aps":null}`) }), HTTP2Limits, ErrApsNotObject},
		{"escaped aps name", ok(func(n *Notification) { n.Payload = []byte(`{"\u0061ps":{}}`) }), HTTP2Limits, nil},
		{"escaped aps name not an object", ok(func(n *Notification) { n.Payload = []byte(`{"\u0061ps":7}`) }), HTTP2Limits, ErrApsNotObject},
		{"two aps", ok(func(n *Notification) { n.Payload = []byte(`{"aps":{},"aps":{"alert":"x"}}`) }), HTTP2Limits, ErrDuplicateKey},
		{"two aps, one escaped", ok(func(n *Notification) { n.Payload = []byte(`{"aps":{},"\u0061ps":{}}`) }), HTTP2Limits, ErrDuplicateKey},
		{"duplicate top-level member", ok(func(n *Notification) { n.Payload = []byte(`{"aps":{},"x":1,"x":2}`) }), HTTP2Limits, ErrDuplicateKey},
		{"duplicate aps member", ok(func(n *Notification) { n.Payload = []byte(`{"aps":{"alert":"a","alert":"b"}}`) }), HTTP2Limits, ErrDuplicateKey},
		{"duplicate deeper is allowed", ok(func(n *Notification) { n.Payload = []byte(`{"aps":{"alert":{"x":1,"x":2}}}`) }), HTTP2Limits, nil},
		{"many distinct members", ok(func(n *Notification) { n.Payload = manyMembers(40, false) }), HTTP2Limits, nil},
		{"many members, last repeats", ok(func(n *Notification) { n.Payload = manyMembers(40, true) }), HTTP2Limits, ErrDuplicateKey},
		{"invalid UTF-8", ok(func(n *Notification) { n.Payload = []byte("{\"aps\":{\"alert\":\"\xff\"}}") }), HTTP2Limits, ErrInvalidUTF8},
		{"lone high surrogate", ok(func(n *Notification) { n.Payload = []byte(`{"aps":{"alert":"\ud800"}}`) }), HTTP2Limits, ErrInvalidUTF8},
		{"high surrogate then text", ok(func(n *Notification) { n.Payload = []byte(`{"aps":{"alert":"\ud800abcdefgh"}}`) }), HTTP2Limits, ErrInvalidUTF8},
		{"lone low surrogate", ok(func(n *Notification) { n.Payload = []byte(`{"aps":{"alert":"\udc00x"}}`) }), HTTP2Limits, ErrInvalidUTF8},
		{"surrogate pair", ok(func(n *Notification) { n.Payload = []byte(`{"aps":{"alert":"\ud83d\ude00"}}`) }), HTTP2Limits, nil},
		{"escaped backslash then u", ok(func(n *Notification) { n.Payload = []byte(`{"aps":{"alert":"\\ud800"}}`) }), HTTP2Limits, nil},
		{"BOM", ok(func(n *Notification) { n.Payload = []byte("\xef\xbb\xbf{\"aps\":{}}") }), HTTP2Limits, ErrInvalidPayload},
		{"trailing garbage", ok(func(n *Notification) { n.Payload = []byte(`{"aps":{}} x`) }), HTTP2Limits, ErrInvalidPayload},
		{"two objects", ok(func(n *Notification) { n.Payload = []byte(`{"aps":{}}{}`) }), HTTP2Limits, ErrInvalidPayload},
		{"deep nesting", ok(func(n *Notification) {
			n.Payload = []byte(`{"aps":{},"x":` + strings.Repeat("[", 1100) + strings.Repeat("]", 1100) + `}`)
		}), HTTP2Limits, ErrInvalidPayload},
		{"NaN", ok(func(n *Notification) { n.Payload = []byte(`{"aps":{"badge":NaN}}`) }), HTTP2Limits, ErrInvalidPayload},
		{"invalid escape", ok(func(n *Notification) { n.Payload = []byte(`{"aps":{"alert":"\x"}}`) }), HTTP2Limits, ErrInvalidPayload},
		{"empty payload", ok(func(n *Notification) { n.Payload = nil }), HTTP2Limits, ErrInvalidPayload},
		{"http2 4096 ok", ok(func(n *Notification) { n.Payload = sized(4096) }), HTTP2Limits, nil},
		{"http2 4097", ok(func(n *Notification) { n.Payload = sized(4097) }), HTTP2Limits, ErrPayloadTooLarge},
		{"voip 5120 ok", suffixed(PushTypeVoIP, ".voip", sized(5120)), HTTP2Limits, nil},
		{"voip 5121", suffixed(PushTypeVoIP, ".voip", sized(5121)), HTTP2Limits, ErrPayloadTooLarge},
		{"binary 2048 ok", ok(func(n *Notification) { n.Payload = sized(2048) }), BinaryLimits, nil},
		{"binary 2049", ok(func(n *Notification) { n.Payload = sized(2049) }), BinaryLimits, ErrPayloadTooLarge},
		{"background ok", background(nil), HTTP2Limits, nil},
		{"background priority unset", background(func(n *Notification) { n.Priority = 0 }), HTTP2Limits, ErrInvalidPriority},
		{"background without content-available", background(func(n *Notification) { n.Payload = []byte(`{"aps":{}}`) }), HTTP2Limits, ErrMissingContentAvail},
		{"background content-available 0", background(func(n *Notification) { n.Payload = []byte(`{"aps":{"content-available":0}}`) }), HTTP2Limits, ErrMissingContentAvail},
		{"background content-available string", background(func(n *Notification) { n.Payload = []byte(`{"aps":{"content-available":"1"}}`) }), HTTP2Limits, ErrMissingContentAvail},
		{"background content-available 1e0", background(func(n *Notification) { n.Payload = []byte(`{"aps":{"content-available":1e0}}`) }), HTTP2Limits, ErrMissingContentAvail},
		{"liveactivity ok", live(nil), HTTP2Limits, nil},
		{"liveactivity start ok", live(func(n *Notification) {
			n.Payload = []byte(`{"aps":{"event":"start","timestamp":1796083200,"content-state":{},"attributes-type":"A","attributes":{},"alert":{"title":"t"}}}`)
		}), HTTP2Limits, nil},
		{"liveactivity over binary", live(nil), BinaryLimits, ErrUnsupportedByProtocol},
		{"liveactivity bare topic", live(func(n *Notification) { n.Topic = "com.example.app" }), HTTP2Limits, ErrTopicDisallowed},
		{"liveactivity suffix only", live(func(n *Notification) { n.Topic = ".push-type.liveactivity" }), HTTP2Limits, ErrTopicDisallowed},
		{"liveactivity priority 1", live(func(n *Notification) { n.Priority = PriorityLow }), HTTP2Limits, ErrInvalidPriority},
		{"liveactivity no event", live(func(n *Notification) { n.Payload = []byte(`{"aps":{"timestamp":1796083200}}`) }), HTTP2Limits, ErrBadLiveActivity},
		{"liveactivity bad event", live(func(n *Notification) { n.Payload = []byte(`{"aps":{"event":"pause","timestamp":1796083200}}`) }), HTTP2Limits, ErrBadLiveActivity},
		{"liveactivity no timestamp", live(func(n *Notification) { n.Payload = []byte(`{"aps":{"event":"update"}}`) }), HTTP2Limits, ErrBadLiveActivity},
		{"liveactivity timestamp in ms", live(func(n *Notification) { n.Payload = []byte(`{"aps":{"event":"update","timestamp":1796083200000}}`) }), HTTP2Limits, ErrBadLiveActivity},
		{"liveactivity timestamp string", live(func(n *Notification) { n.Payload = []byte(`{"aps":{"event":"update","timestamp":"1796083200"}}`) }), HTTP2Limits, ErrBadLiveActivity},
		{"liveactivity timestamp exponent", live(func(n *Notification) { n.Payload = []byte(`{"aps":{"event":"update","timestamp":1.7e9}}`) }), HTTP2Limits, ErrBadLiveActivity},
		{"liveactivity content-state array", live(func(n *Notification) {
			n.Payload = []byte(`{"aps":{"event":"update","timestamp":1796083200,"content-state":[]}}`)
		}), HTTP2Limits, ErrBadLiveActivity},
		{"liveactivity start without attributes", live(func(n *Notification) {
			n.Payload = []byte(`{"aps":{"event":"start","timestamp":1796083200,"attributes-type":"A","alert":"x"}}`)
		}), HTTP2Limits, ErrBadLiveActivity},
		{"voip suffix ok", suffixed(PushTypeVoIP, ".voip", nil), HTTP2Limits, nil},
		{"voip bare topic", suffixed(PushTypeVoIP, "", nil), HTTP2Limits, ErrTopicDisallowed},
		{"complication suffix ok", suffixed(PushTypeComplication, ".complication", nil), HTTP2Limits, nil},
		{"complication wrong suffix", suffixed(PushTypeComplication, ".voip", nil), HTTP2Limits, ErrTopicDisallowed},
		{"fileprovider suffix ok", suffixed(PushTypeFileProvider, ".pushkit.fileprovider", nil), HTTP2Limits, nil},
		{"fileprovider bare topic", suffixed(PushTypeFileProvider, "", nil), HTTP2Limits, ErrTopicDisallowed},
		{"location suffix ok", suffixed(PushTypeLocation, ".location-query", nil), HTTP2Limits, nil},
		{"location bare topic", suffixed(PushTypeLocation, "", nil), HTTP2Limits, ErrTopicDisallowed},
		{"location priority 5", withPriority(suffixed(PushTypeLocation, ".location-query", nil), PriorityConserve), HTTP2Limits, ErrInvalidPriority},
		{"pushtotalk suffix ok", suffixed(PushTypePushToTalk, ".voip-ptt", nil), HTTP2Limits, nil},
		{"pushtotalk wrong suffix", suffixed(PushTypePushToTalk, ".voip", nil), HTTP2Limits, ErrTopicDisallowed},
		{"pushtotalk priority 5", withPriority(suffixed(PushTypePushToTalk, ".voip-ptt", nil), PriorityConserve), HTTP2Limits, ErrInvalidPriority},
		{"widgets bare topic", suffixed(PushTypeWidgets, "", nil), HTTP2Limits, ErrTopicDisallowed},
		{"controls bare topic", suffixed(PushTypeControls, "", nil), HTTP2Limits, ErrTopicDisallowed},
		{"alert any topic", suffixed(PushTypeAlert, "", nil), HTTP2Limits, nil},
		{"no topic: suffix left to CheckTopic", ok(func(n *Notification) { n.PushType = PushTypeVoIP }), HTTP2Limits, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.n.Validate(tt.limits)
			if tt.wantErr == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.wantErr)
			require.ErrorIs(t, err, ErrInvalidNotification)
			require.NotEqual(t, ReasonInvalidNotification, ReasonOf(err), "every rule has its reason")
		})
	}
}

// sized returns a payload of exactly n bytes.
func sized(n int) []byte {
	const head, tail = `{"aps":{},"x":"`, `"}`
	return []byte(head + strings.Repeat("x", n-len(head)-len(tail)) + tail)
}

// manyMembers returns a payload with n members besides aps (more than
// the outline holds inline); with repeat, the last one repeats the first.
func manyMembers(n int, repeat bool) []byte {
	var b strings.Builder
	b.WriteString(`{"aps":{}`)
	for i := range n {
		fmt.Fprintf(&b, `,"m%d":%d`, i, i)
	}
	if repeat {
		b.WriteString(`,"m0":0`)
	}
	b.WriteString("}")
	return []byte(b.String())
}

func background(mut func(n *Notification)) *Notification {
	n := &Notification{Token: Token{1, 2, 3}, PushType: PushTypeBackground, Priority: PriorityConserve,
		Payload: []byte(`{"aps":{"content-available":1},"x":1}`)}
	if mut != nil {
		mut(n)
	}
	return n
}

func live(mut func(n *Notification)) *Notification {
	n := &Notification{Token: Token(bytes.Repeat([]byte{1}, 32)), PushType: PushTypeLiveActivity, Priority: PriorityConserve,
		Topic:   "com.example.app.push-type.liveactivity",
		Payload: []byte(`{"aps":{"event":"update","timestamp":1796083200,"content-state":{"score":1}}}`)}
	if mut != nil {
		mut(n)
	}
	return n
}

func suffixed(p PushType, suffix string, payload []byte) *Notification {
	if payload == nil {
		payload = []byte(`{"aps":{}}`)
	}
	return &Notification{Token: Token{1, 2, 3}, PushType: p, Topic: "com.example.app" + suffix, Payload: payload}
}

func withPriority(n *Notification, p Priority) *Notification {
	n.Priority = p
	return n
}

func TestCheckTopic(t *testing.T) {
	t.Parallel()
	require.NoError(t, CheckTopic(PushTypeAlert, ""))
	require.NoError(t, CheckTopic(PushTypeVoIP, "com.x.voip"))
	require.ErrorIs(t, CheckTopic(PushTypeVoIP, "com.x"), ErrTopicDisallowed)
	require.ErrorIs(t, CheckTopic(PushTypeLiveActivity, ""), ErrTopicDisallowed)
}

func TestRejectionErrorBadToken(t *testing.T) {
	t.Parallel()
	require.ErrorIs(t, &RejectionError{Status: StatusInvalidToken, Reason: "InvalidToken"}, ErrBadDeviceToken)
	require.NotErrorIs(t, &RejectionError{Status: StatusInvalidPayloadSize}, ErrBadDeviceToken)
	require.ErrorIs(t, &RejectionError{HTTPStatus: 410, Reason: "Unregistered"}, ErrBadDeviceToken)
	require.NotErrorIs(t, &RejectionError{HTTPStatus: 400, Reason: "BadTopic"}, ErrBadDeviceToken)
	require.ErrorIs(t, &RejectionError{HTTPStatus: 410, Reason: "SomeFutureReason"}, ErrBadDeviceToken)
	require.ErrorIs(t, &RejectionError{HTTPStatus: 400, Reason: "BadDeviceToken"}, ErrBadDeviceToken)
	require.Equal(t, "Status(9)", Status(9).String())
	require.Equal(t, "ProtocolError", StatusProtocolError.String())
}

// FuzzScanPayload: payload.scan accepts exactly the JSON objects of valid
// UTF-8 whose "aps" is an object and that repeat no member name at the top
// level or in aps, as encoding/json reads them.
func FuzzScanPayload(f *testing.F) {
	f.Add([]byte(`{"aps":{}}`))
	f.Add([]byte(`{"a":[1,"]",{"b":"}"}],"aps":{"x":1}}`))
	f.Add([]byte(`{"x":"\\","aps":true}`))
	f.Add([]byte(`{"\u0061ps":{},"aps":{}}`))
	f.Add([]byte(`{"aps":{"a":1,"\u0061":2}}`))
	f.Add([]byte(`{"aps":{"alert":"\ud800"}}`))
	f.Add([]byte("{\"aps\":{\"alert\":\"\xed\xa0\x80\"}}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var pl payload
		err := pl.scan(b) // must not panic or hang
		want := refPayload(b)
		if want == nil {
			require.NoError(t, err, "%q", b)
			return
		}
		require.Error(t, err, "%q: %v", b, want)
		require.ErrorIs(t, err, ErrInvalidNotification)
	})
}

// refPayload is payload.scan's contract through encoding/json (nil: accept).
func refPayload(b []byte) error {
	if !json.Valid(b) || !utf8.Valid(b) {
		return ErrInvalidPayload
	}
	top, err := refMembers(b)
	if err != nil {
		return err
	}
	aps, ok := top["aps"]
	if !ok {
		return ErrNoAPS
	}
	if _, err := refMembers(aps); err != nil {
		return err
	}
	if !jsonscan.Valid(b) { // deeper than jsonscan.MaxDepth: refused by contract
		return ErrInvalidPayload
	}
	if !jsonscan.ValidUnicode(b) { // escaped lone surrogates: encoding/json lets them by
		return ErrInvalidUTF8
	}
	return nil
}

// refMembers decodes the object b into its members, refusing repeats.
func refMembers(b []byte) (map[string]json.RawMessage, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return nil, ErrInvalidPayload
	}
	m := map[string]json.RawMessage{}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return nil, ErrInvalidPayload
		}
		k := tok.(string)
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return nil, ErrInvalidPayload
		}
		if _, dup := m[k]; dup {
			return nil, ErrDuplicateKey
		}
		m[k] = v
	}
	return m, nil
}

// BenchmarkValidate is the per-notification check every Send makes: a
// tiny payload (BenchmarkBinary's) and a typical alert.
func BenchmarkValidate(b *testing.B) {
	for _, bm := range []struct {
		name    string
		payload string
	}{
		{"tiny", `{"aps":{"alert":"hello"}}`},
		{"alert", `{"aps":{"alert":{"title":"Hello","body":"World, a longer line of text for the lock screen"},"badge":1,"sound":"default"},"order":"A-1234","url":"https://example.com/o/1234"}`},
	} {
		b.Run(bm.name, func(b *testing.B) {
			n := &Notification{Token: make(Token, 32), Payload: []byte(bm.payload), Topic: "com.example.app", PushType: PushTypeAlert}
			b.ReportAllocs()
			b.SetBytes(int64(len(n.Payload)))
			for b.Loop() {
				if err := n.Validate(HTTP2Limits); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestIsUUID(t *testing.T) {
	for _, tt := range []struct {
		s    string
		want bool
	}{
		{"0b0f4a52-63a4-4c4b-9c1e-2f1d2b8d6a10", true},
		{"00000000-0000-0000-0000-000000000000", true},
		{"0B0F4A52-63A4-4C4B-9C1E-2F1D2B8D6A10", false}, // APNs wants lowercase
		{"0b0f4a52-63a4-4c4b-9c1e-2f1d2b8d6a1", false},
		{"0b0f4a52-63a4-4c4b-9c1e-2f1d2b8d6a100", false},
		{"0b0f4a5263a4-4c4b-9c1e-2f1d2b8d6a10-", false},
		{"0b0f4a52-63a4-4c4b-9c1e-2f1d2b8d6a1g", false},
		{"0b0f4a52-63a4-4c4b-9c1e-2f1d2b8d6a-0", false},
		{"0b0f4a52x63a4-4c4b-9c1e-2f1d2b8d6a10", false},
		{"", false},
	} {
		require.Equal(t, tt.want, IsUUID(tt.s), "%q", tt.s)
	}
}

// TestValidateEscapedParentOnce: the members of an object under a long
// escaped name cost what their bytes do. The name is not unescaped again
// for each of them to ask whether it is "aps": it was, and a 64 KB payload
// of one such object took half a second to validate.
func TestValidateEscapedParentOnce(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"aps":{},"\u0061` + strings.Repeat("n", 2000) + `":{`)
	for b.Len() < 4000 {
		b.WriteString(`"a":1,`)
	}
	b.WriteString(`"b":1}}`)
	n := &Notification{Token: Token(bytes.Repeat([]byte{1}, 32)), Payload: []byte(b.String())}
	require.NoError(t, n.Validate(HTTP2Limits))
	allocs := testing.AllocsPerRun(10, func() { _ = n.Validate(HTTP2Limits) })
	require.Less(t, allocs, 10.0, "allocations per Validate grow with the members under the escaped name")

	// The longest escaped names of aps and mdm are still theirs.
	n.Payload = []byte(`{"\u0061\u0070\u0073":{"alert":"a","\u0061lert":"b"}}`)
	require.ErrorIs(t, n.Validate(HTTP2Limits), ErrDuplicateKey, "the members of a fully escaped aps are checked")
	n.PushType, n.Payload = PushTypeMDM, []byte(`{"\u006D\u0064\u006d":"PushMagic"}`)
	require.NoError(t, n.Validate(HTTP2Limits), "a fully escaped mdm")
}
