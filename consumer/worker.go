package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
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
	epoch int64         // keep-alive ticks
	idle  chan struct{} // closed when n drops to 0, if someone waits

	pending chan *pendingEvents // events awaiting their PubAck, FIFO

	hmu          sync.Mutex // held by the job handler
	intakeClosed bool       // hmu; set when Run returns

	// slots holds a token for each job received and not yet finished: at
	// most MaxInFlight, so the pull buffer is not refilled while the
	// engine cannot take more.
	slots chan struct{}

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
		limits:  protocolLimits(o.Protocol),
		log:     o.Logger,
		m:       o.Metrics,
		pending: make(chan *pendingEvents, 4096),
		slots:   make(chan struct{}, o.MaxInFlight),
		runDone: make(chan struct{}),
		stop:    make(chan struct{}),
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
	w.wg.Add(2)
	go w.confirmEvents()
	go w.keepAlive()
	return w, nil
}

// setup creates both streams if they are missing, brings the settings the
// worker owns up to date on existing ones, and binds the durable consumer.
func (w *Worker) setup(ctx context.Context) error {
	if err := w.ensureStreams(ctx); err != nil {
		return err
	}
	return w.bindConsumer(ctx)
}

// ensureStreams runs ensureStream for the jobs and the events streams.
func (w *Worker) ensureStreams(ctx context.Context) error {
	o := &w.opts
	err := ensureStream(ctx, w.js, jetstream.StreamConfig{
		Name:       o.JobsStream,
		Subjects:   []string{o.JobsSubject, o.JobsSubject + ".>"},
		Retention:  jetstream.WorkQueuePolicy,
		Storage:    jetstream.FileStorage,
		Replicas:   o.Replicas,
		Duplicates: o.JobsDuplicates,
	}, nil)
	if err != nil {
		return fmt.Errorf("consumer: jobs stream %s: %w", o.JobsStream, err)
	}
	return w.ensureEvents(ctx)
}

// subjectsCollide reports whether some subject matches both patterns a
// and b (NATS tokens; * one token, > the rest).
func subjectsCollide(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(at) && i < len(bt); i++ {
		switch {
		case at[i] == ">" || bt[i] == ">":
			return true
		case at[i] == "*" || bt[i] == "*" || at[i] == bt[i]:
		default:
			return false
		}
	}
	return len(at) == len(bt)
}

// ensureEvents creates the events stream, or brings what the worker owns
// of it up to date.
func (w *Worker) ensureEvents(ctx context.Context) error {
	o := &w.opts
	maxAge := max(o.EventsMaxAge, 0) // negative: no limit
	err := ensureStream(ctx, w.js, jetstream.StreamConfig{
		Name:       o.EventsStream,
		Subjects:   []string{o.EventsSubject + ".>"},
		Retention:  jetstream.LimitsPolicy,
		Storage:    jetstream.FileStorage,
		Replicas:   o.Replicas,
		MaxAge:     maxAge,
		Duplicates: o.EventsDuplicates,
	}, func(c *jetstream.StreamConfig) { c.MaxAge = maxAge })
	if err != nil {
		return fmt.Errorf("consumer: events stream %s: %w", o.EventsStream, err)
	}
	return nil
}

