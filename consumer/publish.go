package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Publishing a job's events: a job is acked (or termed) only once its
// events are stored, retried across failovers, naked if they cannot be.

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
	// counter counts the job's outcome once its events are stored (nil:
	// none), so that a job naked because they were not is not counted at
	// each attempt.
	counter  prometheus.Counter
	evs      []event
	futs     []jetstream.PubAckFuture
	deadline time.Time
}

// publish sends a job's events asynchronously; the job is finished with
// onOK, and counted by counter, once every event is confirmed, or naked
// for a retry if one is not.
func (w *Worker) publish(it *item, kind string, onOK action, ackOnErr bool, counter prometheus.Counter, evs ...event) {
	pe := &pendingEvents{it: it, kind: kind, onOK: onOK, ackOnErr: ackOnErr, counter: counter, evs: evs}
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
	var seq uint64
	var stored int64
	if md, err := pe.it.msg.Metadata(); err == nil {
		seq, stored = md.Sequence.Stream, md.Timestamp.UnixNano()
	}
	pe.futs = make([]jetstream.PubAckFuture, 0, len(pe.evs))
	for _, ev := range pe.evs {
		m, err := eventMsg(w.opts.subject(ev.kind), eventMsgID(ev.kind, pe.it.id, seq, stored), ev.body)
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

// eventRetryDelay is the wait before retry n (1-based): base (100 ms)
// doubling, at most 20 × base (2 s; 5.1 s over the six retries).
func eventRetryDelay(base time.Duration, n int) time.Duration {
	return min(base<<(n-1), 20*base)
}

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
	w.eventsStored(pe)
}

// untilStopped returns a context derived from parent that also ends when
// the worker stops (or cancel is called).
func (w *Worker) untilStopped(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	go func() {
		select {
		case <-w.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
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
	mp := &pendingEvents{it: pe.it, kind: pe.kind, onOK: actTerm, minimal: true, counter: pe.counter,
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
	w.eventsStored(mp)
}

// eventsStored finishes pe's job with pe.onOK now that its events are
// stored, and counts it.
func (w *Worker) eventsStored(pe *pendingEvents) {
	if w.finish(pe.it, pe.onOK, 0) && pe.counter != nil {
		pe.counter.Inc()
	}
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
		w.eventsStored(pe)
	}
}

func (w *Worker) awaitEvents(pe *pendingEvents, timer *time.Timer) error {
	timer.Reset(time.Until(pe.deadline))
	defer timer.Stop()
	for _, f := range pe.futs {
		// A PubAck that is already in wins over a deadline that passed
		// while pe waited behind other jobs' events.
		select {
		case ack := <-f.Ok():
			if err := w.inEventsStream(ack); err != nil {
				return err
			}
			continue
		case err := <-f.Err():
			return err
		default:
		}
		select {
		case ack := <-f.Ok():
			if err := w.inEventsStream(ack); err != nil {
				return err
			}
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

// inEventsStream checks that an event was stored in the events stream: a
// stream an operator made on the events' subjects meanwhile (start-up
// would refuse its overlap) stores them where no producer reads them.
func (w *Worker) inEventsStream(ack *jetstream.PubAck) error {
	if ack.Stream != w.opts.EventsStream {
		return fmt.Errorf("event stored in stream %s, not the events stream %s", ack.Stream, w.opts.EventsStream)
	}
	return nil
}
