package consumer

import (
	"context"
	"log/slog"
	"time"
)

// The intake pause. While the worker holds MaxInFlight jobs the
// subscription's goroutine waits for a slot, and the jobs the server has
// already sent wait behind it in nats.go's pull buffer, where InProgress
// cannot reach them. If they wait there past AckWait, the server sends
// them again while the first copies are still in the buffer: each would be
// sent to APNs twice. So when jobs may have waited in the buffer for
// AckWait/2, the worker stops the subscription, which drops the buffer
// (the server sends those jobs again after AckWait: never processed, they
// are not duplicates), and subscribes again once it has room for a whole
// buffer.

// intakeWatch tells Run when to pause and resume its subscription. It is
// Run's alone; the subscription's goroutine reports through
// Worker.waitingSlot and Worker.taken.
type intakeWatch struct {
	w    *Worker
	tick *time.Ticker // every AckWait/6
	past [3]uint64    // Worker.taken at the last three ticks: AckWait/2
	n    int          // ticks seen
}

func newIntakeWatch(w *Worker) *intakeWatch {
	return &intakeWatch{w: w, tick: time.NewTicker(w.opts.AckWait / keepAliveTicks)}
}

// stale is called at each tick: it reports whether jobs may have waited in
// the pull buffer for AckWait/2. That is so when the subscription waits for
// a slot now, and over the last AckWait/2 it took fewer jobs than the
// buffer holds: a job at the back of a full buffer then has not reached it.
func (iw *intakeWatch) stale() bool {
	taken := iw.w.taken.Load()
	oldest := iw.past[iw.n%len(iw.past)] // taken three ticks ago
	iw.past[iw.n%len(iw.past)] = taken
	iw.n++
	return iw.n > len(iw.past) && iw.w.waitingSlot.Load() &&
		taken-oldest < uint64(iw.w.opts.PullMaxMessages)
}

// room reports whether the worker holds few enough jobs to take a whole
// pull buffer without waiting (half its slots when the buffer is as large
// as they are).
func (iw *intakeWatch) room() bool {
	free := cap(iw.w.slots) - len(iw.w.slots)
	return free >= min(iw.w.opts.PullMaxMessages, cap(iw.w.slots)/2)
}

// awaitRoom waits, the subscription stopped, until room reports true (and
// the watch starts afresh), or ctx is done or fatal reports (false, and
// the error from fatal).
func (iw *intakeWatch) awaitRoom(ctx context.Context, fatal <-chan error) (bool, error) {
	w := iw.w
	held := len(w.slots)
	w.log.Info("intake paused: jobs waited in the pull buffer behind a full engine; the server sends them again after the ack wait",
		slog.Int("jobs_held", held), slog.Int("max_in_flight", cap(w.slots)), slog.Duration("ack_wait", w.opts.AckWait))
	w.m.intakePauses.Inc()
	start := time.Now()
	for !iw.room() {
		select {
		case <-ctx.Done():
			return false, nil
		case err := <-fatal:
			return false, err
		case <-iw.tick.C:
		}
	}
	iw.past, iw.n = [3]uint64{}, 0
	w.log.Info("intake resumed", slog.Int("jobs_held", len(w.slots)), slog.Duration("paused", time.Since(start).Round(time.Millisecond)))
	return true, nil
}
