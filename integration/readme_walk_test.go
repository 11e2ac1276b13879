package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/consumer"
)

// storedEvent is one message of the events stream, as a producer reads it.
type storedEvent struct {
	kind  string // the subject's last token: rejected, badtokens, ...
	msgID string // its Nats-Msg-Id header
	body  map[string]json.RawMessage
}

// readStoredEvents reads every message of the events stream with its
// header, in order.
func readStoredEvents(tb testing.TB, js jetstream.JetStream) []storedEvent {
	tb.Helper()
	n := int(streamState(tb, js, eventsStream).Msgs)
	c, err := js.OrderedConsumer(ctxT(tb, 30*time.Second), eventsStream, jetstream.OrderedConsumerConfig{})
	require.NoError(tb, err)
	var out []storedEvent
	for len(out) < n {
		batch, err := c.Fetch(n-len(out), jetstream.FetchMaxWait(10*time.Second))
		require.NoError(tb, err)
		got := 0
		for m := range batch.Messages() {
			ev := storedEvent{kind: m.Subject()[strings.LastIndexByte(m.Subject(), '.')+1:], msgID: m.Headers().Get(jetstream.MsgIDHeader)}
			require.NoError(tb, json.Unmarshal(m.Data(), &ev.body), "%s", m.Data())
			out = append(out, ev)
			got++
		}
		require.NoError(tb, batch.Error())
		require.NotZero(tb, got, "no event arrived")
	}
	return out
}

// str returns the string member name of an event, "" if absent.
func (e storedEvent) str(tb testing.TB, name string) string {
	tb.Helper()
	var s string
	if raw, ok := e.body[name]; ok {
		require.NoError(tb, json.Unmarshal(raw, &s), "%s: %s", name, raw)
	}
	return s
}

// readmeJobs returns the README's quick-start jobs (the bodies of its
// `nats pub apns.jobs '…'` lines, in order) and the example of its "Job
// format" section.
func readmeJobs(tb testing.TB) (quick []string, example []byte) {
	tb.Helper()
	readme, err := os.ReadFile(filepath.Join(repoRoot(tb), "README.md"))
	require.NoError(tb, err)
	for _, m := range regexp.MustCompile(`(?m)^nats pub apns\.jobs '([^']*)'$`).FindAllSubmatch(readme, -1) {
		quick = append(quick, string(m[1]))
	}
	_, format, ok := bytes.Cut(readme, []byte("\n## Job format\n"))
	require.True(tb, ok, "README has no Job format section")
	_, block, ok := bytes.Cut(format, []byte("```json\n"))
	require.True(tb, ok, "README's Job format has no JSON example")
	example, _, ok = bytes.Cut(block, []byte("```"))
	require.True(tb, ok)
	return quick, example
}

