package apns

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

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
		{"array", ok(func(n *Notification) { n.Payload = []byte(`[{"aps":1}]`) }), BinaryLimits, ErrInvalidPayload},
		{"not json", ok(func(n *Notification) { n.Payload = []byte(`{"aps":`) }), BinaryLimits, ErrInvalidPayload},
		{"too large binary", ok(func(n *Notification) {
			n.Payload = []byte(`{"aps":"` + strings.Repeat("x", 2048) + `"}`)
		}), BinaryLimits, ErrPayloadTooLarge},
		{"voip allows 5120", ok(func(n *Notification) {
			n.PushType = PushTypeVoIP
			n.Payload = []byte(`{"aps":"` + strings.Repeat("x", 5000) + `"}`)
		}), HTTP2Limits, nil},
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
		})
	}
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

func FuzzCheckPayload(f *testing.F) {
	f.Add([]byte(`{"aps":{}}`))
	f.Add([]byte(`{"a":[1,"]",{"b":"}"}],"aps":1}`))
	f.Add([]byte(`{"x":"\\","aps":true}`))
	f.Add([]byte(`{"\u0061ps":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		err := checkPayload(b) // must not panic or hang
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) != nil || m == nil {
			require.Error(t, err)
			return
		}
		_, hasAPS := m["aps"]
		require.Equal(t, hasAPS, err == nil, "%q: %v", b, err)
	})
}
