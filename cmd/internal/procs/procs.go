// Package procs runs the process on one P while it is lightly loaded.
//
// With GOMAXPROCS above one, every goroutine made ready while a P is idle
// wakes a second thread, which spins and sleeps again: at a few thousand
// jobs a second, where each job is a few socket events and hand-offs, those
// wake-ups cost more CPU than the work (measured on 2 cores: 1.4× the CPU
// per job at 10 000 jobs/s, 1.3× at 1 000, and a higher p99). One P does the
// same work without them. A Governor starts the process on one P, watches
// its CPU use and keeps one P while it stays well below one core; above, it
// gives the runtime its default back (GOMAXPROCS, or the CPUs or CPU
// limit), and takes one P again only once the load has stayed low for a
// while.
package procs

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"time"
)

// Thresholds of a Governor, in cores of CPU used by the process.
const (
	// Up: on one P, a sample above this gives the runtime its default P
	// count back (one P is close to busy: work would start to queue).
	Up = 0.7
	// Down: with more than one P, samples below this for DownAfter in a
	// row take one P again. It is below Up by more than the wake-ups one P
	// saves, so the two do not flap.
	Down = 0.45
	// DownAfter is how many samples in a row Down needs.
	DownAfter = 3
	// Every is the sampling interval.
	Every = time.Second
)

// Governor decides between one P and the runtime's default. Its zero value
// is not usable: use New.
type Governor struct {
	one   bool // running on one P
	quiet int  // samples below Down in a row, with more than one P
	// set applies a decision: one P, or the runtime's default.
	set func(one bool)
	log *slog.Logger
}

// New returns a governor that applies its decisions with
// runtime.GOMAXPROCS(1) and runtime.SetDefaultGOMAXPROCS.
func New(log *slog.Logger) *Governor {
	return &Governor{set: setProcs, log: log}
}

func setProcs(one bool) {
	if one {
		runtime.GOMAXPROCS(1)
		return
	}
	runtime.SetDefaultGOMAXPROCS()
}

// Observe takes one sample, the cores the process used since the last one,
// and applies the decision it leads to; it reports whether the process now
// runs on one P.
func (g *Governor) Observe(cores float64) bool {
	switch {
	case g.one && cores > Up:
		g.one, g.quiet = false, 0
		g.set(false)
		g.log.Debug("load above one P: back to the default P count", slog.Float64("cores", cores))
	case !g.one && cores < Down:
		if g.quiet++; g.quiet >= DownAfter {
			g.one, g.quiet = true, 0
			g.set(true)
			g.log.Debug("light load: one P", slog.Float64("cores", cores))
		}
	case !g.one:
		g.quiet = 0
	}
	return g.one
}

// Run takes one P, then samples the process's CPU use every Every and
// observes it until ctx ends; it then gives the runtime its default P count
// back. It starts on one P because most of the time a worker is lightly
// loaded: a busy one has its default back after the first sample (1 s),
// where starting on the default left a light one on it for DownAfter
// samples (measured at 10 000 jobs/s, the first 10 s after a 1 s warm-up
// cost 8% more CPU). It does nothing (but wait for ctx) when the runtime's
// default is one P already.
func (g *Governor) Run(ctx context.Context) {
	if _, ok := cpuTime(); !ok || runtime.GOMAXPROCS(0) <= 1 {
		<-ctx.Done()
		return
	}
	defer func() {
		if g.one {
			g.one = false
			g.set(false)
		}
	}()
	g.one, g.quiet = true, 0
	g.set(true)
	t := time.NewTicker(Every)
	defer t.Stop()
	lastCPU, _ := cpuTime()
	lastAt := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cpu, _ := cpuTime()
			if wall := now.Sub(lastAt); wall > 0 {
				g.Observe(float64(cpu-lastCPU) / float64(wall))
			}
			lastCPU, lastAt = cpu, now
		}
	}
}

// Govern starts a Governor for the process until ctx ends, unless auto is
// false or the environment sets GOMAXPROCS (the operator chose).
func Govern(ctx context.Context, auto bool, log *slog.Logger) {
	if !auto || os.Getenv("GOMAXPROCS") != "" {
		return
	}
	go New(log).Run(ctx)
}
