package enginetest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// env is one case's harness: its deadline, server and engine factories.
type env struct {
	t         *testing.T
	proto     Protocol
	newEngine NewEngine
	ctx       context.Context // ends at the case's deadline
	// noGoAwayCode: Features.NoGoAwayCode.
	noGoAwayCode string
	// hidesConnFields: Features.HidesConnectionFields.
	hidesConnFields string
}

func newEnv(t *testing.T, f Features, newEngine NewEngine) *env {
	ctx, cancel := context.WithTimeout(context.Background(), f.CaseTimeout)
	t.Cleanup(cancel)
	return &env{t: t, proto: f.Protocol, newEngine: newEngine, ctx: ctx, noGoAwayCode: f.NoGoAwayCode, hidesConnFields: f.HidesConnectionFields}
}

// faults are the hostile options of a case's server, per protocol.
type faults struct {
	gw []apnstest.GatewayOption
	h2 []apnstest.HTTP2Option
}

// Tokens: byte 0 marks the suite, byte 1 marks a token the servers reject
// (binary status 8, HTTP/2 400 BadDeviceToken), the rest is the index.
const (
	tokMark = 0xe7
	badMark = 0xbd
)

func token(i int, bad bool) apns.Token {
	t := make(apns.Token, 32)
	t[0] = tokMark
	if bad {
		t[1] = badMark
	}
	t[28], t[29], t[30], t[31] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
	return t
}

func isBad(tok []byte) bool { return len(tok) > 1 && tok[1] == badMark }

var payload = []byte(`{"aps":{"alert":"enginetest"}}`)

func note(i int, bad bool) *apns.Notification {
	return &apns.Notification{Token: token(i, bad), Payload: payload}
}

// server starts the case's server: the protocol's apnstest server that
// rejects bad tokens, with fs's hostile options after; closed at cleanup.
func (e *env) server(fs faults) Server {
	e.t.Helper()
	switch e.proto {
	case Binary:
		opts := append([]apnstest.GatewayOption{
			apnstest.RejectFunc(func(tok []byte) (apns.Status, bool) { return apns.StatusInvalidToken, isBad(tok) }),
		}, fs.gw...)
		gw, err := apnstest.ListenGateway(opts...)
		require.NoError(e.t, err)
		e.t.Cleanup(gw.Close)
		return Server{Gateway: gw}
	default:
		opts := append([]apnstest.HTTP2Option{
			apnstest.HTTP2ReasonFunc(func(tok apns.Token) (int, string, bool) {
				return 400, "BadDeviceToken", isBad(tok)
			}),
		}, fs.h2...)
		s, err := apnstest.ListenHTTP2(opts...)
		require.NoError(e.t, err)
		served := make(chan struct{})
		go func() {
			defer close(served)
			_ = s.Serve()
		}()
		e.t.Cleanup(func() {
			s.Close()
			<-served
		})
		return Server{HTTP2: s}
	}
}

// engine builds the engine under test on srv, reporting to a new
// collector; it is closed (bounded) at cleanup, before the server.
func (e *env) engine(srv Server, opts ...apns.Option) (apns.Engine, *collector) {
	e.t.Helper()
	col := newCollector()
	eng := e.newEngine(e.t, srv, append([]apns.Option{apns.WithOutcomeFunc(col.add)}, opts...)...)
	require.NotNil(e.t, eng)
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = closeBounded(e.t, ctx, eng, 10*time.Second)
	})
	return eng, col
}

// closeBounded calls eng.Close(ctx) and fails the test if it has not
// returned grace after ctx ended: an engine whose Close hangs fails rather
// than stalls the run. It reports Close's error and the time it took.
func closeBounded(t *testing.T, ctx context.Context, eng apns.Engine, grace time.Duration) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- eng.Close(ctx) }()
	select {
	case err := <-done:
		return time.Since(start), err
	case <-ctx.Done():
	}
	select {
	case err := <-done:
		return time.Since(start), err
	case <-time.After(grace):
		t.Fatalf("Close has not returned %v after its context ended", grace)
		return 0, nil
	}
}

// collector records outcomes by ref; refs are ints.
type collector struct {
	mu      sync.Mutex
	byRef   map[any][]apns.Outcome
	total   int
	started int // callbacks entered (counted first thing)
	more    chan struct{}
}

func newCollector() *collector {
	return &collector{byRef: map[any][]apns.Outcome{}, more: make(chan struct{}, 1)}
}

func (c *collector) add(o apns.Outcome) {
	c.mu.Lock()
	c.started++
	c.byRef[o.Ref] = append(c.byRef[o.Ref], o)
	c.total++
	c.mu.Unlock()
	select {
	case c.more <- struct{}{}:
	default:
	}
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

func (c *collector) startedCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.started
}

// wait blocks until n outcomes arrived or ctx ends (then it fails t).
func (c *collector) wait(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	for c.count() < n {
		select {
		case <-c.more:
		case <-ctx.Done():
			t.Fatalf("%d of %d outcomes before the case's deadline; missing refs %s", c.count(), n, c.missing(n))
		}
	}
}

// missing describes up to ten refs in [0, n) with no outcome.
func (c *collector) missing(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var m []int
	for i := 0; i < n && len(m) < 10; i++ {
		if len(c.byRef[i]) == 0 {
			m = append(m, i)
		}
	}
	return fmt.Sprint(m)
}

// exactlyOne returns the one outcome of every ref in accepted, failing t for
// a ref with none or several, or an outcome for a ref never accepted.
func (c *collector) exactlyOne(t *testing.T, accepted map[int]bool) map[int]apns.Outcome {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[int]apns.Outcome, len(accepted))
	var dups, strays, lost []int
	for ref, os := range c.byRef {
		i, ok := ref.(int)
		switch {
		case !ok || !accepted[i]:
			strays = append(strays, i)
		case len(os) > 1:
			dups = append(dups, i)
		default:
			out[i] = os[0]
		}
	}
	for i := range accepted {
		if len(c.byRef[i]) == 0 {
			lost = append(lost, i)
		}
	}
	sort.Ints(dups)
	sort.Ints(lost)
	require.Emptyf(t, dups, "refs with more than one outcome (of %d accepted)", len(accepted))
	require.Emptyf(t, lost, "accepted refs with no outcome (of %d accepted)", len(accepted))
	require.Emptyf(t, strays, "outcomes for refs never accepted")
	return out
}

// sendAll sends notifications 0…k-1 (every tenth for a bad token when
// withBad) and returns the refs accepted. Send may refuse only with
// ErrCredentials (refused credentials hold work); anything else fails t.
func sendAll(t *testing.T, ctx context.Context, eng apns.Engine, k int, withBad bool) map[int]bool {
	t.Helper()
	return sendRange(t, ctx, eng, 0, k, withBad)
}

// sendRange is sendAll for notifications from…to-1.
func sendRange(t *testing.T, ctx context.Context, eng apns.Engine, from, to int, withBad bool) map[int]bool {
	t.Helper()
	accepted := make(map[int]bool, to-from)
	for i := from; i < to; i++ {
		err := eng.Send(ctx, note(i, withBad && i%10 == 7), i)
		switch {
		case err == nil:
			accepted[i] = true
		case errors.Is(err, apns.ErrCredentials):
		default:
			require.NoErrorf(t, err, "Send %d", i)
		}
	}
	return accepted
}
