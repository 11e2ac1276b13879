package enginetest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// holding is a server that takes notifications and never answers: the
// HTTP/2 server delays every answer by an hour, the gateway never completes
// a TLS handshake (a binary engine assumes written frames delivered after
// its window, so it must not get to write).
var holding = faults{
	gw: []apnstest.GatewayOption{apnstest.StallHandshake()},
	h2: []apnstest.HTTP2Option{apnstest.HTTP2Latency(time.Hour)},
}

func sendCases() []scenario {
	return []scenario{
		{"InvalidNotification", testSendInvalid},
		{"DoneContext", testSendDoneContext},
		{"DoneContextWhileSaturated", testSendDoneContextSaturated},
		{"AfterClose", testSendAfterClose},
		{"BlocksWhileSaturated", testSendBlocksWhileSaturated},
	}
}

func closeCases() []scenario {
	return []scenario{
		{"Drains", testCloseDrains},
		{"DoneContextFailsRest", testCloseDoneContext},
		{"Idempotent", testCloseIdempotent},
		{"NoGoroutineLeak", testCloseNoLeak},
	}
}

// An invalid notification is refused by Send with an error wrapping
// ErrInvalidNotification, and gets no outcome.
func testSendInvalid(t *testing.T, e *env) {
	eng, col := e.engine(e.server(faults{}))
	for name, n := range map[string]*apns.Notification{
		"no token":          {Payload: payload},
		"payload not JSON":  {Token: token(1, false), Payload: []byte("hello")},
		"no aps":            {Token: token(2, false), Payload: []byte(`{"x":1}`)},
		"payload too large": {Token: token(3, false), Payload: append(append([]byte(`{"aps":{},"x":"`), make([]byte, 8<<10)...), `"}`...)},
	} {
		err := eng.Send(e.ctx, n, name)
		require.ErrorIsf(t, err, apns.ErrInvalidNotification, "%s", name)
	}
	_, err := closeBounded(t, e.ctx, eng, 10*time.Second)
	require.NoError(t, err)
	require.Zero(t, col.count(), "a refused notification gets no outcome")
}

// A done ctx makes Send fail with ctx.Err() even when the engine has room:
// the notification is not accepted and gets no outcome.
func testSendDoneContext(t *testing.T, e *env) {
	eng, col := e.engine(e.server(faults{}))
	canceled, cancel := context.WithCancel(e.ctx)
	cancel()
	require.ErrorIs(t, eng.Send(canceled, note(0, false), 0), context.Canceled)
	expired, cancel2 := context.WithDeadline(e.ctx, time.Now().Add(-time.Second))
	defer cancel2()
	require.ErrorIs(t, eng.Send(expired, note(1, false), 1), context.DeadlineExceeded)
	_, err := closeBounded(t, e.ctx, eng, 10*time.Second)
	require.NoError(t, err)
	require.Zero(t, col.count(), "a refused notification gets no outcome")
}

// While the engine holds WithMaxInFlight notifications, Send blocks until
// its ctx ends and returns ctx.Err().
func testSendDoneContextSaturated(t *testing.T, e *env) {
	eng, col := e.engine(e.server(holding), apns.WithMaxInFlight(1))
	require.NoError(t, eng.Send(e.ctx, note(0, false), 0))
	ctx, cancel := context.WithTimeout(e.ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	require.ErrorIs(t, eng.Send(ctx, note(1, false), 1), context.DeadlineExceeded)
	require.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond, "Send blocked until its ctx ended")

	cctx, ccancel := context.WithTimeout(e.ctx, 200*time.Millisecond)
	defer ccancel()
	_, err := closeBounded(t, cctx, eng, 10*time.Second)
	require.Error(t, err, "Close with outcomes still pending at its deadline")
	got := col.exactlyOne(t, map[int]bool{0: true})
	require.ErrorIs(t, got[0].Err, apns.ErrClosed)
}

// After Close, Send fails with ErrClosed.
func testSendAfterClose(t *testing.T, e *env) {
	eng, col := e.engine(e.server(faults{}))
	_, err := closeBounded(t, e.ctx, eng, 10*time.Second)
	require.NoError(t, err)
	require.ErrorIs(t, eng.Send(e.ctx, note(0, false), 0), apns.ErrClosed)
	require.Zero(t, col.count())
}

