package main

import (
	"context"
	"time"
)

// paceStep is how often a pacer releases the jobs that fell due: a step of
// 1 ms offers a rate evenly (10 jobs a step at 10 000 jobs/s), without a
// timer a job.
const paceStep = time.Millisecond

// pacer offers jobs at a steady rate: job i is due i/rate after start, and
// each step releases the jobs due by then. A nil pacer (rate 0) releases
// every job at once.
type pacer struct {
	rate  float64
	start time.Time
	tick  *time.Ticker
}

// newPacer returns a pacer for rate jobs/s from start, nil for rate 0. Stop
// it when done.
func newPacer(rate float64, start time.Time) *pacer {
	if rate <= 0 {
		return nil
	}
	return &pacer{rate: rate, start: start, tick: time.NewTicker(paceStep)}
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
