package consumer

import (
	"time"
)

// The list of jobs in flight, kept alive (InProgress) while they wait
// for their outcome.

// track adds a received job to the in-flight list.
func (w *Worker) track(it *item) {
	w.mu.Lock()
	it.epoch = w.epoch
	// At most a pull buffer's worth a tick: past that, the buffer turns
	// over faster than a tick, and no job waited in it for long.
	if w.epoch-w.slotWaitEpoch <= keepAliveTicks && len(w.early) < w.opts.PullMaxMessages {
		w.early = append(w.early, it)
	}
	if w.tail == nil {
		w.head, w.tail = it, it
	} else {
		it.prev = w.tail
		w.tail.next = it
		w.tail = it
	}
	w.n++
	w.mu.Unlock()
	w.m.inFlight.Inc()
}

func (w *Worker) unlinkLocked(it *item) {
	if it.prev != nil {
		it.prev.next = it.next
	} else {
		w.head = it.next
	}
	if it.next != nil {
		it.next.prev = it.prev
	} else {
		w.tail = it.prev
	}
	it.prev, it.next = nil, nil
}

func (w *Worker) untrack(it *item) {
	w.mu.Lock()
	w.unlinkLocked(it)
	w.n--
	if w.n == 0 && w.idle != nil {
		close(w.idle)
		w.idle = nil
	}
	w.mu.Unlock()
	w.m.inFlight.Dec()
}

// InFlight returns the number of jobs received and not yet acked, naked or
// terminated.
func (w *Worker) InFlight() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// keepAliveTicks is keepAlive's ticks in an AckWait.
const keepAliveTicks = 6

// keepAlive sends InProgress for jobs that have waited for two or more
// ticks of AckWait/6: a job gets its first between AckWait/6 and AckWait/3
// after it was received, and one every AckWait/3 after that. Jobs finished
// within AckWait/6 never get one. The hot path pays only for the list
// insert it needs anyway. Jobs received behind a full engine (Worker.early)
// get their first at the next tick.
func (w *Worker) keepAlive() {
	defer w.wg.Done()
	t := time.NewTicker(w.opts.AckWait / keepAliveTicks)
	defer t.Stop()
	var old []*item
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		w.mu.Lock()
		w.epoch++
		cur := w.epoch
		old = append(old, w.early...)
		clear(w.early)
		w.early = w.early[:0]
		for it := w.head; it != nil && it.epoch <= cur-2; it = w.head {
			w.unlinkLocked(it)
			it.epoch = cur
			it.prev = w.tail
			if w.tail == nil {
				w.head = it
			} else {
				w.tail.next = it
			}
			w.tail = it
			old = append(old, it)
		}
		w.mu.Unlock()
		for i, it := range old {
			if !it.done.Load() {
				_ = it.msg.InProgress() // fails only if finished meanwhile
			}
			old[i] = nil
		}
		old = old[:0]
	}
}
