package apns_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

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
	opts = append([]apns.Option{apns.WithReconnectBackoff(5*time.Millisecond, 50*time.Millisecond)}, opts...)
	return newEngineAt(t, gw.Addr, gw.RootCAs(), gw.ClientCert(), opts...)
}

// newEngineAt is newEngine for a gateway at addr with these roots and
// client certificate, without newEngine's short reconnect back-off.
func newEngineAt(t testing.TB, addr string, roots *x509.CertPool, cert tls.Certificate, opts ...apns.Option) (*apns.BinaryEngine, *outcomes) {
	t.Helper()
	out := newOutcomes()
	opts = append([]apns.Option{
		apns.WithRootCAs(roots),
		apns.WithOutcomeFunc(out.add),
		apns.WithAssumeDelivered(testWindow),
	}, opts...)
	eng, err := apns.NewBinaryEngine(addr, cert, opts...)
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

// TestBinarySocketCalls: the binary engine delivers and hears a rejection
// with either kind of socket calls (WithDirectSocketCalls).
func TestBinarySocketCalls(t *testing.T) {
	t.Parallel()
	for _, direct := range []bool{true, false} {
		t.Run(socketCalls(direct), func(t *testing.T) {
			t.Parallel()
			const n, bad = 300, 123
			gw := apnstest.NewGateway(apnstest.Reject(tok(bad), apns.StatusInvalidToken))
			t.Cleanup(gw.Close)
			eng, out := newEngine(t, gw, apns.WithConns(2), apns.WithDirectSocketCalls(direct))
			send(t, eng, 0, n)
			_ = out.wait(t, n, 10*time.Second)
			got := out.byRef()
			require.Len(t, got, n)
			for i := 0; i < n; i++ {
				if i == bad {
					rej, ok := got[i].Rejection()
					require.True(t, ok, "%v", got[i].Err)
					require.Equal(t, apns.StatusInvalidToken, rej.Status)
					continue
				}
				require.NoError(t, got[i].Err, i)
				require.Equal(t, 1, gw.Count(tok(i)), i)
			}
			require.Zero(t, gw.Stats().Duplicates)
		})
	}
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

func TestBinaryCloseDrains(t *testing.T) {
	t.Parallel()
	gw := apnstest.NewGateway()
	t.Cleanup(gw.Close)
	eng, out := newEngine(t, gw)
	send(t, eng, 0, 200)
	// Close returns once every accepted notification has its outcome.
	require.NoError(t, eng.Close(context.Background()))
	got := out.byRef()
	require.Len(t, got, 200)
	for _, o := range got {
		require.NoError(t, o.Err)
	}
	require.Equal(t, 200, gw.Stats().Accepted)
	require.Zero(t, eng.Stats().InFlight)
}

func TestBinarySendAfterClose(t *testing.T) {
	t.Parallel()
	gw := apnstest.NewGateway()
	t.Cleanup(gw.Close)
	eng, out := newEngine(t, gw)
	require.NoError(t, eng.Close(context.Background()))
	require.NoError(t, eng.Close(context.Background()), "Close twice")
	err := eng.Send(context.Background(), &apns.Notification{Token: tok(1), Payload: hello}, 1)
	require.ErrorIs(t, err, apns.ErrClosed)
	require.Zero(t, out.len())
	_ = eng.Stats() // after Close too
}

func TestBinarySendErrors(t *testing.T) {
	t.Parallel()
	gw := apnstest.NewGateway(apnstest.StallAfter(0))
	t.Cleanup(gw.Close)
	eng, _ := newEngine(t, gw, apns.WithMaxInFlight(2))
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		n       *apns.Notification
		wantErr error
	}{
		{"nil notification", context.Background(), nil, apns.ErrInvalidNotification},
		{"short token", context.Background(), &apns.Notification{Token: tok(1)[:31], Payload: hello}, apns.ErrInvalidToken},
		{"no aps", context.Background(), &apns.Notification{Token: tok(1), Payload: []byte(`{"a":1}`)}, apns.ErrNoAPS},
		{"too large", context.Background(), &apns.Notification{Token: tok(1), Payload: append([]byte(`{"aps":{},"x":"`), append(bytes.Repeat([]byte{'x'}, 2048), `"}`...)...)}, apns.ErrPayloadTooLarge},
		{"priority 1 is HTTP/2 only", context.Background(), &apns.Notification{Token: tok(1), Payload: hello, Priority: apns.PriorityLow}, apns.ErrInvalidPriority},
		{"cancelled ctx", cancelled, &apns.Notification{Token: tok(1), Payload: hello}, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.ErrorIs(t, eng.Send(tt.ctx, tt.n, nil), tt.wantErr)
		})
	}
	// Backpressure: two in flight (the gateway reads nothing), the third
	// Send blocks until its ctx ends.
	send(t, eng, 0, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, eng.Send(ctx, &apns.Notification{Token: tok(3), Payload: hello}, 3), context.DeadlineExceeded)
	require.Equal(t, 2, eng.Stats().InFlight)
}

