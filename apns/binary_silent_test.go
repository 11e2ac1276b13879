package apns_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// TestBinarySilentCloseBoundedResends: a gateway that closes connections
// without an error response every N frames, at full rate, with the engine's
// default settings (5 s window, no confirm markers, 4 connections): every
// notification is delivered once, and the engine writes at most twice as
// many frames as there are notifications. Before the connection budget, at
// N = 5000 each notification was written up to 8 times.
func TestBinarySilentCloseBoundedResends(t *testing.T) {
	t.Parallel()
	// every 16: below the old floor of the budget (32), which let such a
	// gateway lose work on every connection (found from outside: 64 writes
	// a job, nearly all dead-lettered).
	for _, tc := range []struct{ every, jobs int }{{1000, 20_000}, {5000, 20_000}, {16, 2000}} {
		every, jobs := tc.every, tc.jobs
		t.Run(fmt.Sprintf("every %d frames", every), func(t *testing.T) {
			t.Parallel()
			gw := apnstest.NewGateway(apnstest.CloseEvery(every), apnstest.CountOnly())
			t.Cleanup(gw.Close)
			var (
				outcomes, writes atomic.Int64
				done             = make(chan struct{})
				mu               sync.Mutex
				failures         []string // ref, attempts and error of each failed outcome
				logs             syncBuffer
			)
			eng, err := apns.NewBinaryEngine(gw.Addr, gw.ClientCert(), apns.WithRootCAs(gw.RootCAs()),
				apns.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
				apns.WithOutcomeFunc(func(o apns.Outcome) {
					writes.Add(int64(o.Attempts))
					if o.Err != nil {
						mu.Lock()
						failures = append(failures, fmt.Sprintf("%v: %d attempts: %v", o.Ref, o.Attempts, o.Err))
						mu.Unlock()
					}
					if outcomes.Add(1) == int64(jobs) {
						close(done)
					}
				}))
			require.NoError(t, err)
			send(t, eng, 0, jobs)
			select {
			case <-done:
			case <-time.After(2 * time.Minute):
				t.Fatalf("%d of %d outcomes", outcomes.Load(), jobs)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			require.NoError(t, eng.Close(ctx))
			st := gw.Stats()
			t.Logf("closes every %d: %d writes for %d notifications (%.2f each); gateway %+v",
				every, writes.Load(), jobs, float64(writes.Load())/float64(jobs), st)
			mu.Lock()
			defer mu.Unlock()
			if len(failures) > 0 {
				// Say why: each failed one's attempts and error, and the
				// engine's story of the silent closes and the budget.
				t.Logf("%d failed, e.g.\n%s\nengine log:\n%s", len(failures),
					strings.Join(failures[:min(len(failures), 20)], "\n"), logs.String())
			}
			require.Zero(t, len(failures), "every notification delivered")
			require.NotZero(t, st.SilentCloses, "the gateway closed silently")
			require.LessOrEqual(t, writes.Load(), int64(2*jobs), "writes bounded by twice the notifications")
			require.GreaterOrEqual(t, st.Accepted, jobs, "the gateway took every notification")
		})
	}
}

// TestBinarySilentClosesFreeThenCounted: a connection that closes without
// an error response is no verdict on what was in flight. A notification
// survives more silent closes than it has retries; a gateway that closes
// every connection still ends it, after the free resends (8, as for ends
// that processed nothing) and its retries.
func TestBinarySilentClosesFreeThenCounted(t *testing.T) {
	t.Parallel()
	const maxRetries = 3
	for _, tt := range []struct {
		name     string
		closes   int // connections closed after their first frame
		attempts int
		failed   bool
	}{
		{"closes more often than retries, then takes it", maxRetries + 3, maxRetries + 4, false},
		{"closes every connection", math.MaxInt, 8 + maxRetries + 1, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pki := apnstest.MustPKI()
			ln, err := tls.Listen("tcp", "127.0.0.1:0", pki.ServerTLS(true))
			require.NoError(t, err)
			var frames atomic.Int64
			serveRaw(t, ln, func(serial int, c net.Conn) {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				for {
					if _, err := apns.ReadFrame(c); err != nil {
						return // the engine closed it
					}
					frames.Add(1)
					if serial <= tt.closes {
						return // silently, after one frame
					}
				}
			})
			eng, out := newRawEngine(t, ln.Addr().String(), pki, apns.WithConns(1), apns.WithMaxRetries(maxRetries),
				apns.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond))
			send(t, eng, 0, 1)
			o := out.wait(t, 1, 20*time.Second)[0]
			require.Equal(t, tt.attempts, o.Attempts, "%v", o.Err)
			require.EqualValues(t, tt.attempts, frames.Load(), "the gateway read each attempt")
			if !tt.failed {
				require.NoError(t, o.Err)
				return
			}
			require.ErrorIs(t, o.Err, apns.ErrRetriesExhausted)
			require.ErrorContains(t, o.Err, "lost")
		})
	}
}

// newRawEngine is newEngine for a gateway of the test's own on addr, with
// pki's certificates.
func newRawEngine(t testing.TB, addr string, pki *apnstest.PKI, opts ...apns.Option) (*apns.BinaryEngine, *outcomes) {
	t.Helper()
	return newEngineAt(t, addr, pki.RootCAs, pki.ClientCert, opts...)
}
