package apns_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// stressN is the stress test's notification count.
const stressN = 100_000

// TestBinaryStress sends 100 000 notifications over 4 connections with 1%
// of tokens rejected (with several status codes), against a gateway that
// after an error response either drains its input for a while or closes at
// once (the engine's next writes hit a reset, as with APNs), or that also
// closes connections silently every 20 000 frames. Every notification must
// get exactly one outcome, the right one; the gateway must have accepted
// every delivered notification at least once and never a rejected one;
// nothing the gateway accepted before an error response may be sent again;
// duplicates come only from silent closes, at most what was in flight.
func TestBinaryStress(t *testing.T) {
	t.Parallel()
	const maxInFlight = 16384
	statuses := []apns.Status{apns.StatusInvalidToken, apns.StatusInvalidToken, apns.StatusInvalidToken,
		apns.StatusMissingTopic, apns.StatusInvalidTokenSize, apns.StatusInvalidPayloadSize, apns.StatusProtocolError}
	isBad := func(i int) bool { return i%100 == 42 }
	statusOf := func(i int) apns.Status { return statuses[(i/100)%len(statuses)] }

	tests := []struct {
		name   string
		opts   []apnstest.GatewayOption
		silent bool
	}{
		{"drain after error", []apnstest.GatewayOption{apnstest.DrainAfterError(20 * time.Millisecond)}, false},
		{"close at once after error", nil, false},
		{"silent close every 20000 frames", []apnstest.GatewayOption{apnstest.CloseEvery(20_000)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			for i := 0; i < stressN; i++ {
				if isBad(i) {
					opts = append(opts, apnstest.Reject(tok(i), statusOf(i)))
				}
			}
			gw := apnstest.NewGateway(opts...)
			t.Cleanup(gw.Close)

			counts := make([]atomic.Int32, stressN)
			var (
				mu       sync.Mutex
				wrong    []string
				total    atomic.Int64
				finished = make(chan struct{})
			)
			check := func(o apns.Outcome) {
				i := o.Ref.(int)
				counts[i].Add(1)
				rej, rejected := o.Rejection()
				if isBad(i) != rejected || rejected && rej.Status != statusOf(i) || !isBad(i) && o.Err != nil {
					mu.Lock()
					wrong = append(wrong, o.Notification.Token.String()+": "+errString(o.Err))
					mu.Unlock()
				}
				if total.Add(1) == int64(stressN) {
					close(finished)
				}
			}
			eng, err := apns.NewBinaryEngine(gw.Addr, gw.ClientCert(), apns.WithRootCAs(gw.RootCAs()),
				apns.WithConns(4), apns.WithMaxInFlight(maxInFlight), apns.WithOutcomeFunc(check),
				apns.WithAssumeDelivered(stressWindow), apns.WithReconnectBackoff(time.Millisecond, 20*time.Millisecond))
			require.NoError(t, err)

			start := time.Now()
			const senders = 4
			var wg sync.WaitGroup
			for s := 0; s < senders; s++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := s; i < stressN; i += senders {
						n := &apns.Notification{Token: tok(i), Payload: hello}
						if err := eng.Send(context.Background(), n, i); err != nil {
							t.Errorf("send %d: %v", i, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			select {
			case <-finished:
			case <-time.After(2 * time.Minute):
				t.Fatalf("only %d of %d outcomes", total.Load(), stressN)
			}
			elapsed := time.Since(start)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, eng.Close(ctx))

			require.Empty(t, wrong, "wrong outcomes")
			for i := range counts {
				require.EqualValues(t, 1, counts[i].Load(), "outcomes for notification %d", i)
			}
			// The gateway accepted every delivered one (it may still be
			// reading the last frames), never a rejected one.
			require.Eventually(t, func() bool { return gw.Stats().Accepted >= stressN*99/100 }, 10*time.Second, 10*time.Millisecond)
			for i := 0; i < stressN; i++ {
				if isBad(i) {
					require.Zero(t, gw.Count(tok(i)), "rejected %d accepted", i)
				} else {
					require.GreaterOrEqual(t, gw.Count(tok(i)), 1, "delivered %d not accepted", i)
				}
			}
			st := gw.Stats()
			t.Logf("%d notifications in %v (%.0f/s): %+v, engine %+v", stressN, elapsed.Round(time.Millisecond),
				float64(stressN)/elapsed.Seconds(), st, eng.Stats())
			require.Equal(t, stressN/100, st.Rejected, "each bad token rejected exactly once")
			require.Zero(t, st.ResentAfterError, "a notification accepted before an error response was sent again")
			require.Zero(t, st.OutOfOrderIDs, "identifiers count up on each connection")
			if !tt.silent {
				require.Zero(t, st.Duplicates)
				return
			}
			require.NotZero(t, st.SilentCloses)
			require.LessOrEqual(t, st.Duplicates, st.SilentCloses*maxInFlight, "duplicates beyond what was in flight")
		})
	}
}

func errString(err error) string {
	if err == nil {
		return "delivered"
	}
	return err.Error()
}
