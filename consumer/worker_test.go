package consumer

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
)

const payload = `{"aps":{"alert":"hi"}}`

// tokHex returns a distinct 32-byte token in hex.
func tokHex(i int) string {
	var b [32]byte
	binary.BigEndian.PutUint64(b[24:], uint64(i)+1)
	b[0] = 0xab
	return hex.EncodeToString(b[:])
}

func testOptions() Options {
	return Options{
		Protocol:     "http2",
		AckWait:      5 * time.Second,
		MaxDeliver:   3,
		Backoff:      []time.Duration{10 * time.Millisecond},
		DrainTimeout: 2 * time.Second,
		EventTimeout: 2 * time.Second,
		MaxInFlight:  1000,
	}
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func publishJobs(t *testing.T, js jetstream.JetStream, n int, tok func(i int) string) {
	t.Helper()
	ctx := ctxT(t)
	for i := range n {
		_, err := PublishJob(ctx, js, "apns.jobs", Job{ID: fmt.Sprintf("job-%d", i), Token: tok(i), Payload: json.RawMessage(payload)})
		require.NoError(t, err)
	}
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name, subject string) uint64 {
	t.Helper()
	s, err := js.Stream(ctxT(t), name)
	require.NoError(t, err)
	if subject == "" {
		info, err := s.Info(ctxT(t))
		require.NoError(t, err)
		return info.State.Msgs
	}
	info, err := s.Info(ctxT(t), jetstream.WithSubjectFilter(subject))
	require.NoError(t, err)
	return info.State.Subjects[subject]
}

func consumerInfo(t *testing.T, js jetstream.JetStream) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := js.Consumer(ctxT(t), "APNS_JOBS", "apns-worker")
	require.NoError(t, err)
	info, err := c.Info(ctxT(t))
	require.NoError(t, err)
	return info
}

