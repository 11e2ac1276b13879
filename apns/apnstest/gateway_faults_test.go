package apnstest

import (
	"errors"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
)

// gwSend writes frames 1…n for tokens gwTok(1…n), dialing again whenever
// the gateway ended the connection, until the gateway has accepted n; it
// returns the frames (by number) after which the connection ended.
func gwSend(t *testing.T, gw *Gateway, n int) (ends []int) {
	t.Helper()
	c := dialGateway(t, gw)
	for i := 1; i <= n; i++ {
		_, err := c.Write(frame(uint32(i), gwTok(i)))
		require.NoError(t, err)
		require.Eventually(t, func() bool { return gw.Stats().Accepted == i }, 5*time.Second, time.Millisecond)
		st := gw.Stats()
		if st.SilentCloses+st.Shutdowns > len(ends) {
			ends = append(ends, i)
			_, _ = io.Copy(io.Discard, c) // to the close
			c = dialGateway(t, gw)
		}
	}
	return ends
}

func TestGatewayCloseRandom(t *testing.T) {
	t.Parallel()
	run := func(seed uint64) []int {
		gw := NewGateway(CloseRandom(10, seed))
		t.Cleanup(gw.Close)
		ends := gwSend(t, gw, 120)
		require.Equal(t, len(ends), gw.Stats().SilentCloses)
		return ends
	}
	a := run(1)
	require.Equal(t, a, run(1), "a seed replays the same intervals")
	require.GreaterOrEqual(t, len(a), 120/15)
	prev := 0
	for _, e := range a {
		require.GreaterOrEqual(t, e-prev, 5, "intervals in [n/2, 3n/2]: %v", a)
		require.LessOrEqual(t, e-prev, 15, "intervals in [n/2, 3n/2]: %v", a)
		prev = e
	}
}

func TestGatewayShutdownEvery(t *testing.T) {
	t.Parallel()
	gw := NewGateway(ShutdownEvery(4))
	t.Cleanup(gw.Close)
	c := dialGateway(t, gw)
	for i := 1; i <= 4; i++ {
		_, err := c.Write(frame(uint32(i), gwTok(i)))
		require.NoError(t, err)
	}
	r, ok := readAnswer(t, c)
	require.True(t, ok)
	require.Equal(t, apns.ErrorResponse{Status: apns.StatusShutdown, ID: 4}, r)

	again := NewGateway(ShutdownEvery(4))
	t.Cleanup(again.Close)
	require.Equal(t, []int{4, 8, 12}, gwSend(t, again, 14))
	require.Equal(t, 3, again.Stats().Shutdowns)
}

func TestGatewayResetAfterError(t *testing.T) {
	t.Parallel()
	bad := gwTok(2)
	gw := NewGateway(Reject(bad, apns.StatusInvalidToken), ResetAfterError())
	t.Cleanup(gw.Close)
	c := dialGateway(t, gw)
	_, err := c.Write(append(frame(1, gwTok(1)), frame(2, bad)...))
	require.NoError(t, err)
	// The answer may or may not survive the reset; the connection ends
	// with one: reads fail with ECONNRESET, not a clean EOF.
	require.Eventually(t, func() bool { return gw.Stats().Resets == 1 }, 5*time.Second, time.Millisecond)
	var rerr error
	for rerr == nil {
		_, rerr = c.Read(make([]byte, 64))
	}
	require.Truef(t, errors.Is(rerr, syscall.ECONNRESET), "want a reset, got %v", rerr)
	require.Equal(t, 1, gw.Stats().Rejected)

	plain := NewGateway(Reject(bad, apns.StatusInvalidToken))
	t.Cleanup(plain.Close)
	c = dialGateway(t, plain)
	_, err = c.Write(frame(2, bad))
	require.NoError(t, err)
	r, ok := readAnswer(t, c)
	require.True(t, ok)
	require.Equal(t, apns.ErrorResponse{Status: apns.StatusInvalidToken, ID: 2}, r)
	require.Zero(t, plain.Stats().Resets)
}
