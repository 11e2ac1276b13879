package consumer

import (
	"errors"
	"log/slog"
	"time"

	"github.com/jetpush/apns-worker/apns"
)

// The outcome half: an engine outcome becomes an ack, a nak or a term, and
// the events the job needs (stored before the ack: see publish.go).

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
		} else if deliveries < uint64(w.opts.MaxDeliver) || w.youngerThanRetries(it) {
			w.finish(it, actNakDelay, w.opts.backoff(deliveries))
			return
		}
		w.log.Warn("job dead-lettered", slog.String("job_id", it.id), slog.Uint64("seq", seq),
			slog.String("reason", reason), slog.Uint64("deliveries", deliveries), slog.Any("error", cause))
		ev := DeadLetterEvent{JobID: it.id, Seq: seq, Reason: reason, Error: cause.Error(), Deliveries: deliveries, Time: time.Now().UTC()}
		ev.EventJob = eventJob(it.msg.Data(), MaxEventJob)
		w.publish(it, KindDeadLetter, actTerm, false, w.m.deadLettered, event{KindDeadLetter, ev})
	}
}

// rejected publishes the rejection (and bad-token) events, then acks.
func (w *Worker) rejected(it *item, token apns.Token, rej *apns.RejectionError) {
	reason := rej.Reason
	if reason == "" {
		reason = rej.Status.String()
	}
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
	w.publish(it, KindRejected, actAck, false, w.m.rejected.WithLabelValues(reason), evs...)
}

// malformed publishes a rejection event carrying the job's bytes, then
// terminates the job: no attempt will ever succeed.
func (w *Worker) malformed(it *item, token string, cause error) {
	reason := malformedReason(cause)
	seq, _ := w.meta(it)
	w.log.Warn("malformed job", slog.String("job_id", it.id), slog.Uint64("seq", seq),
		slog.String("reason", reason), slog.Any("error", cause))
	ev := malformedEvent(it.id, seq, token, w.opts.Protocol, cause, it.msg.Data())
	w.publish(it, KindRejected, actTerm, false, w.m.malformed.WithLabelValues(reason), event{KindRejected, ev})
}

// receipt publishes a delivered receipt, then acks. A receipt that cannot
// be stored is counted and logged, and the job acked all the same: sending
// a delivered notification again would be worse than a missing receipt.
func (w *Worker) receipt(it *item, token apns.Token, apnsID string) {
	seq, _ := w.meta(it)
	w.publish(it, KindDelivered, actAck, true, nil, event{KindDelivered, ReceiptEvent{
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

// youngerThanRetries reports whether the jobs stream stored it less than
// Options.retryHorizon ago. JetStream's delivery count, which MaxDeliver
// is compared with, also counts deliveries that were no attempt: jobs
// handed back unsent at a stop, dropped from the pull buffer at an intake
// pause, or naked because their event was not stored. During an APNs
// outage those could use up a job's deliveries in minutes; a job is
// dead-lettered only once it has also been in the stream as long as
// MaxDeliver failed attempts and their back-off take.
func (w *Worker) youngerThanRetries(it *item) bool {
	md, err := it.msg.Metadata()
	return err == nil && time.Since(md.Timestamp) < w.opts.retryHorizon()
}

// finish acks, naks or terminates a job, once; it reports whether this
// call did.
func (w *Worker) finish(it *item, a action, delay time.Duration) bool {
	if !it.done.CompareAndSwap(false, true) {
		return false
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
	return true
}
