package apns_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// testWindow is the assumed-delivered window of most tests: short, so they
// finish quickly, and long enough for a gateway on busy cores to answer.
const testWindow = 150 * time.Millisecond

var hello = []byte(`{"aps":{"alert":"hello"}}`)

// tok returns a distinct 32-byte token for i.
func tok(i int) apns.Token {
	t := make(apns.Token, 32)
	copy(t, "apnstest-token--")
	binary.BigEndian.PutUint64(t[24:], uint64(i))
	return t
}

// outcomes collects outcomes by ref.
type outcomes struct {
	mu   sync.Mutex
	all  []apns.Outcome
	more chan struct{}
}

func newOutcomes() *outcomes { return &outcomes{more: make(chan struct{}, 1)} }

func (c *outcomes) add(o apns.Outcome) {
	c.mu.Lock()
	c.all = append(c.all, o)
	c.mu.Unlock()
	select {
	case c.more <- struct{}{}:
	default:
	}
}

func (c *outcomes) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.all)
}

// wait returns the outcomes once there are n, failing after d.
func (c *outcomes) wait(t testing.TB, n int, d time.Duration) []apns.Outcome {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for c.len() < n {
		select {
		case <-c.more:
		case <-deadline.C:
			t.Fatalf("got %d outcomes, want %d", c.len(), n)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]apns.Outcome(nil), c.all...)
}

func (c *outcomes) byRef() map[any]apns.Outcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[any]apns.Outcome, len(c.all))
	for _, o := range c.all {
		m[o.Ref] = o
	}
	return m
}

// newEngine starts a binary engine on gw that reports to a new collector,
// and closes it at cleanup.
func newEngine(t testing.TB, gw *apnstest.Gateway, opts ...apns.Option) (*apns.BinaryEngine, *outcomes) {
	t.Helper()
	out := newOutcomes()
	opts = append([]apns.Option{
		apns.WithRootCAs(gw.RootCAs()),
		apns.WithOutcomeFunc(out.add),
		apns.WithAssumeDelivered(testWindow),
		apns.WithReconnectBackoff(5*time.Millisecond, 50*time.Millisecond),
	}, opts...)
	eng, err := apns.NewBinaryEngine(gw.Addr, gw.ClientCert(), opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = eng.Close(ctx)
	})
	return eng, out
}

func send(t testing.TB, eng apns.Engine, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		require.NoError(t, eng.Send(context.Background(), &apns.Notification{Token: tok(i), Payload: hello}, i))
	}
}

func TestBinaryDelivers(t *testing.T) {
	t.Parallel()
	gw := apnstest.NewGateway()
	t.Cleanup(gw.Close)
	eng, out := newEngine(t, gw, apns.WithConns(2))
	start := time.Now()
	send(t, eng, 0, 500)
	got := out.wait(t, 500, 10*time.Second)
	for _, o := range got {
		require.NoError(t, o.Err)
		require.True(t, o.Delivered())
		require.Equal(t, 1, o.Attempts)
		require.False(t, o.Accepted.Before(start))
		require.Equal(t, tok(o.Ref.(int)), o.Notification.Token)
		require.Equal(t, 1, gw.Count(tok(o.Ref.(int))))
	}
	st := gw.Stats()
	require.Equal(t, 500, st.Accepted)
	require.Zero(t, st.Duplicates)
	require.LessOrEqual(t, st.Conns, 2)
	require.Equal(t, apns.Stats{Conns: 2, Connected: st.Conns}, eng.Stats())
	require.NoError(t, eng.Close(context.Background()))
	require.Zero(t, eng.Stats().Connected)
}

func TestBinaryRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		status   apns.Status
		wantErr  error // errors.Is; nil means a *RejectionError with status
		attempts int
	}{
		{"invalid token", apns.StatusInvalidToken, nil, 1},
		{"missing topic", apns.StatusMissingTopic, nil, 1},
		{"invalid payload size", apns.StatusInvalidPayloadSize, nil, 1},
		{"protocol error", apns.StatusProtocolError, nil, 1},
		{"undefined code", apns.Status(9), nil, 1},
		{"processing error is temporary", apns.StatusProcessingError, apns.ErrRetriesExhausted, 3},
		{"unknown is temporary", apns.StatusUnknown, apns.ErrRetriesExhausted, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const n, bad = 50, 20
			gw := apnstest.NewGateway(apnstest.Reject(tok(bad), tt.status))
			t.Cleanup(gw.Close)
			eng, out := newEngine(t, gw, apns.WithConns(1), apns.WithMaxRetries(2))
			send(t, eng, 0, n)
			_ = out.wait(t, n, 10*time.Second)
			got := out.byRef()
			require.Len(t, got, n)
			for i := 0; i < n; i++ {
				o := got[i]
				if i != bad {
					require.NoError(t, o.Err, i)
					require.Equal(t, 1, gw.Count(tok(i)), i)
					continue
				}
				require.Equal(t, tt.attempts, o.Attempts)
				if tt.wantErr != nil {
					require.ErrorIs(t, o.Err, tt.wantErr)
					require.ErrorContains(t, o.Err, tt.status.String())
					_, rejected := o.Rejection()
					require.False(t, rejected, "a temporary failure is not a rejection")
					continue
				}
				rej, ok := o.Rejection()
				require.True(t, ok, "%v", o.Err)
				require.Equal(t, tt.status, rej.Status)
				require.Equal(t, tt.status.String(), rej.Reason)
				require.NotZero(t, rej.ID)
				require.Equal(t, tt.status == apns.StatusInvalidToken, errors.Is(o.Err, apns.ErrBadDeviceToken))
			}
			st := gw.Stats()
			require.Zero(t, st.Duplicates, "nothing accepted is sent again after an error response")
			require.Equal(t, tt.attempts, st.Rejected)
		})
	}
}

