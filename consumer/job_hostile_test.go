package consumer

import (
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
)

// auditCases are the rules the table had no case for, and hostile jobs of
// kinds neither the issue nor the contract's table names, each refused with
// its rule's reason. They join malformedCases, so the table test, the fuzz
// seeds and the worker test (one event each, none reaches the engine) see
// them too.
func auditCases() []malformedCase {
	tok := tokHex(300)
	job := func(members string) string { return `{"token":"` + tok + `",` + members + `}` }
	pl := func(p string) string { return job(`"payload":` + p) }
	la := func(aps string) string {
		return job(`"push_type":"liveactivity","topic":"com.example.app.push-type.liveactivity","payload":{"aps":` + aps + `}`)
	}
	bg := func(aps string) string {
		return job(`"push_type":"background","priority":5,"payload":{"aps":` + aps + `}`)
	}
	return []malformedCase{
		// Rules of the issue the table had no case for.
		{"location bare topic", job(`"push_type":"location","topic":"com.example.app","payload":` + payload), apns.ReasonTopicDisallowed},
		{"liveactivity without timestamp", la(`{"event":"update"}`), apns.ReasonBadLiveActivity},
		{"liveactivity content-state not an object", la(`{"event":"update","timestamp":1796083200,"content-state":[]}`), apns.ReasonBadLiveActivity},
		// Not JSON, or not one JSON object.
		{"NUL in a string", pl("{\"aps\":{\"alert\":\"a\x00b\"}}"), apns.ReasonMalformedJob},
		{"UTF-16 job", "\xff\xfe{\x00}\x00", apns.ReasonMalformedJob},
		{"two jobs with white space", pl(payload) + " \n " + pl(payload), apns.ReasonMalformedJob},
		{"trailing comma", job(`"payload":` + payload + `,`), apns.ReasonMalformedJob},
		{"comment", job(`/* x */"payload":` + payload), apns.ReasonMalformedJob},
		{"single quotes", `{'token':'` + tok + `','payload':{'aps':{}}}`, apns.ReasonMalformedJob},
		{"unquoted name", `{token:"` + tok + `","payload":` + payload + `}`, apns.ReasonMalformedJob},
		{"priority Infinity", job(`"payload":` + payload + `,"priority":Infinity`), apns.ReasonMalformedJob},
		{"priority in hex", job(`"payload":` + payload + `,"priority":0x0a`), apns.ReasonMalformedJob},
		{"priority with a leading zero", job(`"payload":` + payload + `,"priority":010`), apns.ReasonMalformedJob},
		{"priority with a plus", job(`"payload":` + payload + `,"priority":+10`), apns.ReasonMalformedJob},
		{"payload nested 1001 deep", pl(`{"aps":{},"x":` + strings.Repeat("[", 1000) + strings.Repeat("]", 1000) + `}`), apns.ReasonMalformedJob},
		// Not UTF-8.
		{"overlong UTF-8", pl("{\"aps\":{\"alert\":\"\xc0\xaf\"}}"), apns.ReasonInvalidUTF8},
		{"surrogate in UTF-8", pl("{\"aps\":{\"alert\":\"\xed\xa0\x80\"}}"), apns.ReasonInvalidUTF8},
		{"beyond U+10FFFF", pl("{\"aps\":{\"alert\":\"\xf4\x90\x80\x80\"}}"), apns.ReasonInvalidUTF8},
		{"Latin-1 member name", job("\"payload\":" + payload + ",\"caf\xe9\":1"), apns.ReasonInvalidUTF8},
		// Names twice, one of them escaped or empty.
		{"aps twice, one escaped, one a string", pl(`{"\u0061ps":"x","aps":{}}`), apns.ReasonDuplicateKey},
		{"aps twice, the second empty", pl(`{"aps":{"alert":"a"},"aps":{}}`), apns.ReasonDuplicateKey},
		{"aps member twice, one escaped", pl(`{"aps":{"alert":"a","\u0061lert":"b"}}`), apns.ReasonDuplicateKey},
		{"content-available twice", bg(`{"content-available":1,"content-available":0}`), apns.ReasonDuplicateKey},
		// Numbers out of range, or written oddly.
		{"priority 1e999", job(`"payload":` + payload + `,"priority":1e999`), apns.ReasonInvalidPriority},
		{"priority -0", job(`"payload":` + payload + `,"priority":-0`), apns.ReasonInvalidPriority},
		{"expiration 1e999", job(`"payload":` + payload + `,"expiration":1e999`), apns.ReasonBadExpirationDate},
		{"expiration -0", job(`"payload":` + payload + `,"expiration":-0`), apns.ReasonBadExpirationDate},
		{"expiration 0.0", job(`"payload":` + payload + `,"expiration":0.0`), apns.ReasonBadExpirationDate},
		{"expiration past 2106", job(`"payload":` + payload + `,"expiration":"2106-02-07T06:28:16Z"`), apns.ReasonBadExpirationDate},
		{"expiration year 9999", job(`"payload":` + payload + `,"expiration":"9999-12-31T23:59:59Z"`), apns.ReasonBadExpirationDate},
		{"expiration leap second", job(`"payload":` + payload + `,"expiration":"2030-06-30T23:59:60Z"`), apns.ReasonBadExpirationDate},
		{"expiration offset plus 24 hours", job(`"payload":` + payload + `,"expiration":"2030-01-01T00:00:00+24:00"`), apns.ReasonBadExpirationDate},
		{"expiration offset minus 24 hours", job(`"payload":` + payload + `,"expiration":"2030-01-01T00:00:00-24:00"`), apns.ReasonBadExpirationDate},
		{"expiration offset minute 60", job(`"payload":` + payload + `,"expiration":"2030-01-01T00:00:00+00:60"`), apns.ReasonBadExpirationDate},
		{"expiration offset minus 22 hours 60 minutes", job(`"payload":` + payload + `,"expiration":"2030-01-01T00:00:00-22:60"`), apns.ReasonBadExpirationDate},
		{"expiration one-digit hour", job(`"payload":` + payload + `,"expiration":"2030-01-01T0:00:00Z"`), apns.ReasonBadExpirationDate},
		{"expiration comma before the fraction", job(`"payload":` + payload + `,"expiration":"2030-01-01T00:00:00,5Z"`), apns.ReasonBadExpirationDate},
		// Strings with padding, controls, the wrong case.
		{"token 0x", `{"token":"0x` + tok[2:] + `","payload":` + payload + `}`, apns.ReasonInvalidToken},
		{"token padded", `{"token":" ` + tok + ` ","payload":` + payload + `}`, apns.ReasonInvalidToken},
		{"token with a NUL", `{"token":"` + tok[:62] + `\u0000a","payload":` + payload + `}`, apns.ReasonInvalidToken},
		{"topic padded", job(`"payload":` + payload + `,"topic":" com.example.app"`), apns.ReasonInvalidTopic},
		{"topic with a NUL", job(`"payload":` + payload + `,"topic":"com.example.app\u0000"`), apns.ReasonInvalidTopic},
		{"topic with a newline", job(`"payload":` + payload + `,"topic":"com.example.app\nx"`), apns.ReasonInvalidTopic},
		{"push type padded", job(`"payload":` + payload + `,"push_type":"alert "`), apns.ReasonInvalidPushType},
		{"push type capitalised", job(`"payload":` + payload + `,"push_type":"Alert"`), apns.ReasonInvalidPushType},
		{"collapse id with a NUL", job(`"payload":` + payload + `,"collapse_id":"a\u0000b"`), apns.ReasonInvalidCollapseID},
		{"collapse id with CR LF", job(`"payload":` + payload + `,"collapse_id":"a\r\nx-evil: 1"`), apns.ReasonInvalidCollapseID},
		{"collapse id with DEL", job(`"payload":` + payload + `,"collapse_id":"a\u007f"`), apns.ReasonInvalidCollapseID},
		{"collapse id with a leading space", job(`"payload":` + payload + `,"collapse_id":" a"`), apns.ReasonInvalidCollapseID},
		{"collapse id with a trailing space", job(`"payload":` + payload + `,"collapse_id":"a "`), apns.ReasonInvalidCollapseID},
		{"collapse id 66 bytes in 33 characters", job(`"payload":` + payload + `,"collapse_id":"` + strings.Repeat("é", 33) + `"`), apns.ReasonInvalidCollapseID},
		// aps under another name or of the wrong kind.
		{"aps in capitals", pl(`{"APS":{"alert":"hi"}}`), apns.ReasonMissingAps},
		{"escaped aps a string", pl(`{"\u0061ps":"hi"}`), apns.ReasonApsNotObject},
		{"huge member name in the payload", pl(`{"aps":{},"` + strings.Repeat("n", 5000) + `":1}`), apns.ReasonPayloadTooLarge},
		// Push-type rules met nearly.
		{"background without priority", job(`"push_type":"background","payload":{"aps":{"content-available":1}}`), apns.ReasonInvalidPriority},
		{"background aps {}", bg(`{}`), apns.ReasonContentAvailable},
		{"background content-available true", bg(`{"content-available":true}`), apns.ReasonContentAvailable},
		{"background content-available 1.0", bg(`{"content-available":1.0}`), apns.ReasonContentAvailable},
		{`background content-available "1"`, bg(`{"content-available":"1"}`), apns.ReasonContentAvailable},
		{"liveactivity timestamp a float", la(`{"event":"update","timestamp":1.7e9}`), apns.ReasonBadLiveActivity},
		{"liveactivity timestamp a string", la(`{"event":"update","timestamp":"1796083200"}`), apns.ReasonBadLiveActivity},
		{"liveactivity event escaped", la(`{"event":"\u0075pdate","timestamp":1796083200}`), apns.ReasonBadLiveActivity},
		{"liveactivity start without attributes", la(`{"event":"start","timestamp":1796083200,"attributes-type":"T","alert":"a"}`), apns.ReasonBadLiveActivity},
		{"liveactivity at priority 1", job(`"push_type":"liveactivity","topic":"com.example.app.push-type.liveactivity","priority":1,"payload":{"aps":{"event":"end","timestamp":1796083200}}`), apns.ReasonInvalidPriority},
		{"voip topic the suffix alone", job(`"push_type":"voip","topic":".voip","payload":` + payload), apns.ReasonTopicDisallowed},
		{"voip topic in capitals", job(`"push_type":"voip","topic":"com.example.app.VOIP","payload":` + payload), apns.ReasonTopicDisallowed},
		{"widgets bare topic", job(`"push_type":"widgets","topic":"com.example.app","payload":` + payload), apns.ReasonTopicDisallowed},
		{"controls default topic", job(`"push_type":"controls","payload":` + payload), apns.ReasonTopicDisallowed},
		{"pushtotalk at priority 5", job(`"push_type":"pushtotalk","topic":"com.example.app.voip-ptt","priority":5,"payload":` + payload), apns.ReasonInvalidPriority},
	}
}

