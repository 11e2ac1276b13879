package enginetest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// testCredentialsGate: a 403 refusing the credentials closes the gate
// (Stats().CredentialsErr, work failed with ErrCredentials); 200s for
// requests sent before the 403 do not reopen it; only the success of a
// request sent after it closed does. (The engine's constructor should make
// it probe refused credentials often, e.g. every 50ms, or the last step
// waits for its probe.)
func testCredentialsGate(t *testing.T, e *env) {
	const inFlight = 10
	srv := e.server(h2(apnstest.HTTP2Latency(300 * time.Millisecond)))
	s := srv.HTTP2
	eng, col := e.engine(srv, apns.WithMaxRetries(0))

	// 1. Requests in flight: read by the server, answered 200 in 300ms.
	for i := range inFlight {
		require.NoError(t, eng.Send(e.ctx, note(i, false), i))
	}
	waitFor(t, e.ctx, "the server to read the requests in flight", func() bool { return s.Accepted() == inFlight })

	// 2. A request sent now is refused with a 403 at once: the gate closes.
	s.InjectAnswer(1, apnstest.CredentialsAnswer("InvalidProviderToken"))
	require.NoError(t, eng.Send(e.ctx, note(inFlight, false), inFlight))
	col.wait(t, e.ctx, 1)
	o := col.only(t, inFlight)
	require.ErrorIs(t, o.Err, apns.ErrCredentials, "the refused request")
	_, rejected := o.Rejection()
	require.False(t, rejected, "refused credentials are not a rejection")
	require.ErrorIs(t, eng.Stats().CredentialsErr, apns.ErrCredentials)

	// 3. The 200s of the requests sent before the 403 arrive: delivered,
	// and the gate stays closed.
	col.wait(t, e.ctx, inFlight+1)
	for i := range inFlight {
		require.NoErrorf(t, col.only(t, i).Err, "request %d in flight before the 403", i)
	}
	require.ErrorIs(t, eng.Stats().CredentialsErr, apns.ErrCredentials,
		"a 200 for a request sent before the gate closed reopened it")

	// 4. Work sent now is held or failed with ErrCredentials until a
	// request sent after the refusal succeeds; then the gate is open.
	s.SetLatency(0)
	next, delivered := inFlight+1, -1
	for delivered < 0 {
		select {
		case <-e.ctx.Done():
			t.Fatal("no request sent after the refusal was let through before the case's deadline")
		case <-time.After(10 * time.Millisecond):
		}
		ref := next
		next++
		err := eng.Send(e.ctx, note(ref, false), ref)
		if err != nil {
			require.ErrorIs(t, err, apns.ErrCredentials, "Send while the gate is closed")
			continue
		}
		col.waitRef(t, e.ctx, ref)
		switch o := col.only(t, ref); {
		case o.Err == nil:
			delivered = ref
		default:
			require.ErrorIs(t, o.Err, apns.ErrCredentials, "work while the gate is closed")
		}
	}
	require.NoError(t, eng.Stats().CredentialsErr, "the gate opens after a success sent after it closed")
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, eng.Send(ctx, note(next, false), next))
	col.waitRef(t, e.ctx, next)
	require.NoError(t, col.only(t, next).Err, "work flows again")
}

// waitRef blocks until ref has an outcome or ctx ends (then it fails t).
func (c *collector) waitRef(t *testing.T, ctx context.Context, ref int) {
	t.Helper()
	for {
		c.mu.Lock()
		n := len(c.byRef[ref])
		c.mu.Unlock()
		if n > 0 {
			return
		}
		select {
		case <-c.more:
		case <-ctx.Done():
			t.Fatalf("no outcome for ref %d before the case's deadline", ref)
		}
	}
}

// only returns ref's single outcome, failing t if it has none or several.
func (c *collector) only(t *testing.T, ref int) apns.Outcome {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	os := c.byRef[ref]
	require.Lenf(t, os, 1, "outcomes of ref %d", ref)
	return os[0]
}

// waitFor polls cond until it holds or ctx ends (then it fails t).
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		}
	}
}