func TestBinaryCloseDeadline(t *testing.T) {
	t.Parallel()
	// Payloads of 2 KB: 5000 of them (10 MB) overflow the loopback socket
	// buffers, so the engine's writes block on the stalled gateway.
	big := []byte(`{"aps":{},"x":"` + string(bytes.Repeat([]byte{'x'}, 2000)) + `"}`)
	tests := []struct {
		name string
		gw   apnstest.GatewayOption
		n    int
	}{
		{"gateway never answers TLS", apnstest.StallHandshake(), 20},
		{"gateway stops reading", apnstest.StallAfter(0), 5000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			gw := apnstest.NewGateway(tt.gw)
			t.Cleanup(gw.Close)
			eng, out := newEngine(t, gw, apns.WithDialTimeout(time.Minute), apns.WithAssumeDelivered(time.Minute))
			for i := 0; i < tt.n; i++ {
				require.NoError(t, eng.Send(context.Background(), &apns.Notification{Token: tok(i), Payload: big}, i))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			err := eng.Close(ctx)
			require.Less(t, time.Since(start), 2*time.Second, "Close held past its deadline")
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.ErrorContains(t, err, fmt.Sprintf("%d notifications failed", tt.n))
			got := out.byRef()
			require.Len(t, got, tt.n, "every accepted notification has an outcome")
			for _, o := range got {
				require.ErrorIs(t, o.Err, apns.ErrClosed)
			}
		})
	}
}

func TestBinaryWrongCertificate(t *testing.T) {
	t.Parallel()
	gw := apnstest.NewGateway()
	t.Cleanup(gw.Close)
	other := apnstest.MustPKI() // a CA the gateway does not trust
	out := newOutcomes()
	eng, err := apns.NewBinaryEngine(gw.Addr, other.ClientCert, apns.WithRootCAs(gw.RootCAs()),
		apns.WithOutcomeFunc(out.add), apns.WithAssumeDelivered(testWindow), apns.WithConns(1))
	require.NoError(t, err)
	t.Cleanup(func() { _ = eng.Close(context.Background()) })
	// The first Send is accepted; once the refusal closed the gate, Send
	// refuses with it (which of the next two come first is a race).
	accepted := 0
	for i := range 3 {
		err := eng.Send(context.Background(), &apns.Notification{Token: tok(i), Payload: hello}, i)
		if err == nil {
			accepted++
			continue
		}
		require.ErrorIs(t, err, apns.ErrCredentials)
		require.NotZero(t, i, "the first Send, before any handshake, is accepted")
	}
	for _, o := range out.wait(t, accepted, 10*time.Second) {
		require.ErrorIs(t, o.Err, apns.ErrCredentials)
		require.ErrorContains(t, o.Err, "certificate")
		_, rejected := o.Rejection()
		require.False(t, rejected)
	}
	require.ErrorIs(t, eng.Stats().CredentialsErr, apns.ErrCredentials)
	require.Zero(t, gw.Stats().Accepted)
	// The client reads the refusal before the gateway's goroutine counts it.
	require.Eventually(t, func() bool { return gw.Stats().HandshakeErrors > 0 },
		5*time.Second, 5*time.Millisecond, "gateway saw no failed handshake")
}

func TestBinaryUntrustedGateway(t *testing.T) {
	t.Parallel()
	gw := apnstest.NewGateway()
	t.Cleanup(gw.Close)
	other := apnstest.MustPKI()
	out := newOutcomes()
	// The engine trusts another CA: it cannot connect, so Close fails the
	// notification with the connection error as the cause.
	eng, err := apns.NewBinaryEngine(gw.Addr, gw.ClientCert(), apns.WithRootCAs(other.RootCAs),
		apns.WithOutcomeFunc(out.add), apns.WithConns(1), apns.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond))
	require.NoError(t, err)
	send(t, eng, 0, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, eng.Close(ctx), context.DeadlineExceeded)
	got := out.wait(t, 1, time.Second)
	require.ErrorIs(t, got[0].Err, apns.ErrClosed)
	require.ErrorContains(t, got[0].Err, "certificate")
	require.Zero(t, got[0].Attempts)
}