// events reads every event stored on subject.
func events[T any](t *testing.T, js jetstream.JetStream, subject string) []T {
	t.Helper()
	want := streamMsgs(t, js, "APNS_EVENTS", subject)
	if want == 0 {
		return nil
	}
	c, err := js.OrderedConsumer(ctxT(t), "APNS_EVENTS", jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	require.NoError(t, err)
	var out []T
	for uint64(len(out)) < want {
		batch, err := c.Fetch(int(want)-len(out), jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		got := 0
		for m := range batch.Messages() {
			var ev T
			require.NoError(t, json.Unmarshal(m.Data(), &ev), "%s", m.Data())
			out = append(out, ev)
			got++
		}
		require.NotZero(t, got, "no event arrived")
	}
	return out
}

func TestDelivered(t *testing.T) {
	for _, receipts := range []bool{false, true} {
		t.Run(fmt.Sprintf("receipts=%v", receipts), func(t *testing.T) {
			js, _ := startJS(t)
			opts := testOptions()
			opts.Receipts = receipts
			reg := prometheus.NewRegistry()
			m, err := NewMetrics(reg)
			require.NoError(t, err)
			opts.Metrics = m
			r := startWorker(t, js, opts, newFakeEngine(nil))
			const n = 200
			publishJobs(t, js, n, tokHex)

			require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
				10*time.Second, 10*time.Millisecond, "jobs stream not emptied")
			require.NoError(t, r.stop())
			require.Equal(t, float64(n), value(t, m.received))
			require.Equal(t, float64(n), value(t, m.delivered))
			require.Equal(t, float64(0), value(t, m.inFlight))
			require.Zero(t, consumerInfo(t, js).NumAckPending)
			if receipts {
				rs := events[ReceiptEvent](t, js, "apns.events.delivered")
				require.Len(t, rs, n)
				require.Equal(t, tokHex(0), rs[0].Token)
				require.Equal(t, "job-0", rs[0].JobID)
			} else {
				require.Zero(t, streamMsgs(t, js, "APNS_EVENTS", ""))
			}
		})
	}
}

// gatedJS holds the PubAcks of async publishes until the test opens the
// gate, and can fail the first n of them.
type gatedJS struct {
	jetstream.JetStream
	gate     chan struct{}
	mu       sync.Mutex
	failNext int
}

type gatedFuture struct {
	jetstream.PubAckFuture
	ok   chan *jetstream.PubAck
	errc chan error
}

func (f *gatedFuture) Ok() <-chan *jetstream.PubAck { return f.ok }
func (f *gatedFuture) Err() <-chan error            { return f.errc }

func (g *gatedJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	real, err := g.JetStream.PublishMsgAsync(m, opts...)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	fail := g.failNext > 0
	if fail {
		g.failNext--
	}
	g.mu.Unlock()
	f := &gatedFuture{PubAckFuture: real, ok: make(chan *jetstream.PubAck, 1), errc: make(chan error, 1)}
	go func() {
		<-g.gate
		select {
		case a := <-real.Ok():
			if fail {
				f.errc <- errors.New("test: PubAck lost")
				return
			}
			f.ok <- a
		case err := <-real.Err():
			f.errc <- err
		}
	}()
	return f, nil
}

func TestRejected(t *testing.T) {
	js, _ := startJS(t)
	gjs := &gatedJS{JetStream: js, gate: make(chan struct{})}
	ts := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	rejections := map[string]*apns.RejectionError{
		tokHex(0): {HTTPStatus: 410, Reason: "Unregistered", Timestamp: ts},
		tokHex(1): {ID: 7, Status: apns.StatusInvalidToken, Reason: "InvalidToken"},
		tokHex(2): {HTTPStatus: 400, Reason: "BadTopic"},
	}
	eng := newFakeEngine(func(n *apns.Notification, _ int) (error, bool) {
		if rej, ok := rejections[n.Token.String()]; ok {
			return rej, false
		}
		return nil, false
	})
	opts := testOptions()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	require.NoError(t, err)
	opts.Metrics = m
	startWorker(t, gjs, opts, eng)
	publishJobs(t, js, 4, tokHex) // job-3 is delivered

	// Every outcome is in, the events are stored, but no PubAck reached
	// the worker: the rejected jobs must still be un-acked.
	require.Eventually(t, func() bool {
		return streamMsgs(t, js, "APNS_EVENTS", "apns.events.rejected") == 3 &&
			streamMsgs(t, js, "APNS_JOBS", "") == 3
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, 3, consumerInfo(t, js).NumAckPending)

	close(gjs.gate)
	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		10*time.Second, 10*time.Millisecond)

	rej := events[RejectionEvent](t, js, "apns.events.rejected")
	require.Len(t, rej, 3)
	byJob := map[string]RejectionEvent{}
	for _, e := range rej {
		byJob[e.JobID] = e
	}
	require.Equal(t, 410, byJob["job-0"].HTTPStatus)
	require.Equal(t, "Unregistered", byJob["job-0"].Reason)
	require.True(t, ts.Equal(byJob["job-0"].Timestamp))
	require.Equal(t, int(apns.StatusInvalidToken), byJob["job-1"].Status)
	require.Equal(t, "InvalidToken", byJob["job-1"].Reason)
	require.Equal(t, "BadTopic", byJob["job-2"].Reason)
	for id, e := range byJob {
		require.Equal(t, "http2", e.Protocol, id)
		require.NotZero(t, e.Seq, id)
		require.False(t, e.Malformed, id)
		require.NotEmpty(t, e.Error, id)
		var j Job
		require.NoError(t, json.Unmarshal(e.Job, &j), id)
		require.Equal(t, id, j.ID)
		require.Equal(t, e.Token, j.Token)
	}

	bad := events[BadTokenEvent](t, js, "apns.events.badtokens")
	require.Len(t, bad, 2)
	toks := map[string]BadTokenEvent{}
	for _, b := range bad {
		require.Equal(t, SourceRejection, b.Source)
		toks[b.Token] = b
	}
	require.Contains(t, toks, tokHex(0))
	require.Contains(t, toks, tokHex(1))
	require.True(t, ts.Equal(toks[tokHex(0)].Time), "410 timestamp is the bad token's time")
	require.Equal(t, 1.0, value(t, m.rejected.WithLabelValues("Unregistered")))
	require.Equal(t, 1.0, value(t, m.rejected.WithLabelValues("BadTopic")))
}

func TestRejectionEventNotDoubledOnRedelivery(t *testing.T) {
	js, _ := startJS(t)
	// Every PubAck of the first attempt is "lost" (the event is stored):
	// the worker publishes it again maxEventRetries times, then naks the
	// job; it comes back, is rejected again and publishes the same event
	// again. The Nats-Msg-Id keeps it one event.
	gjs := &gatedJS{JetStream: js, gate: make(chan struct{}), failNext: 2 * (1 + maxEventRetries)} // two events an attempt
	close(gjs.gate)
	eng := newFakeEngine(func(*apns.Notification, int) (error, bool) {
		return &apns.RejectionError{HTTPStatus: 400, Reason: "BadDeviceToken"}, false
	})
	opts := testOptions()
	opts.eventRetryBase = time.Millisecond
	startWorker(t, gjs, opts, eng)
	publishJobs(t, js, 1, tokHex)

	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		10*time.Second, 10*time.Millisecond)
	require.Equal(t, 2, eng.sent(tokHex(0)), "the job was redelivered once")
	require.Len(t, events[RejectionEvent](t, js, "apns.events.rejected"), 1)
	require.Len(t, events[BadTokenEvent](t, js, "apns.events.badtokens"), 1)
}

