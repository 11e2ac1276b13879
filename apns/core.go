package apns

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetpush/apns-worker/apns/internal/h2conn"
)

// delivery is one accepted notification on its way to its outcome. The
// core keeps its bookkeeping; the wire scratch belongs to the wire that
// holds it at the time.
type delivery struct {
	deliveryState
	stream *h2conn.Stream // HTTP2Engine: the stream's state while a connection holds it (withStreams)
}

// deliveryState is what recycle clears: the lines of memory every engine
// touches. The stream is the HTTP/2 connection's to reset (it does, as it
// opens a stream).
//
// With the stream pointer, a delivery is two cache lines (TestDeliverySize):
// the first holds what Send writes and a
// wire reads and stamps as it writes (Send, the wire and the dispatcher
// run on different cores, and a delivery moves between them), the second
// what an outcome and a retry need.
type deliveryState struct {
	n        *Notification
	ref      any
	accepted time.Time
	attempts int32  // times written to APNs
	probe    bool   // let through a closed gate to probe the credentials
	marker   bool   // binary: a confirm marker, not a notification
	gen      uint64 // credentials-gate generation when last written

	outErr   error          // the outcome's error, once reported
	tok      *providerToken // HTTP/2, token auth: the token it was last sent with
	apnsID   string         // HTTP/2: the apns-id APNs answered
	retries  int32          // counted temporary failures
	free     int32          // resends that cost no retry: provably not processed
	idleEnds int32          // binary: free resends after connections that ended without a verdict on it
}

// H2Stream makes a delivery an h2conn request.
func (d *delivery) H2Stream() *h2conn.Stream { return d.stream }

// withStreams makes the core's deliveries carry an h2conn.Stream (the
// HTTP2Engine's), in the same allocation, kept with the delivery through
// the pool. The other engines' deliveries, without one, are 128 bytes: with
// 50 000 in flight, half the memory to go through.
func (c *core) withStreams() {
	c.pool.New = func() any {
		ds := new(struct {
			delivery
			stream h2conn.Stream
		})
		ds.delivery.stream = &ds.stream
		return &ds.delivery
	}
}

// core is the delivery contract every engine shares, written once:
// admission (Send), exactly one outcome per accepted notification, retries
// with one back-off, the credentials gate, and Close. An engine's wire takes
// deliveries from queue, stamps each write with written, and reports what
// APNs answered through finish (an outcome) or retry (send it again).
//
// Outcomes are handed to the OutcomeFunc by one dispatcher goroutine, never
// by a wire: a slow OutcomeFunc holds up Send (a delivery's slot is freed
// only once its outcome was handled), not an engine's reader or writer.
type core struct {
	o            *options
	addr         string // what the engine connects to, for logs
	validate     func(*Notification) error
	maxFree      int     // free resends of one delivery before they count as retries
	retryBackoff Backoff // wait before a counted retry
	abortWires   func()  // Close gave up: make the wires fail what they hold

	queue chan *delivery // accepted, waiting for a wire (new or sent again)
	slots admission      // one per accepted delivery without a handled outcome

	mu      sync.RWMutex // Send holds R while it queues; Close takes W
	closed  bool         // under mu
	closing chan struct{}
	drained chan struct{} // closed when closing and nothing is pending
	aborted chan struct{} // closed when a Close gave up (its ctx ended)
	ctx     context.Context
	cancel  context.CancelFunc

	closeOnce, drainOnce, abortOnce, endOnce sync.Once
	closeErr                                 error
	closeFailed                              atomic.Int64          // outcomes failed because Close gave up
	lastErr                                  atomic.Pointer[error] // last connection error, cause of those

	timersMu sync.Mutex
	timers   map[*delivery]*time.Timer // retries waiting out their back-off

	gate credGate
	out  dispatcher
	pool sync.Pool // *delivery

	// Answers that were not APNs' verdicts (HTTP/2 family).
	faults        faultCounts
	faultLogAt    atomic.Int64 // unix ns of the last fault logged
	faultQuiet    atomic.Int64 // faults not logged since
	faultingSince atomic.Int64 // unix ns of the first fault since the last verdict; 0: none
}

