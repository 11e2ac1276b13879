package apns

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
)

func newAdmission(max int) *admission {
	return &admission{max: int64(max), wake: make(chan struct{}, 1)}
}

// TestAdmissionBoundsAndWakes: many senders through a small admission
// never hold more than max slots, and every one gets through while a
// releaser frees slots in batches of any size (the last ones one by one):
// no waiter is left asleep with room free.
func TestAdmissionBoundsAndWakes(t *testing.T) {
	for _, max := range []int{1, 3, 64} {
		a := newAdmission(max)
		const senders, each = 8, 500
		var inside, peak atomic.Int64
		held := make(chan struct{}, senders*each)
		var wg sync.WaitGroup
		for range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					if err := a.acquire(context.Background(), nil); err != nil {
						t.Error(err)
					}
					n := inside.Add(1)
					for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
					}
					held <- struct{}{}
				}
			}()
		}
		// The releaser: whatever is held, freed at once.
		for freed := 0; freed < senders*each; {
			select {
			case <-held:
			case <-time.After(10 * time.Second):
				t.Fatalf("max %d: senders stuck with %d slots held, %d freed", max, a.held.Load(), freed)
			}
			k := 1 + len(held)
			for range k - 1 {
				<-held
			}
			inside.Add(int64(-k))
			a.release(int64(k))
			freed += k
		}
		wg.Wait()
		require.LessOrEqual(t, peak.Load(), int64(max), "max %d", max)
		require.Zero(t, a.held.Load())
		require.Zero(t, a.waiters.Load())
	}
}

// TestAdmissionWaitEnds: a full admission's acquire ends with ctx's error,
// or ErrClosed when stop closes, and leaves no waiter counted.
func TestAdmissionWaitEnds(t *testing.T) {
	a := newAdmission(1)
	require.NoError(t, a.acquire(context.Background(), nil))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, a.acquire(ctx, nil), context.DeadlineExceeded)
	stop := make(chan struct{})
	close(stop)
	require.ErrorIs(t, a.acquire(context.Background(), stop), ErrClosed)
	require.Zero(t, a.waiters.Load())
	require.Equal(t, int64(0), a.release(1))
	require.NoError(t, a.acquire(context.Background(), stop), "a free slot is taken even once stopped")
}

// TestDeliverySize: a delivery without an HTTP/2 stream (binary, std) is
// 128 bytes, two cache lines in a size class that starts objects on one:
// with 50 000 in flight, the stream's 160 bytes in every delivery cost the
// binary engine 8% of BenchmarkBinary's CPU and a third of its memory.
func TestDeliverySize(t *testing.T) {
	require.EqualValues(t, 128, unsafe.Sizeof(delivery{}))
	c := &core{}
	c.withStreams()
	d := c.pool.New().(*delivery)
	require.NotNil(t, d.H2Stream(), "an HTTP2Engine's delivery carries its stream")
}