func TestBinaryRejectionIDs(t *testing.T) {
	t.Parallel()
	// Identifiers count from 1 on each connection: the first notification
	// on a fresh connection is rejected as notification 1.
	gw := apnstest.NewGateway(apnstest.Reject(tok(0), apns.StatusInvalidToken), apnstest.Reject(tok(1), apns.StatusInvalidToken))
	t.Cleanup(gw.Close)
	eng, out := newEngine(t, gw, apns.WithConns(1))
	send(t, eng, 0, 1)
	got := out.wait(t, 1, 5*time.Second)
	require.EqualError(t, got[0].Err, "apns: notification 1 rejected: InvalidToken")
	send(t, eng, 1, 2)
	got = out.wait(t, 2, 5*time.Second)
	require.EqualError(t, got[1].Err, "apns: notification 1 rejected: InvalidToken")
}

func TestBinaryMalformedFrame(t *testing.T) {
	t.Parallel()
	// The engine allows larger payloads than the gateway: the gateway
	// answers status 7 and the engine reports it as a rejection.
	gw := apnstest.NewGateway(apnstest.MaxPayload(256))
	t.Cleanup(gw.Close)
	eng, out := newEngine(t, gw, apns.WithConns(1), apns.WithMaxPayload(4096))
	big := []byte(`{"aps":{"alert":"` + string(bytes.Repeat([]byte{'x'}, 300)) + `"}}`)
	send(t, eng, 0, 3)
	require.NoError(t, eng.Send(context.Background(), &apns.Notification{Token: tok(3), Payload: big}, 3))
	send(t, eng, 4, 6)
	_ = out.wait(t, 6, 10*time.Second)
	got := out.byRef()
	rej, ok := got[3].Rejection()
	require.True(t, ok, "%v", got[3].Err)
	require.Equal(t, apns.StatusInvalidPayloadSize, rej.Status)
	for _, i := range []int{0, 1, 2, 4, 5} {
		require.NoError(t, got[i].Err)
	}
	require.Equal(t, 1, gw.Stats().Malformed)
}

func TestBinaryShutdown(t *testing.T) {
	t.Parallel()
	gw := apnstest.NewGateway(apnstest.ShutdownAfter(10))
	t.Cleanup(gw.Close)
	eng, out := newEngine(t, gw, apns.WithConns(1))
	send(t, eng, 0, 40)
	for _, o := range out.wait(t, 40, 10*time.Second) {
		require.NoError(t, o.Err)
	}
	st := gw.Stats()
	require.Equal(t, 1, st.Shutdowns)
	require.Equal(t, 40, st.Accepted)
	require.Zero(t, st.Duplicates, "status 10 names the last good one: only what follows is resent")
	require.Equal(t, uint64(1), eng.Stats().Reconnects)
}

func TestBinarySilentClose(t *testing.T) {
	t.Parallel()
	gw := apnstest.NewGateway(apnstest.CloseAfter(10))
	t.Cleanup(gw.Close)
	eng, out := newEngine(t, gw, apns.WithConns(1))
	send(t, eng, 0, 40)
	for _, o := range out.wait(t, 40, 10*time.Second) {
		require.NoError(t, o.Err)
		require.GreaterOrEqual(t, gw.Count(tok(o.Ref.(int))), 1)
	}
	st := gw.Stats()
	require.Equal(t, 1, st.SilentCloses)
	// Everything in flight at the silent close is sent again: up to the 10
	// accepted ones may be duplicates, never more.
	require.LessOrEqual(t, st.Duplicates, 10)
	require.Equal(t, 40+st.Duplicates, st.Accepted)
}
