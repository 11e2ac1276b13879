package consumer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
)

// credsEngine fails Send synchronously with ErrCredentials and reports the
// error in Stats, as HTTP2Engine does once APNs refused the credentials.
type credsEngine struct {
	*fakeEngine
	sends atomic.Int64
}

var errTestCreds = fmt.Errorf("%w: APNs answered 403 InvalidProviderToken", apns.ErrCredentials)

func (e *credsEngine) Send(context.Context, *apns.Notification, any) error {
	e.sends.Add(1)
	return errTestCreds
}

func (e *credsEngine) Stats() apns.Stats {
	s := e.fakeEngine.Stats()
	s.CredentialsErr = errTestCreds
	return s
}

// TestCredentialsRefusedNoHotLoop: jobs APNs cannot take because the
// credentials are refused are held, not redelivered at once (58 000
// redeliveries/s before the first fix) nor naked every back-off: one probe
// reaches Send every CredentialsProbeInterval, and on shutdown the held
// jobs are naked without a dead letter.
func TestCredentialsRefusedNoHotLoop(t *testing.T) {
	js, _ := startJS(t)
	opts := testOptions()
	opts.Backoff = []time.Duration{time.Second, 5 * time.Minute}
	opts.CredentialsProbeInterval = 200 * time.Millisecond
	w, err := New(js, opts)
	require.NoError(t, err)
	eng := &credsEngine{fakeEngine: newFakeEngine(nil)}
	eng.out = w.HandleOutcome
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx, eng) }()
	const n = 5
	publishJobs(t, js, n, tokHex)

	// Every job is received once and held; over the next second none is
	// naked or redelivered, and Send sees only the probes.
	require.Eventually(t, func() bool { return consumerInfo(t, js).Delivered.Consumer >= n && w.InFlight() == n },
		5*time.Second, 5*time.Millisecond)
	start := time.Now()
	require.Eventually(t, func() bool { return time.Since(start) > time.Second }, 3*time.Second, 50*time.Millisecond)
	ci := consumerInfo(t, js)
	require.Equal(t, uint64(n), ci.Delivered.Consumer, "redelivered")
	require.Zero(t, ci.NumRedelivered)
	require.Equal(t, n, ci.NumAckPending, "held, not naked")
	require.Equal(t, n, w.InFlight())
	elapsed := time.Since(start) + time.Second
	require.LessOrEqual(t, eng.sends.Load(), int64(2+elapsed/opts.CredentialsProbeInterval), "one probe per interval")
	require.GreaterOrEqual(t, eng.sends.Load(), int64(2), "probed")

	cancel()
	require.NoError(t, <-errc)
	require.NoError(t, w.Shutdown(ctxT(t), eng))
	require.Equal(t, uint64(n), streamMsgs(t, js, "APNS_JOBS", ""))
	require.Zero(t, streamMsgs(t, js, "APNS_EVENTS", ""), "no dead letter")
}

// recoveringEngine refuses the credentials, as HTTP2Engine does after a
// 403, until refusals probes have reached Send; the next probe goes
// through and clears the refusal, as a probe APNs accepts does.
type recoveringEngine struct {
	*fakeEngine
	refusals int64
	sends    atomic.Int64
	ok       atomic.Bool
}

func (e *recoveringEngine) Send(ctx context.Context, n *apns.Notification, ref any) error {
	if !e.ok.Load() && e.sends.Add(1) <= e.refusals {
		return errTestCreds
	}
	e.ok.Store(true)
	return e.fakeEngine.Send(ctx, n, ref)
}

func (e *recoveringEngine) Stats() apns.Stats {
	s := e.fakeEngine.Stats()
	if !e.ok.Load() {
		s.CredentialsErr = errTestCreds
	}
	return s
}