// newCore starts the core of an engine with these options; validate checks
// a notification against the engine's limits. The engine sets abortWires
// (and may change maxFree and retryBackoff) before its wires start.
func newCore(o *options, addr string, validate func(*Notification) error) *core {
	ctx, cancel := context.WithCancel(context.Background())
	c := &core{
		o:            o,
		addr:         addr,
		validate:     validate,
		maxFree:      maxFreeResends,
		retryBackoff: Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second},
		abortWires:   func() {},
		queue:        make(chan *delivery, o.maxInFlight),
		slots:        admission{max: int64(o.maxInFlight), wake: make(chan struct{}, 1)},
		closing:      make(chan struct{}),
		drained:      make(chan struct{}),
		aborted:      make(chan struct{}),
		ctx:          ctx,
		cancel:       cancel,
		timers:       make(map[*delivery]*time.Timer),
		gate:         credGate{now: o.now, every: gateProbeEvery, log: o.log},
	}
	c.pool.New = func() any { return new(delivery) }
	c.out.wake = make(chan struct{}, 1)
	c.out.done = make(chan struct{})
	go c.dispatch()
	return c
}

// maxFreeResends bounds the resends of one delivery that cost no retry
// (refused streams, GOAWAY, a token refresh), so that a server that refuses
// everything fails notifications instead of keeping them forever.
const maxFreeResends = 8

// send is Engine.Send: it fails only for an invalid n, a done ctx, a closed
// engine, or refused credentials (but for a probe every interval), and
// blocks while maxInFlight notifications wait for their outcome.
func (c *core) send(ctx context.Context, n *Notification, ref any) error {
	if n == nil {
		return fmt.Errorf("%w: nil notification", ErrInvalidNotification)
	}
	if err := c.validate(n); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return ErrClosed
	}
	probe, err := c.gate.admit()
	if err != nil {
		return err
	}
	if err := c.slots.acquire(ctx, c.closing); err != nil {
		return err
	}
	d := c.pool.Get().(*delivery)
	d.n, d.ref, d.accepted, d.probe = n, ref, c.o.now(), probe
	c.queue <- d // never blocks: every queued delivery holds a slot
	return nil
}

// close is Engine.Close: it stops intake and waits until every accepted
// notification has its outcome, or ctx ends; then it makes the wires and
// the retries fail the rest with ErrClosed. stopWires returns once the
// engine's goroutines are gone (they stop by themselves once drained or
// aborted). A call whose ctx ended first returns an error counting the
// failed outcomes and wrapping ctx's cause; any other call returns nil
// once every outcome was reported.
func (c *core) close(ctx context.Context, stopWires func()) error {
	c.closeOnce.Do(func() {
		close(c.closing)
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		if c.slots.held.Load() == 0 {
			c.drainOnce.Do(func() { close(c.drained) })
		}
	})
	gaveUp := false
	select {
	case <-c.drained:
	case <-ctx.Done():
		gaveUp = true
		c.abort()
	}
	stopWires()
	c.endOnce.Do(func() {
		// After an abort: fail what is still queued (a retry whose timer
		// fired meanwhile) until every outcome was handled.
		for done := false; !done; {
			select {
			case <-c.drained:
				done = true
			case d := <-c.queue:
				c.failClosed(d)
			}
		}
		c.out.stop()
		c.cancel()
		if n := c.closeFailed.Load(); n > 0 {
			c.closeErr = fmt.Errorf("apns: close: %d notifications failed: %w", n, context.Cause(ctx))
		}
	})
	if gaveUp {
		return c.closeErr
	}
	return nil
}

// abort gives up the drain: waiting retries fail now, the wires fail what
// they hold.
func (c *core) abort() {
	c.abortOnce.Do(func() {
		c.timersMu.Lock()
		close(c.aborted)
		waiting := make([]*delivery, 0, len(c.timers))
		for d, t := range c.timers {
			t.Stop()
			waiting = append(waiting, d)
		}
		clear(c.timers)
		c.timersMu.Unlock()
		c.cancel()
		c.abortWires()
		for _, d := range waiting {
			c.failClosed(d)
		}
	})
}

func (c *core) isAborted() bool { return chanClosed(c.aborted) }
func (c *core) isClosing() bool { return chanClosed(c.closing) }

// chanClosed reports whether ch, which is never sent on, is closed.
func chanClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// setLastErr records a connection error, the cause given with ErrClosed.
func (c *core) setLastErr(err error) { c.lastErr.Store(&err) }

// closedErr is the cause of outcomes failed because Close gave up.
func (c *core) closedErr() error {
	if p := c.lastErr.Load(); p != nil {
		return fmt.Errorf("%w (last connection error: %v)", ErrClosed, *p)
	}
	return ErrClosed
}

// failClosed fails d because Close gave up.
func (c *core) failClosed(d *delivery) {
	c.closeFailed.Add(1)
	c.finish(d, c.closedErr())
}

// written stamps a write of d: one more attempt, at the gate's current
// generation.
func (c *core) written(d *delivery) {
	d.attempts++
	d.gen = c.gate.gen.Load()
}