// TestLostPubAckPublishedAgain: a lost PubAck (a leader election, say) is
// retried by the worker itself: the job is not naked, the engine sees it
// once, and the event is stored once.
func TestLostPubAckPublishedAgain(t *testing.T) {
	js, _ := startJS(t)
	gjs := &gatedJS{JetStream: js, gate: make(chan struct{}), failNext: maxEventRetries}
	close(gjs.gate)
	eng := newFakeEngine(func(*apns.Notification, int) (error, bool) {
		return &apns.RejectionError{HTTPStatus: 400, Reason: "BadTopic"}, false
	})
	opts := testOptions()
	opts.eventRetryBase = time.Millisecond
	startWorker(t, gjs, opts, eng)
	publishJobs(t, js, 1, tokHex)

	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		10*time.Second, 10*time.Millisecond)
	require.Equal(t, 1, eng.sent(tokHex(0)), "not naked")
	require.Equal(t, uint64(1), consumerInfo(t, js).Delivered.Consumer)
	require.Len(t, events[RejectionEvent](t, js, "apns.events.rejected"), 1)
}

func TestFailedThenRetried(t *testing.T) {
	js, _ := startJS(t)
	temp := errors.New("test: connection reset")
	eng := newFakeEngine(func(n *apns.Notification, attempt int) (error, bool) {
		switch n.Token.String() {
		case tokHex(0): // fails once, then is delivered
			if attempt == 1 {
				return temp, false
			}
			return nil, false
		default: // always fails: dead-lettered at MaxDeliver
			return fmt.Errorf("%w: %w", apns.ErrRetriesExhausted, temp), false
		}
	})
	opts := testOptions() // MaxDeliver 3
	startWorker(t, js, opts, eng)
	publishJobs(t, js, 2, tokHex)

	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		10*time.Second, 10*time.Millisecond)
	require.Equal(t, 2, eng.sent(tokHex(0)))
	require.Equal(t, 3, eng.sent(tokHex(1)))
	dl := events[DeadLetterEvent](t, js, "apns.events.deadletter")
	require.Len(t, dl, 1)
	require.Equal(t, "job-1", dl[0].JobID)
	require.Equal(t, uint64(3), dl[0].Deliveries)
	require.Contains(t, dl[0].Error, "connection reset")
	require.Equal(t, ReasonMaxDeliver, dl[0].Reason)
	var j Job
	require.NoError(t, json.Unmarshal(dl[0].Job, &j))
	require.Equal(t, tokHex(1), j.Token)
	require.Zero(t, streamMsgs(t, js, "APNS_EVENTS", "apns.events.rejected"))
}