// healEvents looks for the events stream in the background, at most every
// 5 s, after an event publish found no responders. A stream that exists
// (its leader moved, or is being elected) is left alone: the publish is
// retried. Only a stream the server reports missing (an operator deleted
// it) is created again; otherwise the jobs naked meanwhile would cycle
// until a restart.
func (w *Worker) healEvents() {
	now, last := time.Now().UnixNano(), w.lastHeal.Load()
	if now-last < int64(5*time.Second) || !w.lastHeal.CompareAndSwap(last, now) {
		return
	}
	w.goUnlessStopped(func() {
		ctx, cancel := context.WithTimeout(context.Background(), w.opts.SetupTimeout)
		defer cancel()
		go func() { // Shutdown waits for this goroutine: end it with the worker
			select {
			case <-w.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		_, err := w.js.Stream(ctx, w.opts.EventsStream)
		switch {
		case err == nil:
			w.log.Info("events stream found after a publish found no responders; publishing again",
				slog.String("stream", w.opts.EventsStream))
			return
		case !errors.Is(err, jetstream.ErrStreamNotFound):
			// No leader yet, or the connection is being replaced: not
			// missing. Creating it now could only conflict.
			w.log.Info("events stream not reachable; publishing again", slog.String("stream", w.opts.EventsStream), slog.Any("error", err))
			return
		}
		if err := w.ensureEvents(ctx); err != nil {
			w.log.Warn("events stream: could not create it again", slog.Any("error", err))
			return
		}
		w.log.Info("events stream created again after it was found missing", slog.String("stream", w.opts.EventsStream))
	})
}

// ensureStream creates the stream want describes, or, when it exists, sets
// only what the worker owns: its subjects are added (others kept, and none
// that overlaps one of them), replicas are raised to want's (never
// lowered), the de-duplication window is set (at most the stream's max
// age), and whatever own sets is applied.
// Limits an operator set by hand (max bytes, max messages, discard policy,
// placement, …) stay as they are. A stream whose retention differs from
// want's cannot serve: that is an error naming both.
func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, own func(*jetstream.StreamConfig)) error {
	for attempt := 0; ; attempt++ {
		s, err := js.Stream(ctx, want.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			_, err = js.CreateStream(ctx, want)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) && attempt < 3 {
				continue // another worker created it meanwhile: update that one
			}
			return err
		}
		if err != nil {
			return err
		}
		have := s.CachedInfo().Config
		if have.Retention != want.Retention {
			return fmt.Errorf("exists with %s retention, the worker needs %s: delete it or point the worker at another stream",
				have.Retention, want.Retention)
		}
		next := have
		next.Subjects = slices.Clone(have.Subjects)
		for _, subj := range want.Subjects {
			// A subject the stream's own overlap is left out: the server
			// refuses overlapping subjects in one stream, and the
			// operator's wider one (apns.>) already captures ours.
			if !slices.ContainsFunc(next.Subjects, func(s string) bool { return subjectsCollide(s, subj) }) {
				next.Subjects = append(next.Subjects, subj)
			}
		}
		next.Replicas = max(have.Replicas, want.Replicas) // never scaled down
		if want.Duplicates > 0 {
			next.Duplicates = want.Duplicates
			if have.MaxAge > 0 {
				next.Duplicates = min(next.Duplicates, have.MaxAge)
			}
		}
		if own != nil {
			own(&next)
		}
		if reflect.DeepEqual(next, have) {
			return nil
		}
		_, err = js.UpdateStream(ctx, next)
		return err
	}
}

