package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpush/apns-worker/apns"
)

// Worker moves jobs from the jobs stream to an apns.Engine and turns each
// outcome into an ack, a nak or a term, plus the events producers act on.
//
// Wire it so: w := New(js, opts); the engine is built with
// apns.WithOutcomeFunc(w.HandleOutcome); then Run(ctx, eng) until ctx is
// done; then Shutdown(sctx, eng); then drain the NATS connection. See the
// package documentation for the shutdown sequence.
type Worker struct {
	js   jetstream.JetStream
	opts Options
	// limits are the protocol's checks validate applies.
	limits apns.Limits
	log    *slog.Logger
	m      *Metrics
	cons   jetstream.Consumer

	// Jobs received and not yet finished, oldest first: what InProgress
	// keeps alive and what Shutdown waits for.
	mu    sync.Mutex
	head  *item
	tail  *item
	n     int
	epoch int64 // keep-alive ticks
	// Jobs received while the subscription had to wait for a slot in the
	// last AckWait (slotWaitEpoch: the tick of the last wait), at most
	// PullMaxMessages a tick: they may have waited in the pull buffer, so
	// keepAlive sends their first InProgress at its next tick, not two or
	// three ticks on.
	early         []*item
	slotWaitEpoch int64
	idle          chan struct{} // closed when n drops to 0, if someone waits

	pending chan *pendingEvents // events awaiting their PubAck, FIFO

	hmu          sync.Mutex // held by the job handler
	intakeClosed bool       // hmu; set when Run returns

	// slots holds a token for each job received and not yet finished: at
	// most MaxInFlight, so the pull buffer is not refilled while the
	// engine cannot take more.
	slots chan struct{}
	// What the intake pause watches (intake.go): the subscription's
	// goroutine waits for a slot; jobs it took.
	waitingSlot atomic.Bool
	taken       atomic.Uint64

	// The sender's view of the engine's credentials: while credErr is
	// set, the sender holds its job and calls Send only for a probe, at
	// probeAt; eng.Stats() is consulted again at credCheck. Sender
	// goroutine only.
	credErr   error
	credCheck time.Time
	probeAt   time.Time

	running  atomic.Bool
	runDone  chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	// smu orders wg.Add for late work (publishMinimal) before Shutdown's
	// wg.Wait: stopped is set, under smu, when stop is closed.
	smu     sync.Mutex
	stopped bool

	lastCredsLog atomic.Int64 // unix nanos; rate-limits the credentials error
	lastHeal     atomic.Int64 // unix nanos; rate-limits healEvents
}

// item is one received job, the ref passed to Engine.Send.
type item struct {
	w   *Worker
	msg jetstream.Msg
	id  string             // job id; written before track
	n   *apns.Notification // from receive to send
	// A malformed job, reported by the sender: bad is why.
	bad      error
	badToken string
	epoch    int64 // w.mu
	prev     *item // w.mu
	next     *item // w.mu
	done     atomic.Bool
	slot     atomic.Bool // holds one of w.slots
}

// action is what finishes a job.
type action uint8

const (
	actAck action = iota
	actNak
	actNakDelay
	actTerm
)

func (a action) String() string {
	return [...]string{"ack", "nak", "nak with delay", "term"}[a]
}