// TestHandBacksDoNotShortenRetries: JetStream counts every delivery,
// also those that were no attempt (here two hand-backs, as at a stop while
// APNs is down), so a job reaches MaxDeliver (3) at its first failure.
// It is dead-lettered only once it has been in the stream as long as
// MaxDeliver failed attempts and their back-off take (2 × 1 s): not at
// that first failure.
func TestHandBacksDoNotShortenRetries(t *testing.T) {
	js, _ := startJS(t)
	opts := testOptions()
	opts.Backoff = []time.Duration{time.Second}
	w, err := New(js, opts) // the streams and the durable
	require.NoError(t, err)
	require.NoError(t, w.Shutdown(context.Background(), nil))
	publishJobs(t, js, 1, tokHex)
	cons, err := js.Consumer(ctxT(t), "APNS_JOBS", "apns-worker")
	require.NoError(t, err)
	for range 2 { // handed back unsent
		b, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		m, ok := <-b.Messages()
		require.True(t, ok, "no delivery: %v", b.Error())
		require.NoError(t, m.Nak())
	}

	eng := newFakeEngine(func(*apns.Notification, int) (error, bool) {
		return fmt.Errorf("%w: test: 503", apns.ErrRetriesExhausted), false
	})
	startWorker(t, js, opts, eng)
	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		20*time.Second, 10*time.Millisecond)
	dl := events[DeadLetterEvent](t, js, "apns.events.deadletter")
	require.Len(t, dl, 1)
	require.GreaterOrEqual(t, eng.sent(tokHex(0)), 2, "dead-lettered at its first failure")
	require.Greater(t, dl[0].Deliveries, uint64(opts.MaxDeliver))
}

func TestCredentialsErrorDoesNotDeadLetter(t *testing.T) {
	js, _ := startJS(t)
	eng := newFakeEngine(func(_ *apns.Notification, attempt int) (error, bool) {
		if attempt <= 4 { // more than MaxDeliver
			return fmt.Errorf("%w: 403 InvalidProviderToken", apns.ErrCredentials), false
		}
		return nil, false
	})
	startWorker(t, js, testOptions(), eng)
	publishJobs(t, js, 1, tokHex)
	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		10*time.Second, 10*time.Millisecond)
	require.Equal(t, 5, eng.sent(tokHex(0)))
	require.Zero(t, streamMsgs(t, js, "APNS_EVENTS", ""))
}