func TestBinaryExpired(t *testing.T) {
	t.Parallel()
	gw := apnstest.NewGateway()
	t.Cleanup(gw.Close)
	eng, out := newEngine(t, gw)
	n := &apns.Notification{Token: tok(1), Payload: hello, Expiration: time.Now().Add(-time.Minute)}
	require.NoError(t, eng.Send(context.Background(), n, 1))
	now := &apns.Notification{Token: tok(2), Payload: hello, Expiration: apns.ExpireNow}
	require.NoError(t, eng.Send(context.Background(), now, 2))
	_ = out.wait(t, 2, 5*time.Second)
	got := out.byRef()
	require.ErrorIs(t, got[1].Err, apns.ErrExpired)
	require.Zero(t, got[1].Attempts)
	require.NoError(t, got[2].Err, "ExpireNow is sent: it means try once")
}

func TestBinaryIdleReconnect(t *testing.T) {
	t.Parallel()
	gw := apnstest.NewGateway()
	t.Cleanup(gw.Close)
	eng, out := newEngine(t, gw, apns.WithConns(1), apns.WithIdleTimeout(testWindow))
	send(t, eng, 0, 1)
	_ = out.wait(t, 1, 5*time.Second)
	require.Eventually(t, func() bool { return eng.Stats().Connected == 0 }, 5*time.Second, 5*time.Millisecond,
		"an idle connection is closed")
	send(t, eng, 1, 2)
	got := out.wait(t, 2, 5*time.Second)
	require.NoError(t, got[1].Err)
	require.Equal(t, 2, gw.Stats().Conns)
	require.Equal(t, uint64(1), eng.Stats().Reconnects)
}

func TestNewBinaryEngineOptions(t *testing.T) {
	t.Parallel()
	pki := apnstest.MustPKI()
	tests := []struct {
		name string
		addr string
		opt  apns.Option
	}{
		{"no port", "gateway.push.apple.com", nil},
		{"zero window", apns.GatewayProduction, apns.WithAssumeDelivered(0)},
		{"zero idle timeout", apns.GatewayProduction, apns.WithIdleTimeout(0)},
		{"zero dial timeout", apns.GatewayProduction, apns.WithDialTimeout(-1)},
		{"payload 0", apns.GatewaySandbox, apns.WithMaxPayload(0)},
		{"payload over 65535", apns.GatewaySandbox, apns.WithMaxPayload(70000)},
		{"backoff max < min", apns.GatewaySandbox, apns.WithReconnectBackoff(time.Second, time.Millisecond)},
		{"no conns", apns.GatewaySandbox, apns.WithConns(0)},
		{"negative marker delay", apns.GatewaySandbox, apns.WithConfirmMarkers(-time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := []apns.Option{}
			if tt.opt != nil {
				opts = append(opts, tt.opt)
			}
			_, err := apns.NewBinaryEngine(tt.addr, pki.ClientCert, opts...)
			require.ErrorIs(t, err, apns.ErrInvalidOption)
		})
	}
	// An engine that never connected closes at once.
	eng, err := apns.NewBinaryEngine(apns.GatewaySandbox, pki.ClientCert, apns.WithMaxPayload(apns.MaxPayloadLegacy))
	require.NoError(t, err)
	big := &apns.Notification{Token: tok(1), Payload: append([]byte(`{"aps":{},"x":"`), append(bytes.Repeat([]byte{'x'}, 250), `"}`...)...)}
	require.ErrorIs(t, eng.Send(context.Background(), big, nil), apns.ErrPayloadTooLarge)
	require.NoError(t, eng.Close(context.Background()))
}

func TestBinaryTemporaryRetried(t *testing.T) {
	t.Parallel()
	// The gateway answers ProcessingError for tok(5) once: the engine sends
	// it again and it is delivered.
	var once sync.Once
	gw := apnstest.NewGateway(apnstest.RejectFunc(func(b []byte) (st apns.Status, bad bool) {
		if bytes.Equal(b, tok(5)) {
			once.Do(func() { st, bad = apns.StatusProcessingError, true })
		}
		return st, bad
	}))
	t.Cleanup(gw.Close)
	eng, out := newEngine(t, gw, apns.WithConns(1))
	send(t, eng, 0, 10)
	_ = out.wait(t, 10, 10*time.Second)
	got := out.byRef()
	for i := 0; i < 10; i++ {
		require.NoError(t, got[i].Err, i)
		require.Equal(t, 1, gw.Count(tok(i)), i)
	}
	require.Equal(t, 2, got[5].Attempts)
	require.Zero(t, gw.Stats().ResentAfterError)
}