// New creates or updates the jobs stream, the events stream and the durable
// pull consumer, and returns a Worker ready to Run. It starts background
// goroutines that Shutdown stops.
func New(js jetstream.JetStream, opts Options) (*Worker, error) {
	if js == nil {
		return nil, fmt.Errorf("%w: nil JetStream", ErrInvalidOption)
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	w := &Worker{
		js:      js,
		opts:    o,
		limits:  protocolLimits(o.Protocol, o.MaxPayload),
		log:     o.Logger,
		m:       o.Metrics,
		pending: make(chan *pendingEvents, 4096),
		slots:   make(chan struct{}, o.MaxInFlight),

		slotWaitEpoch: -2 * keepAliveTicks, // no wait yet
		runDone:       make(chan struct{}),
		stop:          make(chan struct{}),
	}
	if w.m == nil {
		if w.m, err = NewMetrics(nil); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.SetupTimeout)
	defer cancel()
	if err := w.setup(ctx); err != nil {
		return nil, err
	}
	w.wg.Add(3)
	go w.confirmEvents()
	go w.keepAlive()
	go w.sweep()
	return w, nil
}

// Run pulls jobs and sends them to eng until ctx is done. It then stops
// pulling (Drain): jobs already buffered still reach eng.Send, waiting at
// most Options.DrainTimeout for the engine to accept them, and are naked
// if it does not. Run returns nil after a clean drain, or an error if the
// engine closed under it (apns.ErrClosed) or the consumer could not be
// bound. Outcomes keep arriving through HandleOutcome after Run returns:
// call Shutdown next.
func (w *Worker) Run(ctx context.Context, eng apns.Engine) error {
	if eng == nil {
		return fmt.Errorf("%w: nil engine", ErrInvalidOption)
	}
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("consumer: Run called twice")
	}
	defer close(w.runDone)
	sendCtx, cancelSend := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSend()
	fatal := make(chan error, 1)
	// One sender goroutine calls eng.Send in the order jobs were received,
	// so the subscription's goroutine never waits for the engine while it
	// has slots: every job the server delivered is tracked at once.
	sendq := make(chan *item, w.opts.MaxInFlight)
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		for it := range sendq {
			w.send(sendCtx, ctx.Done(), eng, it, fatal)
		}
	}()
	// nats.go reports a drained subscription closed when its last message
	// is taken, not when the handler returns: intake (under hmu) tells Run
	// when the last handler is done, and naks any message handed over after.
	handler := func(m jetstream.Msg) {
		w.hmu.Lock()
		defer w.hmu.Unlock()
		if w.intakeClosed {
			_ = m.Nak()
			return
		}
		w.receive(sendCtx, m, sendq)
	}
	var drainTimer *time.Timer // cancels sendCtx DrainTimeout after ctx is done
	defer func() {
		if drainTimer == nil {
			drainTimer = time.AfterFunc(w.opts.DrainTimeout, cancelSend) // a Send still blocked
		}
		defer drainTimer.Stop()
		w.hmu.Lock() // waits for a handler still running
		w.intakeClosed = true
		w.hmu.Unlock()
		close(sendq)
		<-senderDone // every queued job sent, or naked once sendCtx is done
	}()

	watch := newIntakeWatch(w)
	defer watch.tick.Stop()
	for attempt := 0; ; attempt++ {
		// Short-lived pull requests (5 s, heartbeat 2.5 s) rather than
		// nats.go's 30 s: after a leader change or a node loss, a request
		// the server forgot would otherwise stall intake for 30 s
		// (measured in integration's TestClusterNodeLoss; nats.go #2063).
		cc, err := w.cons.Consume(handler,
			jetstream.PullMaxMessagesWithBytesLimit(w.opts.PullMaxMessages, w.pullMaxBytes()),
			jetstream.PullExpiry(5*time.Second),
			jetstream.ConsumeErrHandler(w.consumeError))
		if err != nil {
			w.log.Warn("consume failed", slog.Any("error", err))
		} else {
			attempt = 0
			var runErr error
			paused := false
		running:
			for {
				select {
				case <-ctx.Done():
				case runErr = <-fatal:
				case <-cc.Closed():
				case <-watch.tick.C:
					if paused = watch.stale(); !paused {
						continue
					}
				}
				break running
			}
			if paused {
				cc.Stop() // drops the pull buffer: see intake.go
				ok, err := watch.awaitRoom(ctx, fatal)
				if ok {
					continue
				}
				return err // Run's end: the deferred drain naks a job still waiting for a slot
			}
			if nc := w.js.Conn(); (ctx.Err() != nil || runErr != nil) && nc != nil && nc.IsReconnecting() {
				// NATS is down: a drain needs the server. The jobs in the
				// pull buffer come back to a worker after AckWait.
				cc.Stop()
			} else {
				cc.Drain()
			}
			if ctx.Err() != nil || runErr != nil {
				drainTimer = time.AfterFunc(w.opts.DrainTimeout, cancelSend)
				select {
				case <-cc.Closed():
				case <-time.After(2 * w.opts.DrainTimeout):
					w.log.Error("drain did not finish; stopping the consumer")
					cc.Stop()
				}
				return runErr
			}
			<-cc.Closed()
			w.log.Warn("consume stopped; binding the consumer again")
		}
		// Consume stopped by itself (consumer deleted, connection closed):
		// bind again, backing off, until ctx is done.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(min(time.Duration(attempt+1)*100*time.Millisecond, 5*time.Second)):
		}
		// The streams first, best effort (an operator may have deleted
		// the jobs stream); the consumer in any case.
		bctx, cancel := context.WithTimeout(ctx, w.opts.SetupTimeout)
		if err := w.ensureStreams(bctx); err != nil {
			w.log.Warn("checking the streams failed", slog.Any("error", err))
		}
		if err := w.bindConsumer(bctx); err != nil {
			w.log.Warn("binding the consumer failed", slog.Any("error", err))
		}
		cancel()
	}
}

