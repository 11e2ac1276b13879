package consumer

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestIntakePauseDropsStaleBuffer: an engine that takes nothing for three
// AckWaits while the worker holds MaxInFlight jobs. The jobs behind them in
// the pull buffer are out of InProgress's reach; without the pause the
// server sent them again after AckWait while the first copies still waited
// there, and each went to APNs twice (5 of 20 here). With it the worker
// stops the subscription (the buffer goes back to the server), subscribes
// again once it has room, and every job is sent exactly once.
func TestIntakePauseDropsStaleBuffer(t *testing.T) {
	js, _ := startJS(t)
	eng := newFakeEngine(nil)
	eng.gate = make(chan struct{})
	opts := testOptions()
	opts.AckWait = 2 * time.Second
	opts.MaxInFlight = 5
	opts.PullMaxMessages = 5
	r := startWorker(t, js, opts, eng)
	const n = 20
	publishJobs(t, js, n, tokHex)
	require.Eventually(t, func() bool { return eng.blocked.Load() == 1 && r.w.waitingSlot.Load() },
		5*time.Second, 5*time.Millisecond, "the engine takes nothing and every slot is held")

	require.Eventually(t, func() bool { return value(t, r.w.m.intakePauses) == 1 },
		2*opts.AckWait, 10*time.Millisecond, "the subscription stops within AckWait")
	// Past the AckWait of every job the buffer held: the server sends them
	// again (they were never taken) while the engine still takes nothing.
	stalled := time.Now()
	require.Eventually(t, func() bool { return time.Since(stalled) > 2*opts.AckWait }, 3*opts.AckWait, 50*time.Millisecond)
	require.Equal(t, 1.0, value(t, r.w.m.intakePauses), "one pause: no room came")

	close(eng.gate)
	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		20*time.Second, 10*time.Millisecond)
	for i := range n {
		require.Equal(t, 1, eng.sent(tokHex(i)), "job %d sent once", i)
	}
}

// keepAliveMsg records the keep-alive tick of its first InProgress.
type keepAliveMsg struct {
	fakeMsg
	w     *Worker
	first atomic.Int64 // w.epoch at the first InProgress; 0: none yet
}

func (m *keepAliveMsg) InProgress() error {
	m.w.mu.Lock()
	m.first.CompareAndSwap(0, m.w.epoch)
	m.w.mu.Unlock()
	return nil
}

// TestEarlyKeepAliveBehindFullEngine: a job received within an AckWait of
// the subscription waiting for a slot may have waited in the pull buffer:
// it gets its first InProgress at the next keep-alive tick. Any other gets
// it two ticks on (it is likely finished by then, and sends none).
func TestEarlyKeepAliveBehindFullEngine(t *testing.T) {
	js, _ := startJS(t)
	opts := testOptions()
	opts.AckWait = time.Second
	w, err := New(js, opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, w.Shutdown(context.Background(), nil)) })

	trackAt := func() (*keepAliveMsg, int64) {
		m := &keepAliveMsg{w: w}
		w.mu.Lock()
		e := w.epoch
		w.mu.Unlock()
		it := &item{w: w, msg: m}
		w.track(it)
		t.Cleanup(func() { w.finish(it, actAck, 0) }) // before Shutdown, which waits for it
		return m, e
	}
	plain, plainAt := trackAt()
	w.mu.Lock()
	w.slotWaitEpoch = w.epoch // as receive records a wait for a slot
	w.mu.Unlock()
	behind, behindAt := trackAt()

	require.Eventually(t, func() bool { return plain.first.Load() != 0 && behind.first.Load() != 0 },
		5*time.Second, 10*time.Millisecond)
	require.LessOrEqual(t, behind.first.Load()-behindAt, int64(1), "behind a full engine: at the next tick")
	require.GreaterOrEqual(t, plain.first.Load()-plainAt, int64(2), "otherwise: two ticks on")
}