func TestBinarySendDuringClose(t *testing.T) {
	t.Parallel()
	gw := apnstest.NewGateway(apnstest.Reject(tok(3), apns.StatusInvalidToken), apnstest.CloseEvery(50))
	t.Cleanup(gw.Close)
	eng, out := newEngine(t, gw, apns.WithMaxInFlight(64))
	var (
		wg       sync.WaitGroup
		accepted sync.Map
		started  = make(chan struct{}, 4)
	)
	for s := 0; s < 4; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := s; i < 1_000_000; i += 4 { // ends with ErrClosed long before
				if i == s+40 {
					started <- struct{}{}
				}
				err := eng.Send(context.Background(), &apns.Notification{Token: tok(i % 100), Payload: hello}, i)
				if errors.Is(err, apns.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("send: %v", err)
					return
				}
				accepted.Store(i, true)
			}
		}()
	}
	for s := 0; s < 4; s++ {
		<-started
	}
	require.NoError(t, eng.Close(context.Background()))
	wg.Wait()
	n := 0
	accepted.Range(func(_, _ any) bool { n++; return true })
	got := out.byRef()
	require.Equal(t, n, out.len(), "exactly one outcome per accepted notification")
	require.Len(t, got, n)
	accepted.Range(func(k, _ any) bool {
		_, ok := got[k]
		require.True(t, ok, "no outcome for %v", k)
		return true
	})
}

// TestBinaryCredentialsRecover: a refused client certificate sets
// CredentialsErr only until a connection with the gateway achieves an
// outcome again (the certificate was renewed, the gateway fixed) (M6).
func TestBinaryCredentialsRecover(t *testing.T) {
	t.Parallel()
	gw := apnstest.NewGateway()
	other := apnstest.MustPKI() // a CA the first gateway does not trust
	out := newOutcomes()
	eng, err := apns.NewBinaryEngine(gw.Addr, other.ClientCert, apns.WithRootCAs(gw.RootCAs()),
		apns.WithOutcomeFunc(out.add), apns.WithAssumeDelivered(testWindow), apns.WithConns(1),
		apns.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(func() { _ = eng.Close(context.Background()) })
	send(t, eng, 0, 1)
	require.ErrorIs(t, out.wait(t, 1, 10*time.Second)[0].Err, apns.ErrCredentials)
	require.ErrorIs(t, eng.Stats().CredentialsErr, apns.ErrCredentials)
	require.ErrorIs(t, eng.Send(context.Background(), &apns.Notification{Token: tok(1), Payload: hello}, 1), apns.ErrCredentials, "intake held")
	apns.SetBinaryGateProbeForTest(eng, 0) // from now on every Send probes

	// The same address now trusts the engine's certificate too.
	pki := *gw.PKI()
	pki.ClientCAs = pki.ClientCAs.Clone()
	require.True(t, pki.ClientCAs.AppendCertsFromPEM(other.CAPEM))
	addr := gw.Addr
	gw.Close()
	gw2, err := apnstest.ListenGateway(apnstest.GatewayAddr(addr), apnstest.GatewayPKI(&pki))
	require.NoError(t, err)
	t.Cleanup(gw2.Close)

	send(t, eng, 1, 2)
	got := out.wait(t, 2, 10*time.Second)
	require.NoError(t, got[1].Err)
	require.NoError(t, eng.Stats().CredentialsErr, "credentials OK again")
}

// TestBinaryLastGoodStatuses: status 10 (Shutdown) and 0 (NoErrors) name the
// last notification processed, ID 0 none; what follows is resent without
// using up retries (L7).
func TestBinaryLastGoodStatuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		resp   apns.ErrorResponse
		resent int // notifications seen again on the second connection
	}{
		{"shutdown naming none", apns.ErrorResponse{Status: apns.StatusShutdown, ID: 0}, 3},
		{"no errors naming none", apns.ErrorResponse{Status: apns.StatusNoErrors, ID: 0}, 3},
		{"no errors naming the second", apns.ErrorResponse{Status: apns.StatusNoErrors, ID: 2}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pki := apnstest.MustPKI()
			ln, err := tls.Listen("tcp", "127.0.0.1:0", pki.ServerTLS(true))
			require.NoError(t, err)
			var second atomic.Int32 // frames read on later connections
			serveRaw(t, ln, func(serial int, c net.Conn) {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				fr := apns.NewFrameReader(c, 2048)
				for i := 1; ; i++ {
					if _, err := fr.ReadFrame(); err != nil {
						return
					}
					if serial > 1 {
						second.Add(1)
					} else if i == 3 {
						_, _ = c.Write(apns.AppendErrorResponse(nil, tt.resp))
						return
					}
				}
			})
			out := newOutcomes()
			eng, err := apns.NewBinaryEngine(ln.Addr().String(), pki.ClientCert, apns.WithRootCAs(pki.RootCAs),
				apns.WithOutcomeFunc(out.add), apns.WithAssumeDelivered(testWindow), apns.WithConns(1),
				apns.WithMaxRetries(0), apns.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond))
			require.NoError(t, err)
			t.Cleanup(func() { _ = eng.Close(context.Background()) })
			send(t, eng, 1, 4)
			for _, o := range out.wait(t, 3, 20*time.Second) {
				require.NoError(t, o.Err, "notification %v", o.Ref)
			}
			require.Equal(t, int32(tt.resent), second.Load())
			require.NoError(t, eng.Stats().CredentialsErr)
		})
	}
}