// TestReadmeWalk does what the README tells a newcomer, with a producer's
// client instead of the nats CLI: the worker with no setup (embedded NATS,
// mock APNs, receipts on), the quick start's three jobs and the Job format
// example taken from the README itself, then jobs a careless producer
// sends. Each stored job ends in exactly one outcome, an event whose
// subject, Nats-Msg-Id and fields are the README's, and the worker keeps
// running and stops with exit code 0.
func TestReadmeWalk(t *testing.T) {
	quick, example := readmeJobs(t)
	require.Len(t, quick, 3, "the quick start publishes a delivered job, a rejected one and 'not json'")
	ex, err := consumer.DecodeJob(example)
	require.NoError(t, err, "the README's example job")
	exp := time.Time(ex.Expiration)
	require.True(t, exp.IsZero() || exp.After(time.Now()),
		"the README's example job expired on %s: the worker dead-letters it unsent; move it forward", exp)

	listen, httpAddr := freeAddr(t), freeAddr(t)
	w := startWorker(t, "readme-walk", map[string]string{
		"APNS_WORKER_EMBEDDED_LISTEN":   listen,
		"APNS_WORKER_EMBEDDED_DATA_DIR": t.TempDir(),
		"APNS_WORKER_HTTP_ADDR":         httpAddr,
		"APNS_WORKER_EVENTS_RECEIPTS":   "true",
	})
	nc, js := connect(t, "nats://"+listen)
	ctx := ctxT(t, 30*time.Second)

	pub := func(data []byte, hdr nats.Header) (uint64, bool) {
		t.Helper()
		ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: jobsSubject, Data: data, Header: hdr})
		require.NoError(t, err)
		return ack.Sequence, ack.Duplicate
	}
	tok := strings.Repeat("ab", 32)
	longID := strings.Repeat("i", 300)
	type want struct {
		kind, reason, jobID, msgID string
	}
	wants := map[uint64]want{}
	add := func(data []byte, hdr nats.Header, wt want) uint64 {
		seq, dup := pub(data, hdr)
		require.False(t, dup)
		wt.msgID = strings.ReplaceAll(wt.msgID, "SEQ", strconv.FormatUint(seq, 10))
		wants[seq] = wt
		return seq
	}
	s1 := add([]byte(quick[0]), nats.Header{jetstream.MsgIDHeader: {"job-1"}},
		want{consumer.KindDelivered, "", "job-1", "delivered:job-1:SEQ"})
	_, dup := pub([]byte(quick[0]), nats.Header{jetstream.MsgIDHeader: {"job-1"}})
	require.True(t, dup, "a repeated publish with the same Nats-Msg-Id is dropped")
	s2 := add([]byte(quick[1]), nil, want{consumer.KindRejected, apns.ReasonInvalidToken, "job-2", "rejected:job-2:SEQ"})
	s3 := add([]byte(quick[2]), nil, want{consumer.KindRejected, apns.ReasonMalformedJob, "", "rejected:seq:SEQ"})
	sEx := add(example, nil, want{consumer.KindDelivered, "", ex.ID, "delivered:" + ex.ID + ":SEQ"})
	sHdr := add(nil, nats.Header{jetstream.MsgIDHeader: {"hdr-only"}},
		want{consumer.KindRejected, apns.ReasonMalformedJob, "hdr-only", "rejected:hdr-only:SEQ"})
	h := sha256.Sum256([]byte(longID[:consumer.MaxEventJobID]))
	sLong := add([]byte(`{"id":"`+longID+`","token":"`+tok+`","payload":{"aps":{}}}`), nil,
		want{consumer.KindDelivered, "", longID[:consumer.MaxEventJobID], "delivered:h:" + hex.EncodeToString(h[:16]) + ":SEQ"})
	add([]byte(`{"id":"late","token":"`+tok+`","payload":{"aps":{}},"expiration":"2020-01-01T00:00:00Z"}`), nil,
		want{consumer.KindDeadLetter, consumer.ReasonExpired, "late", "deadletter:late:SEQ"})
	sType := add([]byte(`{"id":"typed","token":["`+tok+`"],"payload":{"aps":{}}}`), nil,
		want{consumer.KindRejected, apns.ReasonMalformedJob, "typed", "rejected:typed:SEQ"})
	sBig := add([]byte(`{"id":"big","token":"`+tok+`","payload":{"aps":{"alert":"`+strings.Repeat("x", 70000)+`"}}}`), nil,
		want{consumer.KindRejected, apns.ReasonPayloadTooLarge, "big", "rejected:big:SEQ"})
	add([]byte{0xff, 0x00, 0x7b}, nil, want{consumer.KindRejected, apns.ReasonMalformedJob, "", "rejected:seq:SEQ"})

	// Over the server's max_payload the publish fails: nothing is stored.
	_, err = js.Publish(ctx, jobsSubject, make([]byte, nc.MaxPayload()+1))
	require.True(t, errors.Is(err, nats.ErrMaxPayload), "%v", err)

	waitDrained(t, js, 30*time.Second)
	waitFor(t, 10*time.Second, "one event per job and the bad token's", func() bool {
		return int(streamState(t, js, eventsStream).Msgs) >= len(wants)+1
	})
	outcomes := map[uint64]storedEvent{}
	for _, ev := range readStoredEvents(t, js) {
		var seq uint64
		require.NoError(t, json.Unmarshal(ev.body["seq"], &seq), "%s event without seq", ev.kind)
		if ev.kind == consumer.KindBadToken {
			require.Equal(t, s2, seq, "only the rejected token is a bad token")
			require.Equal(t, "badtokens:job-2:"+strconv.FormatUint(s2, 10), withoutStored(t, ev.msgID))
			require.Equal(t, "rejection", ev.str(t, "source"))
			continue
		}
		_, twice := outcomes[seq]
		require.False(t, twice, "job %d has two outcomes", seq)
		outcomes[seq] = ev
	}
	require.Len(t, outcomes, len(wants), "one outcome per stored job")
	for seq, wt := range wants {
		ev := outcomes[seq]
		require.Equal(t, wt.kind, ev.kind, "job %d", seq)
		require.Equal(t, wt.msgID, withoutStored(t, ev.msgID), "job %d", seq)
		require.Equal(t, wt.reason, ev.str(t, "reason"), "job %d: %s", seq, ev.str(t, "error"))
		require.Equal(t, wt.jobID, ev.str(t, "job_id"), "job %d", seq)
	}

	// The README's events, field by field.
	rej := outcomes[s2]
	require.Equal(t, "mock", rej.str(t, "protocol"))
	require.JSONEq(t, "8", string(rej.body["status"]))
	require.JSONEq(t, quick[1], string(rej.body["job"]))
	bad := outcomes[s3] // 'not json': the original bytes, in job_raw
	require.JSONEq(t, "true", string(bad.body["malformed"]))
	require.Equal(t, "mock", bad.str(t, "protocol"), "a malformed job's event names the mock mode's protocol too")
	require.Equal(t, base64Of("not json"), string(bad.body["job_raw"]))
	require.Contains(t, bad.str(t, "error"), "not JSON: invalid character", "the error says where the JSON breaks")
	require.Equal(t, `""`, string(outcomes[sHdr].body["job_raw"]))
	require.JSONEq(t, "0", string(outcomes[sHdr].body["job_size"]))
	require.Contains(t, outcomes[sType].str(t, "error"), `member "token": an array, want a string`)
	require.True(t, strings.HasSuffix(outcomes[sBig].str(t, "error"), "limit 2048"), outcomes[sBig].str(t, "error"))
	require.Equal(t, tok, outcomes[s1].str(t, "token"))
	require.NotEmpty(t, outcomes[sEx].str(t, "time"))
	require.NotEmpty(t, outcomes[sLong].str(t, "time"))

	require.Equal(t, float64(len(wants)), w.metric("apns_worker_jobs_received_total"))
	require.False(t, w.exited(), "the worker keeps running")
	nc.Close() // the embedded server goes away with the worker
	require.Equal(t, 0, w.stop(30*time.Second), "exit code")
	require.Contains(t, w.log.String(), `"msg":"stopped"`)
}

