package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/jetpush/apns-worker/apns"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startJS starts an embedded nats-server with JetStream on loopback and
// returns a connection's JetStream; both are shut down at cleanup.
func startJS(tb testing.TB) (jetstream.JetStream, *nats.Conn) {
	tb.Helper()
	s, err := server.NewServer(&server.Options{
		JetStream: true, StoreDir: tb.TempDir(), Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
	})
	require.NoError(tb, err)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		tb.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	require.NoError(tb, err)
	tb.Cleanup(func() {
		nc.Close()
		s.Shutdown()
		s.WaitForShutdown()
	})
	js, err := jetstream.New(nc)
	require.NoError(tb, err)
	return js, nc
}

// fakeEngine implements apns.Engine in memory: decide picks each
// notification's outcome error; hold keeps it until release or Close.
type fakeEngine struct {
	out    apns.OutcomeFunc
	limits *apns.Limits
	decide func(n *apns.Notification, attempt int) (err error, hold bool)

	gate    chan struct{} // if set, Send waits for it (a saturated engine)
	blocked atomic.Int32  // Sends waiting at the gate
	// closeWaits: Close waits for what it holds until its ctx ends, then
	// fails it and says it gave up, as the real engines do while APNs
	// does not answer.
	closeWaits bool

	mu     sync.Mutex
	closed bool
	sends  map[string]int // by token hex
	held   []apns.Outcome
	q      chan apns.Outcome
	done   chan struct{}
}

func newFakeEngine(decide func(n *apns.Notification, attempt int) (error, bool)) *fakeEngine {
	e := &fakeEngine{
		out:    func(apns.Outcome) {},
		decide: decide,
		limits: &apns.HTTP2Limits,
		sends:  map[string]int{},
		q:      make(chan apns.Outcome, 1<<14),
		done:   make(chan struct{}),
	}
	go func() {
		defer close(e.done)
		for o := range e.q {
			e.out(o)
		}
	}()
	return e
}

func (e *fakeEngine) Send(ctx context.Context, n *apns.Notification, ref any) error {
	if e.limits != nil {
		if err := n.Validate(*e.limits); err != nil {
			return err
		}
	}
	if e.gate != nil {
		e.blocked.Add(1)
		select {
		case <-e.gate:
		case <-ctx.Done():
		}
		e.blocked.Add(-1)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return apns.ErrClosed
	}
	tok := n.Token.String()
	e.sends[tok]++
	o := apns.Outcome{Ref: ref, Notification: n, Accepted: time.Now(), Attempts: 1}
	var hold bool
	if e.decide != nil {
		o.Err, hold = e.decide(n, e.sends[tok])
	}
	if hold {
		e.held = append(e.held, o)
		return nil
	}
	e.q <- o
	return nil
}

// release reports every held notification with err.
func (e *fakeEngine) release(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, o := range e.held {
		o.Err = err
		e.q <- o
	}
	e.held = nil
}

func (e *fakeEngine) Close(ctx context.Context) error {
	var gaveUp error
	if e.closeWaits && e.heldCount() > 0 {
		<-ctx.Done()
		gaveUp = fmt.Errorf("fake engine: close: %d notifications failed: %w", e.heldCount(), ctx.Err())
	}
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		for _, o := range e.held {
			o.Err = apns.ErrClosed
			e.q <- o
		}
		e.held = nil
		close(e.q)
	}
	e.mu.Unlock()
	<-e.done
	return gaveUp
}

func (e *fakeEngine) Stats() apns.Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return apns.Stats{Conns: 1, Connected: 1, InFlight: len(e.held)}
}

func (e *fakeEngine) sent(tok string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sends[tok]
}

// sentTotal counts the notifications Send took, all tokens together.
func (e *fakeEngine) sentTotal() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, c := range e.sends {
		n += c
	}
	return n
}

func (e *fakeEngine) heldCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.held)
}

// running is a worker running on an engine, stopped at cleanup.
type running struct {
	w      *Worker
	eng    *fakeEngine
	cancel context.CancelFunc
	errc   chan error
	once   sync.Once
	err    error
}

// startWorker creates a worker with opts, wires eng to it and runs it.
func startWorker(tb testing.TB, js jetstream.JetStream, opts Options, eng *fakeEngine) *running {
	tb.Helper()
	w, err := New(js, opts)
	require.NoError(tb, err)
	eng.out = w.HandleOutcome
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{w: w, eng: eng, cancel: cancel, errc: make(chan error, 1)}
	go func() { r.errc <- w.Run(ctx, eng) }()
	tb.Cleanup(func() { require.NoError(tb, r.stop()) })
	return r
}

// stop follows the documented shutdown order.
func (r *running) stop() error {
	r.once.Do(func() {
		r.cancel()
		runErr := <-r.errc
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		r.err = errors.Join(runErr, r.w.Shutdown(sctx, r.eng))
	})
	return r.err
}
