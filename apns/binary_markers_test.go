package apns_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// The window is an hour in these tests: an outcome that arrives at all came
// from a confirm marker's answer (or a rejection), not from the window.
const noWindow = time.Hour

func TestBinaryConfirmMarkers(t *testing.T) {
	t.Parallel()
	const n, bad = 2000, 777
	gw := apnstest.NewGateway(apnstest.Reject(tok(bad), apns.StatusInvalidToken))
	t.Cleanup(gw.Close)
	eng, out := newEngine(t, gw, apns.WithConns(2), apns.WithAssumeDelivered(noWindow),
		apns.WithConfirmMarkers(5*time.Millisecond))
	send(t, eng, 0, n)
	got := out.wait(t, n, 20*time.Second)
	require.Len(t, got, n)
	for _, o := range got {
		i := o.Ref.(int)
		if i == bad {
			rej, ok := o.Rejection()
			require.True(t, ok, "%v", o.Err)
			require.Equal(t, apns.StatusInvalidToken, rej.Status)
			continue
		}
		require.NoError(t, o.Err, i)
		require.Equal(t, 1, gw.Count(tok(i)), i) // those after the bad one were written twice, taken once
	}
	st, es := gw.Stats(), eng.Stats()
	require.Zero(t, st.Duplicates)
	require.Zero(t, st.ResentAfterError)
	require.Zero(t, st.OutOfOrderIDs)
	require.Positive(t, es.ConfirmMarkers)
	require.False(t, es.MarkersOff)
	require.GreaterOrEqual(t, st.Malformed, int(es.ConfirmMarkers), "each marker the engine counts was a malformed frame at the gateway")
	require.Equal(t, 1, st.Rejected)
}

// TestBinaryCloseConfirmsWithMarkers: Close does not wait out the window:
// with markers on, it marks at once what waits on idle connections (the
// gateway took everything before Close), and while it drains a long queue
// each connection marks once, when nothing is left to write, not per flush.
func TestBinaryCloseConfirmsWithMarkers(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		n    int
		idle bool // Close after the gateway took everything
	}{
		{"idle", 300, true},
		{"draining", 20000, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const conns = 2
			gw := apnstest.NewGateway(apnstest.CountOnly())
			t.Cleanup(gw.Close)
			eng, out := newEngine(t, gw, apns.WithConns(conns), apns.WithAssumeDelivered(noWindow),
				apns.WithConfirmMarkers(noWindow))
			send(t, eng, 0, tt.n)
			if tt.idle {
				require.Eventually(t, func() bool { return gw.Stats().Accepted == tt.n },
					20*time.Second, 5*time.Millisecond)
				require.Zero(t, out.len(), "no outcome before Close: the window and the marker delay are an hour")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			require.NoError(t, eng.Close(ctx))
			got := out.wait(t, tt.n, time.Second)
			for _, o := range got {
				require.NoError(t, o.Err, o.Ref)
			}
			require.Equal(t, tt.n, gw.Stats().Accepted)
			es := eng.Stats()
			require.Positive(t, es.ConfirmMarkers)
			require.LessOrEqual(t, es.ConfirmMarkers, uint64(conns), "one marker per connection")
		})
	}
}

// TestBinaryConfirmMarkersIgnored: a gateway that skips the marker without
// an answer: the notifications are delivered by the window, and markers go
// off.
func TestBinaryConfirmMarkersIgnored(t *testing.T) {
	t.Parallel()
	const n = 500
	gw := apnstest.NewGateway(apnstest.OnMalformed(apnstest.MalformedIgnore))
	t.Cleanup(gw.Close)
	eng, out := newEngine(t, gw, apns.WithConns(1), apns.WithConfirmMarkers(time.Millisecond))
	send(t, eng, 0, n)
	for _, o := range out.wait(t, n, 20*time.Second) {
		require.NoError(t, o.Err, o.Ref)
	}
	send(t, eng, n, 2*n)
	for _, o := range out.wait(t, 2*n, 20*time.Second) {
		require.NoError(t, o.Err, o.Ref)
		require.Equal(t, 1, o.Attempts)
	}
	st, es := gw.Stats(), eng.Stats()
	require.True(t, es.MarkersOff)
	require.Zero(t, es.ConfirmMarkers)
	require.Equal(t, 1, st.Malformed, "one marker, then none")
	require.Equal(t, 2*n, st.Accepted)
	require.Zero(t, st.Duplicates)
}

// TestBinaryConfirmMarkersClosed: a gateway that closes without an answer
// on the marker: what was in flight is sent again (as after any silent
// close), markers go off, and later notifications are sent once.
func TestBinaryConfirmMarkersClosed(t *testing.T) {
	t.Parallel()
	const n = 500
	gw := apnstest.NewGateway(apnstest.OnMalformed(apnstest.MalformedClose))
	t.Cleanup(gw.Close)
	eng, out := newEngine(t, gw, apns.WithConns(1), apns.WithConfirmMarkers(time.Millisecond))
	send(t, eng, 0, n)
	first := out.wait(t, n, 20*time.Second)
	for _, o := range first {
		require.NoError(t, o.Err, o.Ref)
	}
	require.True(t, eng.Stats().MarkersOff)
	dups := gw.Stats().Duplicates
	require.LessOrEqual(t, dups, n)

	send(t, eng, n, 2*n)
	got := out.wait(t, 2*n, 20*time.Second)
	require.Len(t, out.byRef(), 2*n, "one outcome each")
	for _, o := range got[n:] {
		require.NoError(t, o.Err, o.Ref)
		require.Equal(t, 1, o.Attempts)
		require.Equal(t, 1, gw.Count(tok(o.Ref.(int))))
	}
	st := gw.Stats()
	require.Equal(t, 1, st.Malformed, "one marker, then none")
	require.Equal(t, dups, st.Duplicates, "nothing sent twice once markers are off")
}

// TestBinaryAbortWithMarkerInFlight: Close gives up while a marker the
// gateway ignored is in flight: the notifications fail with ErrClosed, the
// count in Close's error is theirs alone, and markers stay on (an abort is
// no evidence against the gateway).
func TestBinaryAbortWithMarkerInFlight(t *testing.T) {
	t.Parallel()
	const n = 10
	gw := apnstest.NewGateway(apnstest.OnMalformed(apnstest.MalformedIgnore))
	t.Cleanup(gw.Close)
	eng, out := newEngine(t, gw, apns.WithConns(1), apns.WithAssumeDelivered(noWindow),
		apns.WithConfirmMarkers(time.Millisecond))
	send(t, eng, 0, n)
	require.Eventually(t, func() bool { return gw.Stats().Malformed == 1 }, 20*time.Second, 5*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := eng.Close(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, fmt.Sprintf("%d notifications failed", n))
	for _, o := range out.wait(t, n, time.Second) {
		require.ErrorIs(t, o.Err, apns.ErrClosed)
	}
	require.False(t, eng.Stats().MarkersOff)
}
