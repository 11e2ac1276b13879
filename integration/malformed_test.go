package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/consumer"
)

// hostileKind is one kind of job a hostile producer sends, and the reason
// its rejection event must give.
type hostileKind struct {
	name   string
	reason string
	copies int // 0: hostileCopies
	job    func(id string, tok apns.Token) string
}

const hostileCopies = 60

// hostileKinds are jobs that must never reach APNs, of the kinds the issue
// saw sent (aps not an object, duplicate names) and others nobody listed.
func hostileKinds() []hostileKind {
	head := func(id string, tok apns.Token) string { return `{"id":"` + id + `","token":"` + tok.String() + `"` }
	with := func(members string) func(string, apns.Token) string {
		return func(id string, tok apns.Token) string { return head(id, tok) + "," + members + "}" }
	}
	return []hostileKind{
		{"empty message", apns.ReasonMalformedJob, 0, func(string, apns.Token) string { return "" }},
		{"broken JSON", apns.ReasonMalformedJob, 0, func(id string, tok apns.Token) string { return head(id, tok) + `,"payload":{"aps":` }},
		{"BOM", apns.ReasonMalformedJob, 0, func(id string, tok apns.Token) string {
			return "\xef\xbb\xbf" + with(`"payload":`+helloPayload)(id, tok)
		}},
		{"trailing garbage", apns.ReasonMalformedJob, 0, func(id string, tok apns.Token) string { return with(`"payload":`+helloPayload)(id, tok) + `{}` }},
		{"job an array", apns.ReasonMalformedJob, 0, func(id string, tok apns.Token) string { return "[" + with(`"payload":`+helloPayload)(id, tok) + "]" }},
		{"NaN", apns.ReasonMalformedJob, 0, with(`"payload":{"aps":{"badge":NaN}}`)},
		{"invalid escape", apns.ReasonMalformedJob, 0, with(`"payload":{"aps":{"alert":"\x41"}}`)},
		{"deep nesting", apns.ReasonMalformedJob, 0, with(`"payload":{"aps":{},"x":` + strings.Repeat("[", 1500) + strings.Repeat("]", 1500) + `}`)},
		{"token a number", apns.ReasonMalformedJob, 0, func(id string, _ apns.Token) string {
			return `{"id":"` + id + `","token":12,"payload":` + helloPayload + `}`
		}},
		{"aps a string", apns.ReasonApsNotObject, 0, with(`"payload":{"aps":"hi"}`)},
		{"aps a number", apns.ReasonApsNotObject, 0, with(`"payload":{"aps":1e308}`)},
		{"aps a boolean", apns.ReasonApsNotObject, 0, with(`"payload":{"aps":true}`)},
		{"aps an array", apns.ReasonApsNotObject, 0, with(`"payload":{"aps":[{"alert":"hi"}]}`)},
		{"aps null", apns.ReasonApsNotObject, 0, with(`"payload":{"aps":null}`)},
		{"two tokens", apns.ReasonDuplicateKey, 0, with(`"payload":` + helloPayload + `,"token":"` + strings.Repeat("ab", 32) + `"`)},
		{"two payloads", apns.ReasonDuplicateKey, 0, with(`"payload":` + helloPayload + `,"payload":{"aps":{"alert":"other"}}`)},
		{"two aps", apns.ReasonDuplicateKey, 0, with(`"payload":{"aps":{"alert":"a"},"aps":{"alert":"b"}}`)},
		{"two aps, one escaped", apns.ReasonDuplicateKey, 0, with(`"payload":{"aps":{"alert":"a"},"\u0061ps":{"alert":"b"}}`)},
		{"aps member twice", apns.ReasonDuplicateKey, 0, with(`"payload":{"aps":{"alert":"a","alert":"b"}}`)},
		{"lone surrogate", apns.ReasonInvalidUTF8, 0, with(`"payload":{"aps":{"alert":"\ud800"}}`)},
		{"invalid UTF-8", apns.ReasonInvalidUTF8, 0, with("\"payload\":{\"aps\":{\"alert\":\"\xfe\xff\"}}")},
		{"nulls everywhere", apns.ReasonInvalidToken, 0, func(id string, _ apns.Token) string {
			return `{"id":"` + id + `","token":null,"payload":null,"topic":null,"push_type":null,"priority":null,"expiration":null,"collapse_id":null}`
		}},
		{"huge token", apns.ReasonInvalidToken, 0, func(id string, _ apns.Token) string {
			return `{"id":"` + id + `","token":"` + strings.Repeat("ab", 5000) + `","payload":` + helloPayload + `}`
		}},
		{"payload a string", apns.ReasonInvalidPayload, 0, with(`"payload":"{\"aps\":{}}"`)},
		{"missing aps", apns.ReasonMissingAps, 0, with(`"payload":{"alert":"hi"}`)},
		{"payload 4097 bytes", apns.ReasonPayloadTooLarge, 0, with(`"payload":{"aps":{},"x":"` + strings.Repeat("x", 4097-len(`{"aps":{},"x":""}`)) + `"}`)},
		{"1 MB job", apns.ReasonPayloadTooLarge, 2, with(`"payload":{"aps":{"alert":"` + strings.Repeat("y", 900<<10) + `"}}`)},
		{"priority with an exponent", apns.ReasonInvalidPriority, 0, with(`"payload":` + helloPayload + `,"priority":1e1`)},
		{"priority huge", apns.ReasonInvalidPriority, 0, with(`"payload":` + helloPayload + `,"priority":99999999999999999999999`)},
		{"expiration negative", apns.ReasonBadExpirationDate, 0, with(`"payload":` + helloPayload + `,"expiration":-1`)},
		{"expiration huge", apns.ReasonBadExpirationDate, 0, with(`"payload":` + helloPayload + `,"expiration":1e30`)},
		{"background at priority 10", apns.ReasonInvalidPriority, 0, with(`"push_type":"background","priority":10,"payload":{"aps":{"content-available":1}}`)},
		{"background without content-available", apns.ReasonContentAvailable, 0, with(`"push_type":"background","priority":5,"payload":{"aps":{}}`)},
		{"liveactivity bare topic", apns.ReasonTopicDisallowed, 0, with(`"push_type":"liveactivity","topic":"com.example.app","payload":{"aps":{"event":"update","timestamp":1796083200}}`)},
		{"liveactivity without timestamp", apns.ReasonBadLiveActivity, 0, with(`"push_type":"liveactivity","topic":"com.example.app.push-type.liveactivity","payload":{"aps":{"event":"update"}}`)},
		{"voip bare topic", apns.ReasonTopicDisallowed, 0, with(`"push_type":"voip","topic":"com.example.app","payload":` + helloPayload)},
		{"unknown push type", apns.ReasonInvalidPushType, 0, with(`"push_type":"../../x","payload":` + helloPayload)},
		// Kinds the audit of issue 11 added.
		{"collapse id with a NUL", apns.ReasonInvalidCollapseID, 0, with(`"payload":` + helloPayload + `,"collapse_id":"a\u0000b"`)},
		{"collapse id with CR LF", apns.ReasonInvalidCollapseID, 0, with(`"payload":` + helloPayload + `,"collapse_id":"a\r\nx-evil: 1"`)},
		{"expiration past 2106", apns.ReasonBadExpirationDate, 0, with(`"payload":` + helloPayload + `,"expiration":"2200-01-01T00:00:00Z"`)},
		{"overlong UTF-8", apns.ReasonInvalidUTF8, 0, with("\"payload\":{\"aps\":{\"alert\":\"\xc0\xaf\"}}")},
		{"priority 1e999", apns.ReasonInvalidPriority, 0, with(`"payload":` + helloPayload + `,"priority":1e999`)},
		{"escaped aps a string", apns.ReasonApsNotObject, 0, with(`"payload":{"\u0061ps":"hi"}`)},
		{"aps member twice, one escaped", apns.ReasonDuplicateKey, 0, with(`"payload":{"aps":{"alert":"a","\u0061lert":"b"}}`)},
		{"location bare topic", apns.ReasonTopicDisallowed, 0, with(`"push_type":"location","topic":"com.example.app","payload":` + helloPayload)},
		{"10 MB job", apns.ReasonPayloadTooLarge, 1, with(`"payload":{"aps":{"alert":"` + strings.Repeat("z", 10<<20) + `"}}`)},
	}
}