func (w *Worker) bindConsumer(ctx context.Context) error {
	o := &w.opts
	c, err := w.js.CreateOrUpdateConsumer(ctx, o.JobsStream, jetstream.ConsumerConfig{
		Durable:       o.Durable,
		Description:   "apns-worker jobs, shared by every worker",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    -1, // enforced by the worker: dead letter, then Term
		MaxAckPending: o.MaxAckPending,
	})
	if err != nil {
		return fmt.Errorf("consumer: durable %s on %s: %w", o.Durable, o.JobsStream, err)
	}
	w.cons = c
	return nil
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

	for attempt := 0; ; attempt++ {
		// Short-lived pull requests (5 s, heartbeat 2.5 s) rather than
		// nats.go's 30 s: after a leader change or a node loss, a request
		// the server forgot would otherwise stall intake for 30 s
		// (measured in integration's TestClusterNodeLoss; nats.go #2063).
		cc, err := w.cons.Consume(handler,
			jetstream.PullMaxMessages(w.opts.PullMaxMessages),
			jetstream.PullExpiry(5*time.Second),
			jetstream.ConsumeErrHandler(w.consumeError))
		if err != nil {
			w.log.Warn("consume failed", slog.Any("error", err))
		} else {
			attempt = 0
			var runErr error
			select {
			case <-ctx.Done():
			case runErr = <-fatal:
			case <-cc.Closed():
			}
			cc.Drain()
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
	select {
	case w.slots <- struct{}{}:
	default:
		select {
		case w.slots <- struct{}{}:
		case <-ctx.Done(): // the drain timed out: someone else's turn
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

// maxSendTries bounds the probes one job makes while the credentials are
// refused before it is naked.
const maxSendTries = 1000

// credRecheck is how often a paused sender asks the engine whether its
// credentials were fixed.
const credRecheck = time.Second

// pause records a credentials refusal the sender saw: no job reaches Send
// before the next probe. Sender goroutine only.
func (w *Worker) pause(cause error) {
	now := time.Now()
	if w.credErr == nil { // a new pause: the first probe one interval on
		w.probeAt = now.Add(w.opts.CredentialsProbeInterval)
	}
	w.credErr, w.credCheck = cause, now.Add(min(credRecheck, w.opts.CredentialsProbeInterval))
	w.logCredentials(cause)
}

// awaitCredentials returns true once the sender may call Send: the engine
// reports no credentials error, or a probe is due (one every
// CredentialsProbeInterval while it does). It waits otherwise, asking the
// engine every credRecheck, and returns false if ctx or stopping ends the
// wait first. Sender goroutine only.
func (w *Worker) awaitCredentials(ctx context.Context, stopping <-chan struct{}, eng apns.Engine) bool {
	for {
		now := time.Now()
		if !now.Before(w.credCheck) {
			if cerr := eng.Stats().CredentialsErr; cerr != nil {
				w.pause(cerr)
			} else {
				w.credErr, w.credCheck = nil, now.Add(credRecheck)
			}
		}
		if w.credErr == nil {
			return true
		}
		if !now.Before(w.probeAt) {
			w.probeAt = now.Add(w.opts.CredentialsProbeInterval)
			return true
		}
		next := w.credCheck
		if w.probeAt.Before(next) {
			next = w.probeAt
		}
		t := time.NewTimer(next.Sub(now))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		case <-stopping:
			t.Stop()
			return false
		}
	}
}

// logCredentials logs a credentials refusal loudly, at most every 10 s.
func (w *Worker) logCredentials(cause error) {
	now := time.Now().UnixNano()
	if last := w.lastCredsLog.Load(); now-last > int64(10*time.Second) && w.lastCredsLog.CompareAndSwap(last, now) {
		w.log.Error("APNS REFUSED THE CREDENTIALS: jobs are held and probed until they are fixed", slog.Any("error", cause))
	}
}

// credentials naks a job APNs could not take because the credentials are
// refused, with the last (longest) back-off: a configuration problem must
// not burn the job's attempts towards a dead letter, nor spin it.
func (w *Worker) credentials(it *item, cause error) {
	w.logCredentials(cause)
	w.finish(it, actNakDelay, w.opts.Backoff[len(w.opts.Backoff)-1])
}

// HandleOutcome turns an engine outcome into an ack, nak or term and the
// events it needs. Pass it to the engine as apns.WithOutcomeFunc. It never
// waits for the server: acks are pipelined and events are confirmed in the
// background, the job finished once its events are stored.
func (w *Worker) HandleOutcome(o apns.Outcome) {
	it, ok := o.Ref.(*item)
	if !ok || it.w != w {
		w.log.Error("outcome with a foreign ref", slog.Any("ref", o.Ref), slog.Any("error", o.Err))
		return
	}
	if !o.Accepted.IsZero() {
		w.m.latency.Observe(time.Since(o.Accepted).Seconds())
	}
	w.logJob(it, o)
	var token apns.Token
	if o.Notification != nil {
		token = o.Notification.Token
	}
	if o.Err == nil {
		w.m.delivered.Inc()
		if w.opts.Receipts {
			w.receipt(it, token, o.APNsID)
			return
		}
		w.finish(it, actAck, 0)
		return
	}
	if rej, ok := o.Rejection(); ok {
		w.rejected(it, token, rej)
		return
	}
	if errors.Is(o.Err, apns.ErrInvalidNotification) {
		w.malformed(it, token.String(), o.Err)
		return
	}
	w.failed(it, o.Err)
}

// failed naks a job for a retry, or dead-letters it at MaxDeliver or at
// once if it expired.
func (w *Worker) failed(it *item, cause error) {
	w.m.failed.Inc()
	switch {
	case errors.Is(cause, apns.ErrClosed):
		// The engine is closing (shutdown): not the job's fault.
		w.finish(it, actNak, 0)
	case errors.Is(cause, apns.ErrCredentials):
		w.credentials(it, cause)
	default:
		seq, deliveries := w.meta(it)
		reason := ReasonMaxDeliver
		if errors.Is(cause, apns.ErrExpired) {
			// The notification's expiration passed: no retry can send it.
			reason = ReasonExpired
		} else if deliveries < uint64(w.opts.MaxDeliver) {
			w.finish(it, actNakDelay, w.opts.backoff(deliveries))
			return
		}
		w.m.deadLettered.Inc()
		w.log.Warn("job dead-lettered", slog.String("job_id", it.id), slog.Uint64("seq", seq),
			slog.String("reason", reason), slog.Uint64("deliveries", deliveries), slog.Any("error", cause))
		ev := DeadLetterEvent{JobID: it.id, Seq: seq, Reason: reason, Error: cause.Error(), Deliveries: deliveries, Time: time.Now().UTC()}
		ev.EventJob = eventJob(it.msg.Data(), MaxEventJob)
		w.publish(it, KindDeadLetter, actTerm, false, event{KindDeadLetter, ev})
	}
}

// rejected publishes the rejection (and bad-token) events, then acks.
func (w *Worker) rejected(it *item, token apns.Token, rej *apns.RejectionError) {
	reason := rej.Reason
	if reason == "" {
		reason = rej.Status.String()
	}
	w.m.rejected.WithLabelValues(reason).Inc()
	seq, _ := w.meta(it)
	now := time.Now().UTC()
	ev := RejectionEvent{
		JobID: it.id, Seq: seq, Token: token.String(), Protocol: w.opts.Protocol,
		Status: int(rej.Status), Reason: reason, HTTPStatus: rej.HTTPStatus,
		Timestamp: rej.Timestamp.UTC(), Time: now, Error: rej.Error(),
	}
	ev.EventJob = eventJob(it.msg.Data(), MaxEventJob)
	evs := []event{{KindRejected, ev}}
	if rej.BadToken() {
		t := now
		if !rej.Timestamp.IsZero() {
			t = rej.Timestamp.UTC()
		}
		evs = append(evs, event{KindBadToken, BadTokenEvent{
			Token: token.String(), Time: t, Source: SourceRejection, Reason: reason, JobID: it.id, Seq: seq,
		}})
	}
	w.publish(it, KindRejected, actAck, false, evs...)
}

// malformed publishes a rejection event carrying the job's bytes, then
// terminates the job: no attempt will ever succeed.
func (w *Worker) malformed(it *item, token string, cause error) {
	reason := malformedReason(cause)
	w.m.malformed.WithLabelValues(reason).Inc()
	seq, _ := w.meta(it)
	w.log.Warn("malformed job", slog.String("job_id", it.id), slog.Uint64("seq", seq),
		slog.String("reason", reason), slog.Any("error", cause))
	ev := malformedEvent(it.id, seq, token, w.opts.Protocol, cause, it.msg.Data())
	w.publish(it, KindRejected, actTerm, false, event{KindRejected, ev})
}

// receipt publishes a delivered receipt, then acks. A receipt that cannot
// be stored is counted and logged, and the job acked all the same: sending
// a delivered notification again would be worse than a missing receipt.
func (w *Worker) receipt(it *item, token apns.Token, apnsID string) {
	seq, _ := w.meta(it)
	w.publish(it, KindDelivered, actAck, true, event{KindDelivered, ReceiptEvent{
		JobID: it.id, Seq: seq, APNsID: apnsID, Token: token.String(), Time: time.Now().UTC(),
	}})
}

// meta returns the job's stream sequence and delivery count.
func (w *Worker) meta(it *item) (seq, deliveries uint64) {
	md, err := it.msg.Metadata()
	if err != nil {
		w.log.Warn("job without metadata", slog.Any("error", err))
		return 0, 1
	}
	return md.Sequence.Stream, md.NumDelivered
}

// finish acks, naks or terminates a job, once.
func (w *Worker) finish(it *item, a action, delay time.Duration) {
	if !it.done.CompareAndSwap(false, true) {
		return
	}
	var err error
	switch a {
	case actAck:
		err = it.msg.Ack()
	case actNak:
		err = it.msg.Nak()
	case actNakDelay:
		err = it.msg.NakWithDelay(delay)
	case actTerm:
		err = it.msg.Term()
	}
	if err != nil {
		// The connection is gone: the server redelivers after AckWait.
		w.log.Warn("job "+a.String()+" failed", slog.String("job_id", it.id), slog.Any("error", err))
	}
	w.untrack(it)
	if it.slot.CompareAndSwap(true, false) { // see holdSlot
		<-w.slots
	}
}

// track adds a received job to the in-flight list.
func (w *Worker) track(it *item) {
	w.mu.Lock()
	it.epoch = w.epoch
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

// keepAlive sends InProgress for jobs that have waited for two or more
// ticks of AckWait/6: a job gets its first between AckWait/6 and AckWait/3
// after it was received, and one every AckWait/3 after that. Jobs finished
// within AckWait/6 never get one. The hot path pays only for the list
// insert it needs anyway.
func (w *Worker) keepAlive() {
	defer w.wg.Done()
	t := time.NewTicker(w.opts.AckWait / 6)
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

// Shutdown finishes what Run started: it waits for Run to return, closes
// eng (outcomes keep flowing to HandleOutcome), waits until every job Run
// received is acked, naked or terminated, stops the worker's goroutines and
// flushes the acks to the server. If ctx ends first, the jobs still waiting
// are naked. The caller drains the NATS connection afterwards. eng may be
// nil if Run never ran.
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
		if err := eng.Close(ctx); err != nil {
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
	if nc := w.js.Conn(); nc != nil && !nc.IsClosed() {
		if err := nc.FlushWithContext(fctx); err != nil {
			errs = append(errs, fmt.Errorf("consumer: flush acks: %w", err))
		}
	}
	return errors.Join(errs...)
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

// event is one event to publish for a job.
type event struct {
	kind string
	body any
}

// pendingEvents are a job's published events awaiting their PubAcks.
type pendingEvents struct {
	it       *item
	kind     string
	onOK     action
	ackOnErr bool // receipts: ack even if the event is lost
	minimal  bool // the last try: the events without the job's bytes
	retries  int  // publishes again after a transient failure
	evs      []event
	futs     []jetstream.PubAckFuture
	deadline time.Time
}

// publish sends a job's events asynchronously; the job is finished with
// onOK once every event is confirmed, or naked for a retry if one is not.
func (w *Worker) publish(it *item, kind string, onOK action, ackOnErr bool, evs ...event) {
	pe := &pendingEvents{it: it, kind: kind, onOK: onOK, ackOnErr: ackOnErr, evs: evs}
	if err := w.sendEvents(pe); err != nil {
		w.eventFailed(pe, err)
		return
	}
	select {
	case w.pending <- pe:
	case <-w.stop:
		w.eventFailed(pe, errWorkerStopped)
	}
}

// sendEvents publishes pe's events and sets its deadline.
func (w *Worker) sendEvents(pe *pendingEvents) error {
	seq, _ := w.meta(pe.it)
	pe.futs = make([]jetstream.PubAckFuture, 0, len(pe.evs))
	for _, ev := range pe.evs {
		m, err := eventMsg(w.opts.subject(ev.kind), eventMsgID(ev.kind, pe.it.id, seq), ev.body)
		if err != nil {
			return err
		}
		f, err := w.js.PublishMsgAsync(m)
		if err != nil {
			return err
		}
		pe.futs = append(pe.futs, f)
	}
	pe.deadline = time.Now().Add(w.opts.EventTimeout)
	return nil
}

// eventFailed handles events that were not stored. A transient failure (no
// PubAck in time, no responders while the events stream elects a leader,
// a connection being replaced) is retried by the worker, up to
// maxEventRetries times with back-off, publishing the same events again:
// their Nats-Msg-Ids keep a retry from storing one twice. If they still
// fail the job is naked for a retry with the job's back-off, even at
// MaxDeliver: the job is safe in the stream and its next attempt publishes
// the full event. Only if the failure is for good (an event over the
// server's max_payload or the stream's maximum message size) are the
// events published once more without the job's bytes, and the job then
// terminated. A job is never acked or terminated without its events
// stored (receipts excepted: see receipt).
func (w *Worker) eventFailed(pe *pendingEvents, err error) {
	w.m.eventErrors.WithLabelValues(pe.kind).Inc()
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		w.healEvents()
	}
	if pe.ackOnErr {
		w.log.Warn("event not stored", slog.String("kind", pe.kind), slog.String("job_id", pe.it.id), slog.Any("error", err))
		w.finish(pe.it, actAck, 0)
		return
	}
	permanent := permanentEventError(err)
	if !permanent && pe.retries < maxEventRetries && !errors.Is(err, errWorkerStopped) {
		pe.retries++
		retry := pe.retries
		if w.goUnlessStopped(func() { w.retryEvents(pe, retry) }) {
			w.log.Debug("event not stored; publishing it again", slog.String("kind", pe.kind), slog.String("job_id", pe.it.id),
				slog.Int("retry", retry), slog.Any("error", err))
			return
		}
	}
	w.log.Warn("event not stored", slog.String("kind", pe.kind), slog.String("job_id", pe.it.id),
		slog.Bool("minimal", pe.minimal), slog.Int("retries", pe.retries), slog.Any("error", err))
	_, deliveries := w.meta(pe.it)
	// Not on the caller's goroutine: confirmEvents must keep reading
	// w.pending. Once the worker is stopping, the job is naked instead and
	// retried after the restart.
	if !pe.minimal && permanent && w.goUnlessStopped(func() { w.publishMinimal(pe) }) {
		return
	}
	w.finish(pe.it, actNakDelay, w.opts.backoff(deliveries))
}

// maxEventRetries bounds how often the worker publishes a job's events
// again after a transient failure before it naks the job; with
// eventRetryDelay it outlasts a JetStream leader election (a few seconds).
const maxEventRetries = 6

// eventRetryDelay is the wait before retry n (1-based): base (100 ms)
// doubling, at most 20 × base (2 s; 5.1 s over the six retries).
func eventRetryDelay(base time.Duration, n int) time.Duration {
	return min(base<<(n-1), 20*base)
}

// errWorkerStopped fails events still awaited when the worker stops.
var errWorkerStopped = errors.New("consumer: worker stopped")

// retryEvents publishes pe's events again after a back-off and finishes the
// job once they are stored; it runs on a goroutine Shutdown waits for.
func (w *Worker) retryEvents(pe *pendingEvents, retry int) {
	t := time.NewTimer(eventRetryDelay(w.opts.eventRetryBase, retry))
	select {
	case <-t.C:
	case <-w.stop:
		t.Stop()
		w.eventFailed(pe, errWorkerStopped)
		return
	}
	err := w.sendEvents(pe)
	if err == nil {
		err = w.awaitEvents(pe, t)
	}
	if err != nil {
		w.eventFailed(pe, err)
		return
	}
	w.finish(pe.it, pe.onOK, 0)
}

// goUnlessStopped runs f on a goroutine Shutdown waits for, unless the
// worker is stopping (then it returns false). The stop check and wg.Add
// are one step under smu, so no Add races Shutdown's wg.Wait.
func (w *Worker) goUnlessStopped(f func()) bool {
	w.smu.Lock()
	defer w.smu.Unlock()
	if w.stopped {
		return false
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		f()
	}()
	return true
}

// permanentEventError reports whether no retry can store the event: it is
// over the connection's max_payload or the stream's maximum message size.
func permanentEventError(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, nats.ErrMaxPayload) ||
		errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum) ||
		errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum
}

// publishMinimal publishes pe's events without the job's bytes, waits for
// their PubAcks and terminates the job; it naks it if they fail too.
func (w *Worker) publishMinimal(pe *pendingEvents) {
	data := pe.it.msg.Data()
	mp := &pendingEvents{it: pe.it, kind: pe.kind, onOK: actTerm, minimal: true,
		evs: make([]event, len(pe.evs))}
	for i, ev := range pe.evs {
		mp.evs[i] = event{ev.kind, withoutJob(ev.body, data)}
	}
	err := w.sendEvents(mp)
	if err == nil {
		timer := time.NewTimer(time.Hour)
		err = w.awaitEvents(mp, timer)
	}
	if err != nil {
		w.eventFailed(mp, err)
		return
	}
	w.log.Warn("job terminated with an event without its bytes", slog.String("kind", pe.kind),
		slog.String("job_id", pe.it.id))
	w.finish(mp.it, actTerm, 0)
}

// confirmEvents waits for PubAcks in publish order (the server answers in
// order) and finishes each job once its events are stored.
func (w *Worker) confirmEvents() {
	defer w.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var pe *pendingEvents
		select {
		case <-w.stop:
			return
		case pe = <-w.pending:
		}
		if err := w.awaitEvents(pe, timer); err != nil {
			w.eventFailed(pe, err)
			continue
		}
		w.finish(pe.it, pe.onOK, 0)
	}
}

func (w *Worker) awaitEvents(pe *pendingEvents, timer *time.Timer) error {
	timer.Reset(time.Until(pe.deadline))
	defer timer.Stop()
	for _, f := range pe.futs {
		// A PubAck that is already in wins over a deadline that passed
		// while pe waited behind other jobs' events.
		select {
		case <-f.Ok():
			continue
		case err := <-f.Err():
			return err
		default:
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-timer.C:
			return fmt.Errorf("no PubAck within %s", w.opts.EventTimeout)
		case <-w.stop:
			return errWorkerStopped
		}
	}
	return nil
}