// pullMaxBytes bounds each pull request in bytes as well as in messages:
// without it, a backlog of large jobs (1 000 of 1 MB) is a GB the server
// queues for the worker at once, past its max_pending (64 MiB by default),
// and it cuts the worker as a slow consumer, again after each reconnect.
// It is at least twice the server's max_payload, so that any job fits.
func (w *Worker) pullMaxBytes() int {
	const floor = 16 << 20
	return max(floor, 2*int(w.js.Conn().MaxPayload()))
}

func (w *Worker) consumeError(_ jetstream.ConsumeContext, err error) {
	w.log.Warn("consume error", slog.Any("error", err))
}

// receive takes one job from the pull subscription. It runs on the
// subscription's goroutine: it tracks the job at once (InProgress keeps it
// ours from here on), takes one of MaxInFlight slots (released when the job
// is finished) and queues the job for the sender. It blocks only while the
// worker already holds MaxInFlight jobs; then the pull buffer fills and the
// server stops sending.
func (w *Worker) receive(ctx context.Context, msg jetstream.Msg, sendq chan<- *item) {
	w.m.received.Inc()
	it := &item{w: w, msg: msg}
	// Decoded before the job is tracked: once tracked, it can be finished
	// (nakAll at shutdown), which reads it.id.
	job, n, err := w.checkJob(msg.Data())
	it.id, it.n = job.ID, n
	if it.id == "" && len(msg.Headers()) > 0 {
		// Producers that only set Nats-Msg-Id (nats pub -H) still get
		// de-duplicated events naming their id.
		it.id = msg.Headers().Get(jetstream.MsgIDHeader)
	}
	it.id = clip(it.id, MaxEventJobID)
	if err != nil {
		// The sender reports it, in order with the jobs before it.
		it.bad, it.badToken, it.n = err, job.Token, nil
	}
	w.track(it)
	w.taken.Add(1)
	select {
	case w.slots <- struct{}{}:
	default:
		w.waitingSlot.Store(true)
		w.mu.Lock()
		w.slotWaitEpoch = w.epoch
		w.mu.Unlock()
		select {
		case w.slots <- struct{}{}:
			w.waitingSlot.Store(false)
		case <-ctx.Done(): // the drain timed out: someone else's turn
			w.waitingSlot.Store(false)
			w.finish(it, actNak, 0)
			return
		}
	}
	if !w.holdSlot(it) {
		return // finished while it waited for the slot (shutdown)
	}
	sendq <- it // never blocks: it holds MaxInFlight, as many as slots
}

// holdSlot records that it holds the slot receive took for it. If it was
// finished meanwhile, holdSlot releases the slot (unless finish saw it
// first and did) and returns false. With finish's CompareAndSwap on
// it.slot, the slot is released exactly once whichever runs first.
func (w *Worker) holdSlot(it *item) bool {
	it.slot.Store(true)
	if it.done.Load() {
		if it.slot.CompareAndSwap(true, false) {
			<-w.slots
		}
		return false
	}
	return true
}

// send hands one job to the engine. It runs on the sender goroutine and
// blocks while the engine is saturated, and while the engine reports its
// credentials refused (see awaitCredentials): then the job waits here, kept
// alive by keepAlive, the jobs behind it wait in sendq, and once every slot
// is taken the subscription takes no more. stopping is Run's ctx.Done().
func (w *Worker) send(ctx context.Context, stopping <-chan struct{}, eng apns.Engine, it *item, fatal chan<- error) {
	n := it.n
	it.n = nil
	if it.bad != nil {
		w.malformed(it, it.badToken, it.bad)
		return
	}
	for range maxSendTries {
		if !w.awaitCredentials(ctx, stopping, eng) {
			// Stopping while the credentials are refused: release the job.
			w.credentials(it, w.credErr)
			return
		}
		err := eng.Send(ctx, n, it)
		switch {
		case err == nil:
		case errors.Is(err, apns.ErrInvalidNotification):
			w.malformed(it, n.Token.String(), err)
		case errors.Is(err, apns.ErrCredentials):
			// Refused at once (no probe due in the engine): hold the job
			// and try it again at the next probe.
			w.pause(err)
			continue
		default: // engine closed, or the drain timed out: someone else's turn
			w.finish(it, actNak, 0)
			if errors.Is(err, apns.ErrClosed) {
				select {
				case fatal <- fmt.Errorf("consumer: engine closed while running: %w", err):
				default:
				}
			}
		}
		return
	}
	w.credentials(it, w.credErr) // held for very long: let another worker try
}

