// Package gcfloor keeps the garbage collector's heap goal at or above a
// floor while the live heap is small.
//
// With GOGC at its default of 100 the heap goal is about twice the live
// heap, and at least 4 MiB. A worker at a few thousand jobs a second holds a
// live heap of a megabyte or two and allocates about 1 KiB a job (nearly
// half of it nats.go's copy of each message), so at 10 000 jobs/s it
// collects five times a second. On one P a cycle takes a millisecond or more
// of wall time, and the jobs that arrive meanwhile wait for it. A floor of
// 32 MiB makes the cycles some ten times rarer at that rate, for about the
// floor in memory (one cycle may overshoot after a jump of the live heap,
// since GOGC is set after each collection). Once the live heap is half the
// floor or more, the goal is GOGC's own.
package gcfloor

import (
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// maxPercent bounds the GOGC a floor sets, well inside the runtime's
// int32. A tiny heap needs floor/minHeap × 100 (minHeap below): 1 638 400
// for the largest floor the configuration allows, 64 GiB; a floor above
// 80 GiB is met only once the live heap has grown.
const maxPercent = 2_000_000

// Metrics read after each collection.
var names = []string{
	"/gc/heap/live:bytes",    // marked live by the last cycle
	"/gc/scan/stack:bytes",   // scannable stacks
	"/gc/scan/globals:bytes", // scannable globals
	"/gc/gogc:percent",       // GOGC now
}

// Keep raises GOGC after each collection so that the next heap goal is at
// least floor bytes, never lowering it below its value at the call, until
// stop is called (which restores that value). It does nothing, and stop
// does nothing, if floor is 0 or the GOGC environment variable has a value:
// an explicit GOGC rules (an empty one is the runtime's default, and is not
// taken as one). GOMEMLIMIT, if set, still bounds the heap.
func Keep(floor uint64, log *slog.Logger) (stop func()) {
	return keep(floor, log, nil)
}

// keep is Keep, telling onTune (tests) each GOGC it computes.
func keep(floor uint64, log *slog.Logger, onTune func(percent int)) (stop func()) {
	if floor == 0 {
		return func() {}
	}
	if v := os.Getenv("GOGC"); v != "" {
		log.Info("GOGC is set: no GC floor", slog.String("GOGC", v))
		return func() {}
	}
	t := &tuner{floor: floor, samples: make([]metrics.Sample, len(names)), onTune: onTune}
	for i, n := range names {
		t.samples[i].Name = n
	}
	metrics.Read(t.samples)
	t.base = int(t.samples[3].Value.Uint64())
	if t.base < 0 { // GC turned off (debug.SetGCPercent(-1)): leave it so
		return func() {}
	}
	t.set = t.base
	t.arm()
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.stopped.CompareAndSwap(false, true) {
			debug.SetGCPercent(t.base)
		}
	}
}

type tuner struct {
	floor   uint64
	base    int        // GOGC at the start
	mu      sync.Mutex // a tune against stop
	set     int        // GOGC last set; mu
	stopped atomic.Bool
	samples []metrics.Sample
	onTune  func(int)
}

// sentinel is the object whose finalizer runs after each collection. It
// holds a pointer so that it is not a tiny allocation, which may share a
// block with others and never be finalized.
type sentinel struct{ _ *byte }

// arm allocates a sentinel that nothing references: the next collection
// finds it unreachable and queues its finalizer, which tunes and arms the
// next one.
func (t *tuner) arm() {
	runtime.SetFinalizer(&sentinel{}, func(*sentinel) {
		if t.stopped.Load() {
			return
		}
		t.tune()
		t.arm()
	})
}

// tune sets GOGC for the live heap the last collection found.
func (t *tuner) tune() {
	metrics.Read(t.samples)
	p := percent(t.floor, t.samples[0].Value.Uint64(), t.samples[1].Value.Uint64()+t.samples[2].Value.Uint64(), t.base)
	t.mu.Lock()
	if p != t.set && !t.stopped.Load() { // after stop, GOGC stays restored
		debug.SetGCPercent(p)
		t.set = p
	}
	t.mu.Unlock()
	if t.onTune != nil {
		t.onTune(p)
	}
}

// minHeap is the runtime's minimum heap goal at GOGC=100; it scales with
// GOGC (4 MiB × GOGC/100).
const minHeap = 4 << 20

// percent is the GOGC that puts the heap goal at floor: the goal is live +
// (live + roots) × GOGC/100, but at least minHeap × GOGC/100, so GOGC need
// not exceed floor/minHeap × 100. It is never below base (nor above
// maxPercent).
func percent(floor, live, roots uint64, base int) int {
	scan := live + roots
	if floor <= live || scan == 0 {
		return base
	}
	p := (floor - live) * 100 / scan
	if (floor-live)*100%scan != 0 {
		p++ // round up: the goal reaches the floor
	}
	p = min(p, (floor*100+minHeap-1)/minHeap, maxPercent)
	return max(base, int(p))
}