// TestCredentialsRecoverWithoutRestart: once the credentials work again a
// probe clears the refusal and every job is delivered, without a restart
// and without a redelivery (the worker used to stop calling Send for good
// after one refusal, naking every job every 5 minutes forever).
func TestCredentialsRecoverWithoutRestart(t *testing.T) {
	js, _ := startJS(t)
	eng := &recoveringEngine{fakeEngine: newFakeEngine(nil), refusals: 3}
	opts := testOptions()
	opts.Backoff = []time.Duration{5 * time.Minute}
	opts.CredentialsProbeInterval = 100 * time.Millisecond
	w, err := New(js, opts)
	require.NoError(t, err)
	eng.out = w.HandleOutcome
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx, eng) }()
	const n = 20
	publishJobs(t, js, n, tokHex)

	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		10*time.Second, 10*time.Millisecond, "every job delivered once the credentials work")
	require.Equal(t, eng.refusals+1, eng.sends.Load(), "probes until the credentials worked")
	for i := range n {
		require.Equal(t, 1, eng.sent(tokHex(i)), "job %d sent once", i)
	}
	ci := consumerInfo(t, js)
	require.Equal(t, uint64(n), ci.Delivered.Consumer, "no job naked or redelivered")
	require.Zero(t, ci.NumRedelivered)

	cancel()
	require.NoError(t, <-errc)
	require.NoError(t, w.Shutdown(ctxT(t), eng))
	require.Zero(t, streamMsgs(t, js, "APNS_EVENTS", ""), "no dead letter")
}

// TestExpiredDeadLetteredAtOnce: an outcome failed with apns.ErrExpired is
// final: one dead letter (reason Expired) and Term, no nak schedule.
func TestExpiredDeadLetteredAtOnce(t *testing.T) {
	js, _ := startJS(t)
	eng := newFakeEngine(func(*apns.Notification, int) (error, bool) {
		return fmt.Errorf("%w: expiration 2026-11-27T12:00:00Z", apns.ErrExpired), false
	})
	opts := testOptions()
	opts.MaxDeliver = 5
	startWorker(t, js, opts, eng)
	publishJobs(t, js, 1, tokHex)

	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		10*time.Second, 10*time.Millisecond)
	require.Equal(t, 1, eng.sent(tokHex(0)), "not retried")
	dl := events[DeadLetterEvent](t, js, "apns.events.deadletter")
	require.Len(t, dl, 1)
	require.Equal(t, "job-0", dl[0].JobID)
	require.Equal(t, ReasonExpired, dl[0].Reason)
	require.Equal(t, uint64(1), dl[0].Deliveries)
	require.Contains(t, dl[0].Error, "expired")
	require.Zero(t, consumerInfo(t, js).NumRedelivered)
}

// TestOversizedJobEvent: a 900 KiB job that is not JSON gives a rejection
// event carrying only its first MaxEventJob bytes, its size and hash, and
// is terminated once (it poisoned the stream before: its event exceeded
// the server's max_payload and the job was naked forever).
func TestOversizedJobEvent(t *testing.T) {
	js, _ := startJS(t)
	eng := newFakeEngine(nil)
	startWorker(t, js, testOptions(), eng)
	data := bytes.Repeat([]byte{'x'}, 900<<10)
	_, err := js.Publish(ctxT(t), "apns.jobs", data)
	require.NoError(t, err)

	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		10*time.Second, 10*time.Millisecond)
	require.Equal(t, uint64(1), consumerInfo(t, js).Delivered.Consumer, "delivered once")
	evs := events[RejectionEvent](t, js, "apns.events.rejected")
	require.Len(t, evs, 1)
	e := evs[0]
	require.True(t, e.Malformed)
	require.True(t, e.JobTruncated)
	require.Nil(t, e.Job)
	require.Equal(t, data[:MaxEventJob], e.JobRaw)
	require.Equal(t, len(data), e.JobSize)
	sum := sha256.Sum256(data)
	require.Equal(t, hex.EncodeToString(sum[:]), e.JobSHA256)
}

// maxPayloadJS refuses events over max bytes as nats.go does over the
// server's max_payload or, with pubAck, as the stream does over its
// maximum message size (an API error in the PubAck).
type maxPayloadJS struct {
	jetstream.JetStream
	max    int
	pubAck bool
}