// auditGoodJobs are jobs of the same unlisted kinds that the contract
// accepts: each is sent with its payload byte for byte.
func auditGoodJobs() []string {
	tok := tokHex(301)
	job := func(members string) string { return `{"token":"` + tok + `",` + members + `}` }
	return []string{
		`{"token":"` + strings.ToUpper(tok) + `","payload":` + payload + `}`, // hex in capitals: the same bytes
		`{"token":"\u0061b` + tok[2:] + `","payload":` + payload + `}`,       // an escaped hex digit
		" \t\r\n" + job(`"payload":`+payload) + "\r\n\t ",                    // white space around the job
		job(`"payload": { "aps" : { "alert" : "a\u0000b" } , "x" : "\uffff" } `),
		job(`"payload":{"aps":{},"x":` + strings.Repeat("[", 997) + strings.Repeat("]", 997) + `}`), // nested 999 deep
		job(`"payload":` + payload + `,"` + strings.Repeat("n", 4<<10) + `":1`),                     // a long unknown name
		job(`"payload":{"":1,"aps":{}},"":2`),
		job(`"payload":` + payload + `,"priority":0,"expiration":"2106-02-07T06:28:15Z","collapse_id":"` + strings.Repeat("é", 32) + `"`),
		job(`"push_type":"background","priority":5,"payload":{"aps":{"content-available":1}}`),
		job(`"payload":` + payload + `,"expiration":"2030-01-01T00:00:00+23:59"`), // the largest offset RFC 3339 allows
		job(`"payload":` + payload + `,"expiration":"2030-01-01T00:00:00.123456789-05:30"`),
	}
}