// TestHostileJobs: the worker in HTTP/2 mode is fed thousands of hostile
// jobs of many kinds (one of 10 MB, on a server whose max_payload lets it
// through) with good jobs between them. None reaches the APNs
// server, each gets exactly one rejection event with its reason, every
// good job is delivered once, and the worker stays up.
func TestHostileJobs(t *testing.T) {
	h2 := startHTTP2(t)
	// max_payload raised, as an operator may (up to 64 MB), so that the
	// 10 MB job reaches the stream.
	ns := startNATSWith(t, freeAddr(t), func(o *server.Options) { o.MaxPayload = 16 << 20 })
	_, js := connect(t, ns.ClientURL())
	w := startWorker(t, "hostile", http2Env(t, ns.ClientURL(), h2))

	type sent struct {
		id, reason string
		tok        apns.Token
	}
	var hostile, good []sent
	var futs []jetstream.PubAckFuture
	pub := func(id string, data string) {
		m := &nats.Msg{Subject: jobsSubject, Data: []byte(data), Header: nats.Header{jetstream.MsgIDHeader: []string{id}}}
		f, err := js.PublishMsgAsync(m, jetstream.WithStallWait(30*time.Second))
		require.NoError(t, err, "publish %s", id)
		futs = append(futs, f)
	}
	i := 0
	for _, k := range hostileKinds() {
		copies := k.copies
		if copies == 0 {
			copies = hostileCopies
		}
		for c := range copies {
			i++
			id, tok := fmt.Sprintf("hostile-%d", i), token(0xe1, i)
			pub(id, k.job(id, tok))
			hostile = append(hostile, sent{id, k.name + ": " + k.reason, tok})
			if c%10 == 0 {
				gid, gtok := fmt.Sprintf("good-%d", i), token(0xe2, i)
				pub(gid, `{"id":"`+gid+`","token":"`+gtok.String()+`","payload":`+helloPayload+`}`)
				good = append(good, sent{gid, "", gtok})
			}
		}
	}
	for _, f := range futs {
		awaitPubAck(t, f)
	}
	waitDrained(t, js, 120*time.Second)

	perJob := map[string][]string{}
	for _, ev := range readEvents[consumer.RejectionEvent](t, js, subjRejected) {
		require.True(t, ev.Malformed, "job %s", ev.JobID)
		require.Equal(t, "http2", ev.Protocol)
		perJob[ev.JobID] = append(perJob[ev.JobID], ev.Reason)
	}
	for _, h := range hostile {
		kind, reason, _ := strings.Cut(h.reason, ": ")
		require.Equal(t, []string{reason}, perJob[h.id], "%s (%s): one event with its reason", h.id, kind)
		require.Zero(t, h2.AcceptedFor(h.tok), "%s (%s) reached APNs", h.id, kind)
	}
	require.Len(t, perJob, len(hostile), "events only for the hostile jobs")
	for _, g := range good {
		require.Equal(t, 1, h2.AcceptedFor(g.tok), "good job %s delivered once", g.id)
	}
	st := h2.Statuses()
	require.Equal(t, map[int]int{200: len(good)}, st, "APNs saw the good jobs only")
	require.False(t, w.exited(), "worker exited")
	require.Equal(t, 0, w.stop(60*time.Second), "exit code")
	t.Logf("%d hostile jobs of %d kinds, %d good ones", len(hostile), len(hostileKinds()), len(good))
}
