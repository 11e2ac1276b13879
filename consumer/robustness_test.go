package consumer

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

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
// credentials are refused are naked with the longest back-off, not
// redelivered at once (58 000 redeliveries/s before the fix).
func TestCredentialsRefusedNoHotLoop(t *testing.T) {
	js, _ := startJS(t)
	opts := testOptions()
	opts.Backoff = []time.Duration{time.Second, 5 * time.Minute}
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

	// Every job is received once and naked; over the next second none
	// comes back.
	require.Eventually(t, func() bool { return consumerInfo(t, js).Delivered.Consumer >= n },
		5*time.Second, 5*time.Millisecond)
	start := time.Now()
	require.Eventually(t, func() bool { return time.Since(start) > time.Second }, 3*time.Second, 50*time.Millisecond)
	ci := consumerInfo(t, js)
	require.Equal(t, uint64(n), ci.Delivered.Consumer, "redelivered at once")
	require.Zero(t, ci.NumRedelivered)
	require.LessOrEqual(t, eng.sends.Load(), int64(1), "Send is not called while Stats reports the credentials refused")

	cancel()
	require.NoError(t, <-errc)
	require.NoError(t, w.Shutdown(ctxT(t), eng))
	require.Equal(t, uint64(n), streamMsgs(t, js, "APNS_JOBS", ""))
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