// TestMalformedJobs: every job of the contract's table and the hostile
// producer's, published between good jobs, gets exactly one rejection
// event with its reason and bytes, none reaches the engine, and the good
// jobs around them are delivered once.
func TestMalformedJobs(t *testing.T) {
	js, _ := startJS(t)
	eng := newFakeEngine(nil)
	opts := testOptions()
	opts.DefaultTopic = "com.example.app"
	startWorker(t, js, opts, eng)

	tests := malformedCases()
	tests = append(tests,
		malformedCase{"id kept", `{"id":"p-str","token":"` + tokHex(7) + `","payload":` + payload + `,"priority":"10"}`, ReasonMalformedJob},
		malformedCase{"id after the error kept", `{"token":7,"id":"late","payload":` + payload + `}`, ReasonMalformedJob},
		malformedCase{"huge id", `{"id":"` + strings.Repeat("i", 800<<10) + `","token":"` + tokHex(8) + `","payload":{"aps":"x"}}`, apns.ReasonApsNotObject})
	ctx := ctxT(t)
	good := 0
	for i, tt := range tests {
		m := &nats.Msg{Subject: "apns.jobs", Data: []byte(tt.data)}
		if i == 2 { // an id in the header only names the job in its event
			m.Header = nats.Header{jetstream.MsgIDHeader: []string{"hdr-id"}}
		}
		_, err := js.PublishMsg(ctx, m)
		require.NoError(t, err, tt.name)
		if i%10 == 0 { // good jobs around them are delivered once
			_, err := PublishJob(ctx, js, "apns.jobs", Job{ID: fmt.Sprintf("good-%d", i), Token: tokHex(1000 + i), Payload: json.RawMessage(payload)})
			require.NoError(t, err)
			good++
		}
	}

	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		20*time.Second, 10*time.Millisecond)
	require.Equal(t, good, eng.sentTotal(), "only the good jobs reached the engine")
	for i := range tests {
		if i%10 == 0 {
			require.Equal(t, 1, eng.sent(tokHex(1000+i)))
		}
	}
	evs := events[RejectionEvent](t, js, "apns.events.rejected")
	require.Len(t, evs, len(tests), "one event per malformed job")
	bySeq := map[uint64]RejectionEvent{}
	for _, e := range evs {
		bySeq[e.Seq] = e
	}
	seq := uint64(0)
	for i, tt := range tests {
		seq++
		e, ok := bySeq[seq]
		require.True(t, ok, "%s: no event for seq %d", tt.name, seq)
		if i%10 == 0 {
			seq++ // the good job after it
		}
		t.Run(tt.name, func(t *testing.T) {
			require.True(t, e.Malformed)
			require.Equal(t, tt.reason, e.Reason, e.Error)
			require.Equal(t, "http2", e.Protocol)
			require.NotEmpty(t, e.Error)
			switch tt.name {
			case "broken json":
				require.Equal(t, "hdr-id", e.JobID)
			case "id kept": // the job did not decode, its id did
				require.Equal(t, "p-str", e.JobID)
			case "id after the error kept":
				require.Equal(t, "late", e.JobID)
			case "huge id": // cut, so that the event fits
				require.Equal(t, strings.Repeat("i", MaxEventJobID), e.JobID)
			}
			switch {
			case len(tt.data) > MaxEventJob:
				require.True(t, e.JobTruncated)
				require.Equal(t, len(tt.data), e.JobSize)
			case e.Job != nil:
				require.Equal(t, jsonValue(t, []byte(tt.data)), jsonValue(t, e.Job), "the event carries the job")
			default:
				require.Equal(t, tt.data, string(e.JobRaw), "the event carries the raw job")
			}
		})
	}
}

func TestShutdownLeavesNothingUnacked(t *testing.T) {
	js, _ := startJS(t)
	const n = 300
	// The engine delivers even tokens and holds odd ones until it closes.
	eng := newFakeEngine(func(nt *apns.Notification, _ int) (error, bool) {
		return nil, nt.Token[31]%2 == 1
	})
	opts := testOptions()
	opts.AckWait = 30 * time.Second
	r := startWorker(t, js, opts, eng)
	publishJobs(t, js, n, tokHex)
	// Every job reached the engine before the stop: one still in the pull
	// buffer or on the wire when the stop comes is naked by the drain, not
	// delivered (then more than n/2 would be left below).
	require.Eventually(t, func() bool { return eng.heldCount() == n/2 && eng.sentTotal() == n },
		10*time.Second, 5*time.Millisecond)
	require.NoError(t, r.stop())
	require.Zero(t, r.w.InFlight())

	// The server applies acks asynchronously after the flush.
	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == n/2 },
		5*time.Second, 5*time.Millisecond)

	// A restart finishes the rest at once: they were naked, not left to
	// wait for AckWait (30 s).
	eng2 := newFakeEngine(nil)
	startWorker(t, js, opts, eng2)
	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		10*time.Second, 10*time.Millisecond)
	require.Zero(t, consumerInfo(t, js).NumAckPending)
	require.Zero(t, streamMsgs(t, js, "APNS_EVENTS", ""), "naked at shutdown is not a failure")
}

