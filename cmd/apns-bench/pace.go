package main

import (
	"context"
	"time"
)

// defaultPaceStep is how often a pacer releases the jobs that fell due,
// unless -pace-step says otherwise: a step of 1 ms offers a rate evenly
// (10 jobs a step at 10 000 jobs/s), without a timer a job.
const defaultPaceStep = time.Millisecond

// offer is the pace of a publisher: rate jobs/s (0: as fast as it can),
// the jobs that fell due released together every step.
type offer struct {
	rate float64
	step time.Duration
}

// pacer offers jobs at a steady rate: job i is due i/rate after start, and
// each step releases the jobs due by then. A nil pacer (rate 0) releases
// every job at once.
type pacer struct {
	rate  float64
	start time.Time
	tick  *time.Ticker
}

// newPacer returns a pacer for o from start, nil for rate 0. Stop it when
// done.
func newPacer(o offer, start time.Time) *pacer {
	if o.rate <= 0 {
		return nil
	}
	step := o.step
	if step <= 0 {
		step = defaultPaceStep
	}
	return &pacer{rate: o.rate, start: start, tick: time.NewTicker(step)}
}

// due is when job i is due, from start.
func (p *pacer) due(i int) time.Duration {
	return time.Duration(float64(i) / p.rate * float64(time.Second))
}

// wait blocks until job i is due; it returns false if ctx ended first.
func (p *pacer) wait(ctx context.Context, i int) bool {
	if p == nil {
		return ctx.Err() == nil
	}
	for time.Since(p.start) < p.due(i) {
		select {
		case <-p.tick.C:
		case <-ctx.Done():
			return false
		}
	}
	return ctx.Err() == nil
}

func (p *pacer) stop() {
	if p != nil {
		p.tick.Stop()
	}
}