// TestJobContractLarge: jobs larger than a NATS server lets through by
// default (an operator may raise max_payload to 64 MB) are refused with
// one bounded event, not sent.
func TestJobContractLarge(t *testing.T) {
	w := hostileWorker()
	tok := tokHex(302)
	for _, c := range []malformedCase{
		{"10 MB job", `{"token":"` + tok + `","payload":{"aps":{"alert":"` + strings.Repeat("x", 10<<20) + `"}}}`, apns.ReasonPayloadTooLarge},
		{"10 MB not JSON", strings.Repeat("\x00", 10<<20), apns.ReasonMalformedJob},
		{"10 MB nesting", strings.Repeat("[", 5<<20) + strings.Repeat("]", 5<<20), apns.ReasonMalformedJob},
		{"10 MB of members", `{"token":"` + tok + `","payload":` + payload + strings.Repeat(`,"x":1`, 2<<20) + `}`, apns.ReasonDuplicateKey},
		{"10 MB token", `{"token":"` + strings.Repeat("ab", 5<<20) + `","payload":` + payload + `}`, apns.ReasonInvalidToken},
	} {
		t.Run(c.name, func(t *testing.T) { checkRefused(t, w, c) })
	}
}

// checkRefused: w refuses c's job with c's reason, and its event carries
// the job's bytes.
func checkRefused(t *testing.T, w *Worker, c malformedCase) {
	t.Helper()
	_, n, err := w.checkJob([]byte(c.data))
	require.Error(t, err)
	require.Nil(t, n)
	require.Equal(t, c.reason, malformedReason(err), "%.200v", err)
	checkMalformedEvent(t, []byte(c.data), err)
}