// TestShutdownWhileAPNsSilent: an engine whose APNs never answers holds
// its jobs until Close gives up. Shutdown gives it all but a reserve of
// its time, then the jobs it failed are naked and the acks flushed within
// the deadline, and that is no error: the jobs are tried again at once by
// the next worker, not after AckWait.
func TestShutdownWhileAPNsSilent(t *testing.T) {
	js, _ := startJS(t)
	const n = 5
	eng := newFakeEngine(func(*apns.Notification, int) (error, bool) { return nil, true })
	eng.closeWaits = true
	opts := testOptions()
	opts.AckWait = 30 * time.Second
	w, err := New(js, opts)
	require.NoError(t, err)
	eng.out = w.HandleOutcome
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(ctx, eng) }()
	publishJobs(t, js, n, tokHex)
	require.Eventually(t, func() bool { return eng.heldCount() == n }, 10*time.Second, 5*time.Millisecond)

	cancel()
	require.NoError(t, <-runErr)
	const grace = time.Second
	sctx, scancel := context.WithTimeout(context.Background(), grace)
	defer scancel()
	start := time.Now()
	require.NoError(t, w.Shutdown(sctx, eng), "every job naked in time: a clean stop")
	require.Less(t, time.Since(start), grace, "within the deadline")
	require.Less(t, time.Since(start), grace-settleReserve(grace)+200*time.Millisecond, "the engine gave up at its own deadline, before the reserve")
	require.Zero(t, w.InFlight())

	eng2 := newFakeEngine(nil)
	startWorker(t, js, opts, eng2)
	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		10*time.Second, 10*time.Millisecond, "naked, not left for AckWait (30 s)")
	require.Zero(t, streamMsgs(t, js, "APNS_EVENTS", ""), "naked at shutdown is not a failure")
}

// TestSettleReserve: a quarter of what is left, between 100 ms and 2 s.
func TestSettleReserve(t *testing.T) {
	for left, want := range map[time.Duration]time.Duration{
		0: 100 * time.Millisecond, 200 * time.Millisecond: 100 * time.Millisecond,
		time.Second: 250 * time.Millisecond, 30 * time.Second: 2 * time.Second,
	} {
		require.Equal(t, want, settleReserve(left), "left %s", left)
	}
}

func TestKeepAliveBeyondAckWait(t *testing.T) {
	js, _ := startJS(t)
	eng := newFakeEngine(func(*apns.Notification, int) (error, bool) { return nil, true })
	opts := testOptions()
	opts.AckWait = time.Second
	startWorker(t, js, opts, eng)
	publishJobs(t, js, 3, tokHex)
	require.Eventually(t, func() bool { return eng.heldCount() == 3 }, 5*time.Second, 5*time.Millisecond)
	// Hold the jobs for 2.5 AckWaits: InProgress must keep them ours.
	held := time.Now()
	require.Eventually(t, func() bool { return time.Since(held) > 2500*time.Millisecond }, 5*time.Second, 50*time.Millisecond)
	info := consumerInfo(t, js)
	require.Zero(t, info.NumRedelivered)
	require.Equal(t, 3, info.NumAckPending)
	eng.release(nil)
	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		5*time.Second, 10*time.Millisecond)
	for i := range 3 {
		require.Equal(t, 1, eng.sent(tokHex(i)))
	}
}

func TestPublishBadTokens(t *testing.T) {
	js, _ := startJS(t)
	w, err := New(js, testOptions())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, w.Shutdown(context.Background(), nil)) })
	t0 := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	tok := func(i int) apns.Token { b, _ := hex.DecodeString(tokHex(i)); return b }
	batch := []BadToken{{tok(0), t0}, {tok(1), t0}, {tok(0), t0.Add(time.Hour)}}
	require.NoError(t, w.PublishBadTokens(ctxT(t), batch))
	require.NoError(t, w.PublishBadTokens(ctxT(t), batch[:2])) // the poller sees them again
	evs := events[BadTokenEvent](t, js, "apns.events.badtokens")
	require.Len(t, evs, 3)
	require.Equal(t, BadTokenEvent{Token: tokHex(0), Time: t0, Source: SourceFeedback, Reason: "Feedback"}, evs[0])
}