// base64Of is s as a JSON string of its base64, as events carry raw jobs.
func base64Of(s string) string {
	b, _ := json.Marshal([]byte(s))
	return string(b)
}

// TestReadmeMaxPayloadHTTP2: APNS_WORKER_APNS_MAX_PAYLOAD ("Largest payload
// in bytes, in every mode") holds in http2 mode: a payload over it is
// rejected as PayloadTooLarge naming the limit and never reaches APNs;
// one at the limit is delivered.
func TestReadmeMaxPayloadHTTP2(t *testing.T) {
	srv := startNATS(t)
	h2 := startHTTP2(t)
	env := http2Env(t, srv.ClientURL(), h2)
	env["APNS_WORKER_APNS_MAX_PAYLOAD"] = "256"
	w := startWorker(t, "max-payload", env)
	_, js := connect(t, srv.ClientURL())

	sized := func(n int) string {
		const head, tail = `{"aps":{},"x":"`, `"}`
		return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
	}
	fits, tooBig := token(0x71, 1), token(0x71, 2)
	publishRaw(t, js, []byte(`{"id":"fits","token":"`+fits.String()+`","payload":`+sized(256)+`}`))
	seq := publishRaw(t, js, []byte(`{"id":"too-big","token":"`+tooBig.String()+`","payload":`+sized(257)+`}`))
	waitDrained(t, js, 30*time.Second)

	require.Equal(t, 1, h2.AcceptedFor(fits))
	require.Equal(t, 0, h2.AcceptedFor(tooBig), "a payload over the limit never reaches APNs")
	evs := readEvents[consumer.RejectionEvent](t, js, subjRejected)
	require.Len(t, evs, 1)
	require.Equal(t, seq, evs[0].Seq)
	require.True(t, evs[0].Malformed)
	require.Equal(t, apns.ReasonPayloadTooLarge, evs[0].Reason)
	require.True(t, strings.HasSuffix(evs[0].Error, "limit 256"), evs[0].Error)
	require.Equal(t, 0, w.stop(30*time.Second), "exit code")
}

// withoutStored drops the last part of an event's Nats-Msg-Id, the time
// the jobs stream stored the job (Unix nanoseconds), after checking it is
// one.
func withoutStored(t *testing.T, msgID string) string {
	t.Helper()
	i := strings.LastIndexByte(msgID, ':')
	require.Positive(t, i, msgID)
	stored, err := strconv.ParseInt(msgID[i+1:], 10, 64)
	require.NoError(t, err, msgID)
	require.WithinDuration(t, time.Now(), time.Unix(0, stored), time.Minute, msgID)
	return msgID[:i]
}