type failedFuture struct {
	jetstream.PubAckFuture
	errc chan error
}

func (f failedFuture) Ok() <-chan *jetstream.PubAck { return nil }
func (f failedFuture) Err() <-chan error            { return f.errc }

func (m *maxPayloadJS) PublishMsgAsync(msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	if len(msg.Data) > m.max {
		if !m.pubAck {
			return nil, nats.ErrMaxPayload
		}
		f := failedFuture{errc: make(chan error, 1)}
		f.errc <- &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamMessageExceedsMaximum,
			Description: "message size exceeds maximum allowed"}
		return f, nil
	}
	return m.JetStream.PublishMsgAsync(msg, opts...)
}

// TestEventOverMaxPayloadTerminates: an event the server can never take
// is published once more without the job, and the job terminated.
func TestEventOverMaxPayloadTerminates(t *testing.T) {
	for _, pubAck := range []bool{false, true} {
		t.Run(fmt.Sprintf("pubAck=%t", pubAck), func(t *testing.T) {
			js, _ := startJS(t)
			eng := newFakeEngine(nil)
			startWorker(t, &maxPayloadJS{JetStream: js, max: 2048, pubAck: pubAck}, testOptions(), eng)
			data := bytes.Repeat([]byte{'y'}, 4096)
			_, err := js.Publish(ctxT(t), "apns.jobs", data)
			require.NoError(t, err)

			require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
				10*time.Second, 10*time.Millisecond)
			require.Equal(t, uint64(1), consumerInfo(t, js).Delivered.Consumer, "terminated at once")
			evs := events[RejectionEvent](t, js, "apns.events.rejected")
			require.Len(t, evs, 1)
			require.True(t, evs[0].JobTruncated)
			require.Empty(t, evs[0].JobRaw)
			require.Equal(t, len(data), evs[0].JobSize)
		})
	}
}

// TestEventLostAtMaxDeliverRetried: a job whose event is not confirmed
// (a PubAck timeout in a leader election, say) is naked for a retry even
// at MaxDeliver: the fault is transient and the job safe in the stream.
// It used to be terminated with an event without its bytes: the job lost.
func TestEventLostAtMaxDeliverRetried(t *testing.T) {
	js, _ := startJS(t)
	// MaxDeliver + 1 attempts, each publishing 1 + maxEventRetries times.
	gjs := &gatedJS{JetStream: js, gate: make(chan struct{}), failNext: 4 * (1 + maxEventRetries)}
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
	require.Equal(t, 5, eng.sent(tokHex(0)), "retried past MaxDeliver")
	evs := events[RejectionEvent](t, js, "apns.events.rejected")
	require.Len(t, evs, 1)
	require.False(t, evs[0].JobTruncated, "the event carries the job")
	require.NotEmpty(t, evs[0].Job)
	require.Equal(t, uint64(5), consumerInfo(t, js).Delivered.Consumer)
}

// TestPullBufferKeptAliveBehindBlockedSend: jobs received while Send is
// blocked are tracked at once and kept ours with InProgress; before, the
// ones in the pull buffer expired after AckWait and were redelivered (19
// of 20 redelivered, 57 duplicate sends over a 7 s stall).
func TestPullBufferKeptAliveBehindBlockedSend(t *testing.T) {
	js, _ := startJS(t)
	eng := newFakeEngine(nil)
	eng.gate = make(chan struct{})
	opts := testOptions()
	opts.AckWait = 2 * time.Second
	opts.MaxDeliver = 3
	r := startWorker(t, js, opts, eng)
	const n = 20
	publishJobs(t, js, n, tokHex)
	require.Eventually(t, func() bool { return r.w.InFlight() == n && eng.blocked.Load() == 1 },
		5*time.Second, 5*time.Millisecond, "every job received and tracked while Send is blocked")

	// The engine is stuck for 3 AckWaits.
	stalled := time.Now()
	require.Eventually(t, func() bool { return time.Since(stalled) > 6*time.Second }, 10*time.Second, 50*time.Millisecond)
	ci := consumerInfo(t, js)
	require.Zero(t, ci.NumRedelivered, "no job expired while waiting")
	require.Equal(t, n, ci.NumAckPending)
	require.Equal(t, uint64(n), ci.Delivered.Consumer)

	close(eng.gate)
	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		20*time.Second, 10*time.Millisecond)
	for i := range n {
		require.Equal(t, 1, eng.sent(tokHex(i)), "job %d sent once", i)
	}
	require.Zero(t, consumerInfo(t, js).NumRedelivered)
}