// With WithMaxInFlight(2) and two notifications waiting for their answer,
// a third Send blocks until an outcome frees a place (the outcome is
// reported before Send returns: a slow outcome function back-pressures
// Send).
func testSendBlocksWhileSaturated(t *testing.T, e *env) {
	slow := faults{h2: []apnstest.HTTP2Option{apnstest.HTTP2Latency(200 * time.Millisecond)}}
	eng, col := e.engine(e.server(slow), apns.WithMaxInFlight(2))
	require.NoError(t, eng.Send(e.ctx, note(0, false), 0))
	require.NoError(t, eng.Send(e.ctx, note(1, false), 1))
	require.NoError(t, eng.Send(e.ctx, note(2, false), 2))
	require.GreaterOrEqual(t, col.startedCount(), 1, "the third Send returned before any outcome")
	_, err := closeBounded(t, e.ctx, eng, 10*time.Second)
	require.NoError(t, err)
	for i, o := range col.exactlyOne(t, map[int]bool{0: true, 1: true, 2: true}) {
		require.NoErrorf(t, o.Err, "notification %d", i)
	}
}

// Close waits for every accepted notification's outcome and returns nil.
func testCloseDrains(t *testing.T, e *env) {
	eng, col := e.engine(e.server(faults{}))
	accepted := sendAll(t, e.ctx, eng, 40, true)
	require.Len(t, accepted, 40)
	_, err := closeBounded(t, e.ctx, eng, 10*time.Second)
	require.NoError(t, err)
	require.Equal(t, 40, col.count(), "every outcome before Close returns")
	for i, o := range col.exactlyOne(t, accepted) {
		if i%10 == 7 {
			require.ErrorIsf(t, o.Err, apns.ErrBadDeviceToken, "notification %d", i)
		} else {
			require.NoErrorf(t, o.Err, "notification %d", i)
		}
	}
}

// Close with a ctx that ends first fails what has no outcome yet with an
// error wrapping ErrClosed, and returns an error.
func testCloseDoneContext(t *testing.T, e *env) {
	eng, col := e.engine(e.server(holding))
	accepted := sendAll(t, e.ctx, eng, 5, false)
	require.Len(t, accepted, 5)
	ctx, cancel := context.WithTimeout(e.ctx, 200*time.Millisecond)
	defer cancel()
	_, err := closeBounded(t, ctx, eng, 10*time.Second)
	require.Error(t, err)
	require.Equal(t, 5, col.count(), "the rest failed before Close returns")
	for i, o := range col.exactlyOne(t, accepted) {
		require.ErrorIsf(t, o.Err, apns.ErrClosed, "notification %d", i)
	}
}

// Close may be called concurrently and again: each call returns nil once
// drained, and no outcome is reported twice.
func testCloseIdempotent(t *testing.T, e *env) {
	eng, col := e.engine(e.server(faults{}))
	accepted := sendAll(t, e.ctx, eng, 20, true)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = eng.Close(e.ctx) })
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-e.ctx.Done():
		t.Fatal("concurrent Close calls have not returned by the case's deadline")
	}
	require.NoError(t, errors.Join(errs...))
	_, err := closeBounded(t, e.ctx, eng, 10*time.Second)
	require.NoError(t, err)
	col.exactlyOne(t, accepted)
}

// Once closed, an engine leaves no goroutine behind.
func testCloseNoLeak(t *testing.T, e *env) {
	ignore := goleak.IgnoreCurrent()
	func() {
		// A case of its own, so that its cleanups (engine, then server)
		// run before the check.
		t.Run("work", func(t *testing.T) {
			e := &env{t: t, proto: e.proto, newEngine: e.newEngine, ctx: e.ctx, noGoAwayCode: e.noGoAwayCode}
			eng, col := e.engine(e.server(faults{}))
			accepted := sendAll(t, e.ctx, eng, 30, true)
			col.wait(t, e.ctx, len(accepted))
			_, err := closeBounded(t, e.ctx, eng, 10*time.Second)
			require.NoError(t, err)
		})
	}()
	goleak.VerifyNone(t, ignore)
}
