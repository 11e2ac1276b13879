package apns_test

import (
	"context"
	"fmt"
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
				outcomes, failed, writes atomic.Int64
				done                     = make(chan struct{})
				firstErr                 atomic.Value
			)
			eng, err := apns.NewBinaryEngine(gw.Addr, gw.ClientCert(), apns.WithRootCAs(gw.RootCAs()),
				apns.WithOutcomeFunc(func(o apns.Outcome) {
					writes.Add(int64(o.Attempts))
					if o.Err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, o.Err.Error())
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
			if f := failed.Load(); f > 0 {
				t.Logf("first failure: %v", firstErr.Load())
			}
			require.Zero(t, failed.Load(), "every notification delivered")
			require.NotZero(t, st.SilentCloses, "the gateway closed silently")
			require.LessOrEqual(t, writes.Load(), int64(2*jobs), "writes bounded by twice the notifications")
			require.GreaterOrEqual(t, st.Accepted, jobs, "the gateway took every notification")
		})
	}
}
