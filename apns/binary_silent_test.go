package apns_test

import (
	"context"
	"fmt"
	"log/slog"
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
	const jobs = 20_000
	for _, every := range []int{1000, 5000} {
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
					if outcomes.Add(1) == jobs {
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
				every, writes.Load(), jobs, float64(writes.Load())/jobs, st)
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