// binaryCases are the rules only a binary (or mock) worker applies, for
// one with the README's 2048-byte payload limit.
func binaryCases() []malformedCase {
	tok := tokHex(303)
	job := func(members string) string { return `{"token":"` + tok + `",` + members + `}` }
	return []malformedCase{
		{"token 31 bytes", `{"token":"` + tok[:62] + `","payload":` + payload + `}`, apns.ReasonInvalidToken},
		{"token 33 bytes", `{"token":"` + tok + `ab","payload":` + payload + `}`, apns.ReasonInvalidToken},
		{"priority 1", job(`"payload":` + payload + `,"priority":1`), apns.ReasonInvalidPriority},
		{"liveactivity", job(`"push_type":"liveactivity","topic":"com.example.app.push-type.liveactivity","payload":{"aps":{"event":"end","timestamp":1796083200}}`), apns.ReasonUnsupportedProtocol},
		{"payload 2049", job(`"payload":` + string(sizedPayload(2049))), apns.ReasonPayloadTooLarge},
		{"voip 2049", job(`"push_type":"voip","topic":"com.example.app.voip","payload":` + string(sizedPayload(2049))), apns.ReasonPayloadTooLarge},
	}
}

// TestJobContractBinary: the binary protocol's own rules, for the binary
// and the mock worker; a job just within them is sent byte for byte.
func TestJobContractBinary(t *testing.T) {
	for _, protocol := range []string{ProtocolBinary, ProtocolMock} {
		w := &Worker{limits: protocolLimits(protocol, 2048), opts: Options{Protocol: protocol, DefaultTopic: "com.example.app"}}
		for _, c := range binaryCases() {
			t.Run(protocol+"/"+c.name, func(t *testing.T) {
				_, n, err := w.checkJob([]byte(c.data))
				require.Error(t, err)
				require.Nil(t, n)
				require.Equal(t, c.reason, malformedReason(err), "%v", err)
				ev := malformedEvent("id", 1, "", protocol, err, []byte(c.data))
				require.Equal(t, protocol, ev.Protocol)
				require.Equal(t, c.reason, ev.Reason)
			})
		}
		good := `{"token":"` + tokHex(304) + `","priority":5,"payload":` + string(sizedPayload(2048)) + `}`
		_, n, err := w.checkJob([]byte(good))
		require.NoError(t, err, protocol)
		checkAccepted(t, []byte(good), n)
	}
}

// checkSentAsWritten: what an accepted job sets besides its payload goes
// on the wire as the job wrote it: an expiration both protocols carry
// (32-bit UNIX seconds, which the binary frame would otherwise clamp) and
// header values an HTTP/2 request can carry (no control characters, no
// white space at either end).
func checkSentAsWritten(t *testing.T, n *apns.Notification) {
	t.Helper()
	if s := n.Expiration.Unix(); !n.Expiration.IsZero() && (s < 0 || s > math.MaxUint32) {
		t.Fatalf("accepted expiration %d does not fit 32 bits", s)
	}
	for _, h := range []string{n.Topic, string(n.PushType), n.CollapseID, n.ID} {
		if strings.ContainsFunc(h, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			t.Fatalf("accepted header value %.100q has a control character", h)
		}
		if h != strings.Trim(h, " \t") {
			t.Fatalf("accepted header value %.100q starts or ends with white space", h)
		}
	}
}