func TestNewValidatesOptions(t *testing.T) {
	js, _ := startJS(t)
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"overlapping subjects", Options{JobsSubject: "apns", EventsSubject: "apns.events"}, "overlaps"},
		{"wildcard subject", Options{JobsSubject: "apns.*"}, "literal"},
		{"short ack wait", Options{AckWait: time.Millisecond}, "AckWait"},
		{"bad backoff", Options{Backoff: []time.Duration{time.Second, -1}}, "Backoff[1]"},
		{"negative replicas", Options{Replicas: -1}, "Replicas"},
		{"tiny probe interval", Options{CredentialsProbeInterval: time.Millisecond}, "CredentialsProbeInterval"},
		{"negative probe interval", Options{CredentialsProbeInterval: -time.Second}, "CredentialsProbeInterval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(js, tt.opts)
			require.ErrorIs(t, err, ErrInvalidOption)
			require.ErrorContains(t, err, tt.want)
		})
	}
}

func TestEngineCollector(t *testing.T) {
	eng := newFakeEngine(nil)
	t.Cleanup(func() { _ = eng.Close(context.Background()) })
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(NewEngineCollector(eng)))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	require.Equal(t, map[string]float64{
		"apns_engine_connections": 1, "apns_engine_connected": 1, "apns_engine_in_flight": 0,
		"apns_engine_reconnects_total": 0, "apns_engine_credentials_ok": 1,
	}, got)
}

// value reads a counter's or gauge's value.
func value(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	return m.GetCounter().GetValue() + m.GetGauge().GetValue()
}

func TestRunStopsWhenTheEngineCloses(t *testing.T) {
	js, _ := startJS(t)
	w, err := New(js, testOptions())
	require.NoError(t, err)
	eng := newFakeEngine(nil)
	eng.out = w.HandleOutcome
	require.NoError(t, eng.Close(context.Background())) // closed under the worker
	errc := make(chan error, 1)
	go func() { errc <- w.Run(context.Background(), eng) }()
	publishJobs(t, js, 1, tokHex)
	select {
	case err := <-errc:
		require.ErrorIs(t, err, apns.ErrClosed)
	case <-ctxT(t).Done():
		t.Fatal("Run did not return")
	}
	require.NoError(t, w.Shutdown(ctxT(t), eng))
	require.Zero(t, w.InFlight())
	require.Equal(t, uint64(1), streamMsgs(t, js, "APNS_JOBS", ""), "naked, not lost")
	require.Zero(t, streamMsgs(t, js, "APNS_EVENTS", ""))
}

func TestDrainNaksWhatTheEngineDoesNotTake(t *testing.T) {
	js, _ := startJS(t)
	eng := newFakeEngine(nil)
	eng.gate = make(chan struct{}) // never opens: the engine is stuck
	opts := testOptions()
	opts.AckWait = 30 * time.Second
	opts.DrainTimeout = 300 * time.Millisecond
	r := startWorker(t, js, opts, eng)
	const n = 20
	publishJobs(t, js, n, tokHex)
	require.Eventually(t, func() bool { return eng.blocked.Load() == 1 }, 5*time.Second, 5*time.Millisecond)

	stopped := time.Now()
	require.NoError(t, r.stop())
	require.Less(t, time.Since(stopped), 5*time.Second, "Run gives up on the engine after DrainTimeout")
	require.Zero(t, r.w.InFlight())

	// Every job comes back at once to a new worker: naked, not left for
	// AckWait.
	eng2 := newFakeEngine(nil)
	startWorker(t, js, opts, eng2)
	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		10*time.Second, 10*time.Millisecond)
	for i := range n {
		require.Equal(t, 1, eng2.sent(tokHex(i)), i)
	}
}

// faultyEngine reports answers that were not APNs' verdicts.
type faultyEngine struct{ *fakeEngine }

func (faultyEngine) Stats() apns.Stats {
	return apns.Stats{Conns: 1, Connected: 1, Faults: map[int]uint64{404: 3, 502: 1}}
}

func TestEngineCollectorFaults(t *testing.T) {
	eng := newFakeEngine(nil)
	t.Cleanup(func() { _ = eng.Close(context.Background()) })
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(NewEngineCollector(faultyEngine{eng})))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "apns_engine_faults_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	require.Equal(t, map[string]float64{"404": 3, "502": 1}, got)
}