// TestSlotsBoundJobsHeld: a worker lets at most MaxInFlight jobs past
// receipt (and one more waiting for a slot); the others stay with the
// server.
func TestSlotsBoundJobsHeld(t *testing.T) {
	js, _ := startJS(t)
	eng := newFakeEngine(func(*apns.Notification, int) (error, bool) { return nil, true })
	opts := testOptions()
	opts.MaxInFlight = 5
	opts.PullMaxMessages = 2
	r := startWorker(t, js, opts, eng)
	const n = 20
	publishJobs(t, js, n, tokHex)
	require.Eventually(t, func() bool { return eng.heldCount() == 5 }, 5*time.Second, 5*time.Millisecond)
	// The engine holds 5; the handler holds (and tracks) the 6th, waiting
	// for a slot; at most the pull buffer's 2 more wait in nats.go.
	require.Eventually(t, func() bool { return r.w.InFlight() == 6 }, 5*time.Second, 5*time.Millisecond)
	require.LessOrEqual(t, consumerInfo(t, js).NumAckPending, 6+2, "MaxInFlight + 1 + the pull buffer")
	eng.release(nil)
	require.Eventually(t, func() bool {
		eng.release(nil)
		return streamMsgs(t, js, "APNS_JOBS", "") == 0
	}, 10*time.Second, 10*time.Millisecond)
	for i := range n {
		require.Equal(t, 1, eng.sent(tokHex(i)))
	}
}

type doneFuture struct {
	jetstream.PubAckFuture
	ok chan *jetstream.PubAck
}

func (f doneFuture) Ok() <-chan *jetstream.PubAck { return f.ok }
func (f doneFuture) Err() <-chan error            { return nil }

// TestAwaitEventsPastDeadline: events whose PubAcks are in are confirmed
// even if their deadline passed while they waited behind others' (the
// expired timer used to race the PubAck).
func TestAwaitEventsPastDeadline(t *testing.T) {
	js, _ := startJS(t)
	w, err := New(js, testOptions())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, w.Shutdown(context.Background(), nil)) })
	timer := time.NewTimer(time.Hour)
	for i := range 200 {
		pe := &pendingEvents{deadline: time.Now().Add(-time.Second)}
		for range 3 {
			f := doneFuture{ok: make(chan *jetstream.PubAck, 1)}
			f.ok <- &jetstream.PubAck{Stream: "APNS_EVENTS"}
			pe.futs = append(pe.futs, f)
		}
		require.NoError(t, w.awaitEvents(pe, timer), "try %d", i)
	}
}

// TestReusedJobIDGetsItsOwnEvents: a producer reusing a job id after the
// jobs stream's duplicates window publishes a new job (a new stream
// sequence); its bad-token event must not be dropped as a repeat of the
// first job's within the events stream's window.
func TestReusedJobIDGetsItsOwnEvents(t *testing.T) {
	js, _ := startJS(t)
	eng := newFakeEngine(func(*apns.Notification, int) (error, bool) {
		return &apns.RejectionError{HTTPStatus: 410, Reason: "Unregistered"}, false
	})
	opts := testOptions()
	opts.JobsDuplicates = time.Second // the events stream keeps 10 minutes
	startWorker(t, js, opts, eng)
	ctx := ctxT(t)
	_, err := PublishJob(ctx, js, "apns.jobs", Job{ID: "reused", Token: tokHex(0), Payload: json.RawMessage(payload)})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_EVENTS", "apns.events.badtokens") == 1 },
		10*time.Second, 10*time.Millisecond)

	// Past the jobs stream's window the same id is a new job.
	published := time.Now()
	require.Eventually(t, func() bool { return time.Since(published) > 1500*time.Millisecond }, 5*time.Second, 50*time.Millisecond)
	ack, err := PublishJob(ctx, js, "apns.jobs", Job{ID: "reused", Token: tokHex(1), Payload: json.RawMessage(payload)})
	require.NoError(t, err)
	require.False(t, ack.Duplicate)
	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		10*time.Second, 10*time.Millisecond)
	bad := events[BadTokenEvent](t, js, "apns.events.badtokens")
	require.Len(t, bad, 2)
	require.Equal(t, tokHex(0), bad[0].Token)
	require.Equal(t, tokHex(1), bad[1].Token)
}