// TestBinaryShutdownAtOnceBacksOff: a gateway that answers every connection
// with status 10 naming ID 0 (nothing processed) must get connections at
// the back-off's pace, not a handshake storm, must not clear a recorded
// certificate refusal, and every notification must get exactly one outcome:
// after a few free resends, each costs a retry until they run out.
func TestBinaryShutdownAtOnceBacksOff(t *testing.T) {
	t.Parallel()
	const (
		n          = 3
		maxRetries = 1
		backoffMin = 20 * time.Millisecond
	)
	pki := apnstest.MustPKI()
	cfg := pki.ServerTLS(true)
	var conns atomic.Int64 // handshakes that passed
	var refused atomic.Bool
	cfg.VerifyConnection = func(tls.ConnectionState) error {
		if refused.CompareAndSwap(false, true) {
			return errors.New("refused once") // the first connection: a certificate refusal
		}
		return nil
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	serveRaw(t, ln, func(_ int, c net.Conn) {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if err := c.(*tls.Conn).Handshake(); err != nil {
			return
		}
		conns.Add(1)
		buf := make([]byte, 1)
		if _, err := c.Read(buf); err != nil { // the first frame byte
			return
		}
		_, _ = c.Write(apns.AppendErrorResponse(nil, apns.ErrorResponse{Status: apns.StatusShutdown, ID: 0}))
		_, _ = io.Copy(io.Discard, c) // until the engine closes: no reset
	})

	out := newOutcomes()
	eng, err := apns.NewBinaryEngine(ln.Addr().String(), pki.ClientCert, apns.WithRootCAs(pki.RootCAs),
		apns.WithOutcomeFunc(out.add), apns.WithAssumeDelivered(testWindow), apns.WithConns(1),
		apns.WithMaxRetries(maxRetries), apns.WithReconnectBackoff(backoffMin, 2*backoffMin))
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = eng.Close(ctx)
	})

	send(t, eng, 0, 1)
	require.ErrorIs(t, out.wait(t, 1, 10*time.Second)[0].Err, apns.ErrCredentials)
	require.ErrorIs(t, eng.Stats().CredentialsErr, apns.ErrCredentials)
	require.ErrorIs(t, eng.Send(context.Background(), &apns.Notification{Token: tok(1), Payload: hello}, 1), apns.ErrCredentials, "intake held")
	apns.SetBinaryGateProbeForTest(eng, 0) // from now on every Send probes

	start := time.Now()
	send(t, eng, 1, 1+n)
	got := out.wait(t, 1+n, 20*time.Second)
	elapsed := time.Since(start)
	require.Len(t, got, 1+n)
	for _, o := range got[1:] {
		require.ErrorIs(t, o.Err, apns.ErrRetriesExhausted, "notification %v", o.Ref)
		require.GreaterOrEqual(t, o.Attempts, maxRetries+2, "free resends first")
		require.LessOrEqual(t, o.Attempts, 8+maxRetries+1, "free resends are bounded")
	}
	require.Len(t, out.byRef(), 1+n, "one outcome each")
	// Every connection after the first of a run waited out a back-off of
	// at least backoffMin/2; none processed anything.
	c := conns.Load()
	require.GreaterOrEqual(t, c, int64(2))
	require.LessOrEqual(t, c, 2+int64(elapsed/(backoffMin/2)), "%d connections in %v: no back-off", c, elapsed)
	require.ErrorIs(t, eng.Stats().CredentialsErr, apns.ErrCredentials,
		"a gateway that processed nothing has not accepted the certificate")

	require.NoError(t, eng.Close(context.Background()))
	require.Equal(t, 1+n, out.len(), "no outcome after the last")
}
