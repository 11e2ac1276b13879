package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetpush/apns-worker/apns"
)

// instantEngine answers every notification at once, without APNs or a
// network, as the bench's own servers would: 400 BadDeviceToken for a
// 0xbad0… token, delivered otherwise. It keeps the engine contract the
// worker relies on (Send validates, blocks at maxInFlight, one outcome per
// accepted notification, handed over by one goroutine as the core's
// dispatcher does), so a worker wired to it costs what the worker itself
// costs: -compare's no-apns phase.
type instantEngine struct {
	out   apns.OutcomeFunc
	limit apns.Limits
	queue chan apns.Outcome // accepted, waiting for the hand-over goroutine
	done  chan struct{}     // closed when the hand-over goroutine returns

	mu       sync.RWMutex // Send holds R while it queues; Close takes W
	closed   bool
	inFlight atomic.Int64
}

// newInstantEngine starts an instantEngine that hands outcomes to out and
// holds at most maxInFlight queued notifications.
func newInstantEngine(out apns.OutcomeFunc, maxInFlight int) *instantEngine {
	e := &instantEngine{
		out: out, limit: apns.HTTP2Limits,
		queue: make(chan apns.Outcome, max(maxInFlight, 1)), done: make(chan struct{}),
	}
	go e.handOver()
	return e
}

func (e *instantEngine) handOver() {
	defer close(e.done)
	for o := range e.queue {
		e.out(o)
		e.inFlight.Add(-1)
	}
}

// Send validates n for HTTP/2 and queues its outcome.
func (e *instantEngine) Send(ctx context.Context, n *apns.Notification, ref any) error {
	if n == nil {
		return fmt.Errorf("%w: nil notification", apns.ErrInvalidNotification)
	}
	if err := n.Validate(e.limit); err != nil {
		return err
	}
	o := apns.Outcome{Ref: ref, Notification: n, Attempts: 1, Accepted: time.Now()}
	if _, bad := rejectBadPrefix(n.Token); bad {
		o.Err = &apns.RejectionError{HTTPStatus: 400, Reason: apns.ReasonBadDeviceToken}
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return apns.ErrClosed
	}
	e.inFlight.Add(1)
	select {
	case e.queue <- o:
		return nil
	case <-ctx.Done():
		e.inFlight.Add(-1)
		return ctx.Err()
	}
}

// Close stops intake and waits until every queued outcome was handed over,
// or ctx ends.
func (e *instantEngine) Close(ctx context.Context) error {
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		close(e.queue)
	}
	e.mu.Unlock()
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("instant engine: close: %d outcomes not handed over: %w", e.inFlight.Load(), ctx.Err())
	}
}

func (e *instantEngine) Stats() apns.Stats {
	return apns.Stats{Conns: 1, Connected: 1, InFlight: int(e.inFlight.Load())}
}