// expired returns the error of a notification whose expiration passed
// before it could be sent (again), or nil.
func expired(n *Notification, now time.Time) error {
	if exp := n.Expiration; !exp.IsZero() && exp.Unix() > 0 && exp.Before(now) {
		return fmt.Errorf("%w: expiration %s", ErrExpired, exp.UTC().Format(time.RFC3339))
	}
	return nil
}

// gateErr is the refusal that holds d back: nil when the gate is open, or
// for the probe.
func (c *core) gateErr(d *delivery) error {
	if d.probe {
		return nil
	}
	return c.gate.refusal()
}

// closeGate records that APNs refused the credentials and fails what is
// queued with the refusal, which it returns. probes says whether Send lets
// a probe through every interval (else the wire probes by redialling);
// refused is the provider token APNs refused, if any.
func (c *core) closeGate(err error, probes bool, refused *providerToken) error {
	err = c.gate.close(err, probes, refused)
	c.failQueued(err)
	return err
}

// failQueued fails everything queued now with err.
func (c *core) failQueued(err error) {
	for {
		select {
		case d := <-c.queue:
			c.finish(d, err)
		default:
			return
		}
	}
}

// finish reports d's outcome: err nil is delivered, a *RejectionError
// rejected, anything else failed. A delivery's outcome is reported once:
// the caller gives up d.
func (c *core) finish(d *delivery, err error) {
	if d.marker {
		return
	}
	c.settle(d, err)
	c.out.push(d)
}

// finishDelivered reports a run of deliveries delivered (no marker among
// them) without reading them: the dispatcher settles them as it hands their
// outcomes over. A wire that assumes a run delivered after a window (the
// binary engine) calls it with deliveries it has not touched since it wrote
// them, so that only the dispatcher reads them again. The caller keeps ds.
func (c *core) finishDelivered(ds []*delivery) { c.out.pushDelivered(ds) }

// settle records d's outcome.
func (c *core) settle(d *delivery, err error) {
	if err == nil {
		c.gate.succeeded(d.gen, d.tok)
	}
	d.outErr = err
}

// outcome is d's Outcome, once reported.
func (d *delivery) outcome() Outcome {
	return Outcome{
		Ref:          d.ref,
		Notification: d.n,
		Err:          d.outErr,
		APNsID:       d.apnsID,
		Attempts:     int(d.attempts),
		Accepted:     d.accepted,
	}
}

// recycle returns d to the pool once its outcome was handled.
func (c *core) recycle(d *delivery) {
	d.deliveryState = deliveryState{} // the stream keeps its buffer of answers
	c.pool.Put(d)
}

// release frees the slots of n deliveries whose outcomes were handled.
func (c *core) release(n int) {
	if c.slots.release(int64(n)) == 0 && c.isClosing() {
		c.drainOnce.Do(func() { close(c.drained) })
	}
}

// retry sends d again after a temporary failure. A counted one uses up one
// of d's retries (failing it, wrapping ErrRetriesExhausted and cause, when
// none is left) and waits a back-off; a free one (the notification was
// provably not processed) goes back at once, maxFree times, after which
// free resends count too.
func (c *core) retry(d *delivery, cause error, counted bool) {
	if d.marker {
		return
	}
	if !counted {
		d.free++
		counted = int(d.free) > c.maxFree
	}
	var delay time.Duration
	if counted {
		d.retries++
		if int(d.retries) > c.o.maxRetries {
			c.o.log.LogAttrs(context.Background(), slog.LevelWarn, "notification failed: retries exhausted",
				slog.Any("token", d.n.Token), slog.Int("attempts", int(d.attempts)), slog.String("cause", cause.Error()))
			c.finish(d, fmt.Errorf("%w after %d attempts: %w", ErrRetriesExhausted, d.attempts, cause))
			return
		}
		delay = c.retryBackoff.Delay(int(d.retries))
	}
	if err := c.gateErr(d); err != nil {
		c.finish(d, err)
		return
	}
	c.timersMu.Lock()
	if c.isAborted() {
		c.timersMu.Unlock()
		c.failClosed(d)
		return
	}
	if delay == 0 {
		c.timersMu.Unlock()
		c.queue <- d // never blocks: d holds a slot
		return
	}
	c.timers[d] = time.AfterFunc(delay, func() {
		c.timersMu.Lock()
		_, mine := c.timers[d]
		delete(c.timers, d)
		c.timersMu.Unlock()
		if !mine {
			return // abort took it
		}
		if err := c.gateErr(d); err != nil {
			c.finish(d, err)
			return
		}
		c.queue <- d
	})
	c.timersMu.Unlock()
}