func TestEventMsgID(t *testing.T) {
	const stored = 1733000000123456789
	require.Equal(t, "rejected:job-1:7:1733000000123456789", eventMsgID(KindRejected, "job-1", 7, stored))
	require.Equal(t, "badtokens:seq:7:1733000000123456789", eventMsgID(KindBadToken, "", 7, stored))
	require.Regexp(t, `^deadletter:h:[0-9a-f]{32}:7:1733000000123456789$`, eventMsgID(KindDeadLetter, "has space", 7, stored))
	require.NotEqual(t, eventMsgID(KindBadToken, "job-1", 7, stored), eventMsgID(KindBadToken, "job-1", 8, stored))
	// The jobs stream made again: sequence 7 again, stored later.
	require.NotEqual(t, eventMsgID(KindBadToken, "", 7, stored), eventMsgID(KindBadToken, "", 7, stored+1))
}

// TestEventsMaxAge: zero takes the 7-day default; negative means no limit.
func TestEventsMaxAge(t *testing.T) {
	for _, tt := range []struct {
		name string
		opt  time.Duration
		want time.Duration
	}{
		{"default", 0, 7 * 24 * time.Hour},
		{"no limit", -1, 0},
		{"one hour", time.Hour, time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			js, _ := startJS(t)
			opts := testOptions()
			opts.EventsMaxAge = tt.opt
			w, err := New(js, opts)
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, w.Shutdown(context.Background(), nil)) })
			s, err := js.Stream(ctxT(t), "APNS_EVENTS")
			require.NoError(t, err)
			info, err := s.Info(ctxT(t))
			require.NoError(t, err)
			require.Equal(t, tt.want, info.Config.MaxAge)
			require.Equal(t, 10*time.Minute, info.Config.Duplicates)
		})
	}
}

// freezeProxy forwards one loopback NATS connection; while frozen it holds
// what the server sends, so a Flush waits for its PONG.
type freezeProxy struct {
	ln     net.Listener
	mu     sync.Mutex // held while frozen
	wg     sync.WaitGroup
	connMu sync.Mutex
	conns  []net.Conn
}

func newFreezeProxy(tb testing.TB, target string) *freezeProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	p := &freezeProxy{ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				return
			}
			p.connMu.Lock()
			p.conns = append(p.conns, c, s)
			p.connMu.Unlock()
			p.wg.Add(2)
			go func() {
				defer p.wg.Done()
				_, _ = io.Copy(s, c)
				_ = s.Close()
			}()
			go func() {
				defer p.wg.Done()
				buf := make([]byte, 32<<10)
				for {
					n, err := s.Read(buf)
					if n > 0 {
						p.waitThawed()
						if _, werr := c.Write(buf[:n]); werr != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				_ = c.Close()
			}()
		}
	}()
	return p
}

// waitThawed returns once the test does not hold mu.
func (p *freezeProxy) waitThawed() {
	p.mu.Lock()
	defer p.mu.Unlock()
}

func (p *freezeProxy) close() {
	_ = p.ln.Close()
	p.connMu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.connMu.Unlock()
	p.wg.Wait()
}