// Shutdown finishes what Run started: it waits for Run to return, closes
// eng (outcomes keep flowing to HandleOutcome), waits until every job Run
// received is acked, naked or terminated, stops the worker's goroutines and
// flushes the acks to the server. The engine has ctx's time but a reserve
// (settleReserve): if APNs has not answered by then, the engine fails what
// it holds, those jobs are naked (logged at WARN; it is not an error: each
// job is settled and will be tried again), and the reserve is left to
// settle and flush them. If ctx ends first all the same, the jobs still
// waiting are naked. The caller drains the NATS connection afterwards. eng
// may be nil if Run never ran.
func (w *Worker) Shutdown(ctx context.Context, eng apns.Engine) error {
	var errs []error
	if w.running.Load() {
		select {
		case <-w.runDone:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("consumer: Run did not return: %w", ctx.Err()))
		}
	}
	if eng != nil {
		ectx, cancel := ctx, context.CancelFunc(func() {})
		if end, ok := ctx.Deadline(); ok {
			ectx, cancel = context.WithDeadline(ctx, end.Add(-settleReserve(time.Until(end))))
		}
		err := eng.Close(ectx)
		cancel()
		switch {
		case err == nil:
		case ctx.Err() == nil && ectx.Err() != nil:
			// The engine gave up at its own deadline: what it held failed,
			// and its outcomes nak those jobs.
			w.log.Warn("apns did not finish within the shutdown grace; the jobs it held are naked", slog.Any("error", err))
		default:
			errs = append(errs, fmt.Errorf("consumer: close engine: %w", err))
		}
	}
	if err := w.waitIdle(ctx); err != nil {
		n := w.nakAll()
		errs = append(errs, fmt.Errorf("consumer: %d jobs still waiting at shutdown were naked: %w", n, err))
	}
	w.stopOnce.Do(func() {
		w.smu.Lock()
		w.stopped = true
		close(w.stop)
		w.smu.Unlock()
	})
	w.wg.Wait()
	// At most 5 s, and never past ctx: Shutdown's deadline is the caller's.
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	switch nc := w.js.Conn(); {
	case nc == nil || nc.IsClosed():
	case nc.IsReconnecting():
		// NATS is down: a flush could only time out. Acks sent meanwhile
		// wait in the client's buffer and are lost with it; their jobs
		// come back to a worker after ACK_WAIT, as after a crash.
		if b, _ := nc.Buffered(); b > 0 {
			w.log.Warn("nats not connected at stop: what the worker sent meanwhile is lost; jobs whose acks were among it come back after ACK_WAIT",
				slog.Int("unsent_bytes", b))
		}
	default:
		if err := nc.FlushWithContext(fctx); err != nil {
			errs = append(errs, fmt.Errorf("consumer: flush acks: %w", err))
		}
	}
	return errors.Join(errs...)
}

// settleReserve is the part of a shutdown's remaining time kept from the
// engine, for the jobs it fails to be naked and the acks flushed: a quarter
// of it, between 100 ms and 2 s.
func settleReserve(left time.Duration) time.Duration {
	return min(max(left/4, 100*time.Millisecond), 2*time.Second)
}

func (w *Worker) waitIdle(ctx context.Context) error {
	w.mu.Lock()
	if w.n == 0 {
		w.mu.Unlock()
		return nil
	}
	if w.idle == nil {
		w.idle = make(chan struct{})
	}
	idle := w.idle
	w.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *Worker) nakAll() int {
	w.mu.Lock()
	var all []*item
	for it := w.head; it != nil; it = it.next {
		all = append(all, it)
	}
	w.mu.Unlock()
	for _, it := range all {
		w.finish(it, actNak, 0)
	}
	return len(all)
}

// maxEventRetries bounds how often the worker publishes a job's events
// again after a transient failure before it naks the job; with
// eventRetryDelay it outlasts a JetStream leader election (a few seconds).
const maxEventRetries = 6

// errWorkerStopped fails events still awaited when the worker stops.
var errWorkerStopped = errors.New("consumer: worker stopped")