// stats fills the core's part of a Stats snapshot.
func (c *core) stats(s *Stats) {
	s.InFlight = int(c.slots.held.Load())
	s.CredentialsErr = c.gate.refusal()
	s.Faults = c.faults.snapshot()
	if ns := c.faultingSince.Load(); ns != 0 {
		s.FaultingSince = time.Unix(0, ns)
	}
}

// dispatcher hands outcomes to the OutcomeFunc from one goroutine, in
// batches: each in the order reported, runs of deliveries to settle as
// delivered (finishDelivered) after the other outcomes of the batch.
type dispatcher struct {
	mu        sync.Mutex
	q         []*delivery // reported, their outcomes not yet handled
	delivered []*delivery // reported delivered, not yet settled (finishDelivered)
	idle      bool        // the goroutine waits on wake
	stopping  bool
	wake      chan struct{} // cap 1
	done      chan struct{}
}

// push queues an outcome; it never blocks (at most maxInFlight are queued).
func (q *dispatcher) push(d *delivery) {
	q.mu.Lock()
	q.q = append(q.q, d)
	q.wakeUnlock()
}

// pushDelivered queues a run of deliveries to settle as delivered.
func (q *dispatcher) pushDelivered(ds []*delivery) {
	q.mu.Lock()
	q.delivered = append(q.delivered, ds...)
	q.wakeUnlock()
}

// stop ends the dispatcher once its queue is empty, and waits for it.
func (q *dispatcher) stop() {
	q.mu.Lock()
	q.stopping = true
	q.wakeUnlock()
	<-q.done
}

// wakeUnlock unlocks mu, and wakes the dispatcher if it is idle.
func (q *dispatcher) wakeUnlock() {
	wake := q.idle
	if wake {
		q.idle = false
	}
	q.mu.Unlock()
	if wake {
		q.wake <- struct{}{}
	}
}

// dispatch is the dispatcher's goroutine.
func (c *core) dispatch() {
	q := &c.out
	defer close(q.done)
	var batch, delivered []*delivery
	for {
		q.mu.Lock()
		for len(q.q) == 0 && len(q.delivered) == 0 {
			if q.stopping {
				q.mu.Unlock()
				return
			}
			q.idle = true
			q.mu.Unlock()
			<-q.wake
			q.mu.Lock()
		}
		batch, q.q = q.q, batch[:0]
		delivered, q.delivered = q.delivered, delivered[:0]
		q.mu.Unlock()
		for _, d := range delivered {
			c.settle(d, nil)
		}
		c.handOver(batch)
		c.handOver(delivered)
	}
}

// handOver gives the OutcomeFunc the outcomes of settled deliveries,
// recycles them and frees their slots. It clears ds.
func (c *core) handOver(ds []*delivery) {
	if len(ds) == 0 {
		return
	}
	for i := range ds {
		c.o.outcome(ds[i].outcome())
		c.recycle(ds[i])
		ds[i] = nil
	}
	c.release(len(ds))
}

// admission bounds the deliveries without a handled outcome: acquire takes
// a slot, blocking while max are held; release frees several at once. The
// count is an atomic (a CAS to take, an add to free), so a Send and the
// dispatcher's batch cost no channel operation each; a Send that must wait
// sleeps on wake, which release rings when someone waits.
type admission struct {
	held    atomic.Int64
	max     int64
	waiters atomic.Int64
	wake    chan struct{} // cap 1
}

// tryAcquire takes a slot if one is free.
func (a *admission) tryAcquire() bool {
	for {
		n := a.held.Load()
		if n >= a.max {
			return false
		}
		if a.held.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// acquire takes a slot, waiting while none is free; it fails with ctx's
// error, or ErrClosed once stop is closed.
func (a *admission) acquire(ctx context.Context, stop <-chan struct{}) error {
	if a.tryAcquire() {
		return nil
	}
	// Counted as a waiter before trying again: a release either comes
	// after that try (and sees the waiter: it rings) or before (and the
	// try sees the slot it freed).
	a.waiters.Add(1)
	defer a.waiters.Add(-1)
	for {
		if a.tryAcquire() {
			if a.held.Load() < a.max && a.waiters.Load() > 1 {
				a.ring() // room for another waiter: pass the wake on
			}
			return nil
		}
		select {
		case <-a.wake:
		case <-ctx.Done():
			return ctx.Err()
		case <-stop:
			return ErrClosed
		}
	}
}

// release frees n slots and returns how many are still held.
func (a *admission) release(n int64) int64 {
	left := a.held.Add(-n)
	if a.waiters.Load() > 0 {
		a.ring()
	}
	return left
}

func (a *admission) ring() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}