// TestShutdownFlushBoundedByCtx: the ack flush at the end of Shutdown
// stops at the Shutdown ctx's deadline (it ran up to 5 s past it).
func TestShutdownFlushBoundedByCtx(t *testing.T) {
	_, nc := startJS(t)
	p := newFreezeProxy(t, strings.TrimPrefix(nc.ConnectedUrl(), "nats://"))
	nc2, err := nats.Connect("nats://"+p.ln.Addr().String(), nats.NoReconnect())
	require.NoError(t, err)
	frozen := false
	defer func() {
		if frozen {
			p.mu.Unlock()
		}
		nc2.Close()
		p.close()
	}()
	js2, err := jetstream.New(nc2)
	require.NoError(t, err)
	w, err := New(js2, testOptions())
	require.NoError(t, err)

	p.mu.Lock()
	frozen = true
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = w.Shutdown(ctx, nil)
	elapsed := time.Since(start)
	require.ErrorContains(t, err, "flush acks")
	require.Less(t, elapsed, 2*time.Second, "flush bounded by the Shutdown deadline")
}

// fakeMsg is a job message whose acks go nowhere.
type fakeMsg struct {
	jetstream.Msg
	naks atomic.Int32
}

func (m *fakeMsg) Data() []byte         { return []byte("{}") }
func (m *fakeMsg) Headers() nats.Header { return nil }
func (m *fakeMsg) Ack() error           { return nil }
func (m *fakeMsg) Term() error          { return nil }
func (m *fakeMsg) InProgress() error    { return nil }
func (m *fakeMsg) Nak() error           { m.naks.Add(1); return nil }
func (m *fakeMsg) NakWithDelay(time.Duration) error {
	m.naks.Add(1)
	return nil
}
func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{NumDelivered: 1}, nil
}

// TestSlotReleasedWhenFinishedWhileTakingIt: a job finished (nakAll at
// shutdown) while receive takes its slot releases the slot exactly once
// (it leaked when receive marked the slot held after finish ran).
func TestSlotReleasedWhenFinishedWhileTakingIt(t *testing.T) {
	js, _ := startJS(t)
	w, err := New(js, testOptions())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, w.Shutdown(context.Background(), nil)) })
	// Finished first, then the slot taken: holdSlot gives it back.
	it := &item{w: w, msg: &fakeMsg{}}
	w.track(it)
	w.slots <- struct{}{}
	w.finish(it, actNak, 0)
	require.False(t, w.holdSlot(it))
	require.Zero(t, len(w.slots), "slot leaked")

	for i := range 500 {
		it := &item{w: w, msg: &fakeMsg{}}
		w.track(it)
		w.slots <- struct{}{}
		done := make(chan struct{})
		go func() {
			defer close(done)
			w.finish(it, actNak, 0)
		}()
		w.holdSlot(it)
		<-done
		require.Zero(t, len(w.slots), "try %d: slot leaked", i)
		require.Zero(t, w.InFlight())
	}
}

// TestLateEventFailureDuringShutdown: an outcome whose event fails for good
// while Shutdown is stopping the worker (the engine's Close timed out) must
// not start publishMinimal after Shutdown's wg.Wait (wg.Add raced it).
func TestLateEventFailureDuringShutdown(t *testing.T) {
	js, _ := startJS(t)
	for i := range 30 {
		w, err := New(js, testOptions())
		require.NoError(t, err)
		msg := &fakeMsg{}
		it := &item{w: w, msg: msg, id: fmt.Sprintf("late-%d", i)}
		w.track(it)
		pe := &pendingEvents{it: it, kind: KindRejected, onOK: actAck,
			evs: []event{{KindRejected, RejectionEvent{JobID: it.id, Reason: "BadTopic"}}}}
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // the Shutdown deadline has passed: nakAll finishes the job
		done := make(chan struct{})
		go func() {
			defer close(done)
			w.eventFailed(pe, nats.ErrMaxPayload)
		}()
		_ = w.Shutdown(ctx, nil)
		<-done
		require.True(t, it.done.Load())
		// Whatever ran last, the job was finished once and nothing of the
		// worker outlives Shutdown but a publishMinimal it waited for.
		require.LessOrEqual(t, msg.naks.Load(), int32(1), "try %d", i)
	}
}
