package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Jobs that never reach the worker. nats.go's pull consumer takes an
// empty message with a Status header (what a proxy or an HTTP bridge may
// forward) for the server's own status message (100 heartbeat, 404, 408,
// 409…), whatever its reply subject, and never hands it over: JetStream
// sends it again every AckWait, for ever, and nothing tells the producer.
// The sweep finds such jobs near the head of the jobs stream once the head
// has stopped moving, stores their rejection event (the job's bytes, as
// for any malformed job) and deletes them from the stream.

// sweepLook is how many messages from the head of the jobs stream a sweep
// looks at.
const sweepLook = 8

// errStatusShaped is the cause in a swept job's rejection event.
var errStatusShaped = fmt.Errorf("%w: an empty message with a Status header, which NATS clients take for a server status message",
	ErrMalformedJob)

// sweepEvery is the pause between sweeps: AckWait, the time such a job
// takes to come back.
func (w *Worker) sweepEvery() time.Duration { return w.opts.AckWait }

// sweep runs sweepOnce every sweepEvery until the worker stops.
func (w *Worker) sweep() {
	defer w.wg.Done()
	ctx, cancel := w.untilStopped(context.Background()) // a request in flight ends with the worker
	defer cancel()
	t := time.NewTicker(w.sweepEvery())
	defer t.Stop()
	var head uint64
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		head = w.sweepOnce(ctx, head)
	}
}

// sweepOnce looks at the jobs stream's first message; if it is still last,
// the head it saw at the previous sweep, it looks at the first sweepLook
// messages and takes out the ones nats.go would never hand over. It
// returns the head it saw. A busy stream whose head moves costs one
// stream info a sweep.
func (w *Worker) sweepOnce(ctx context.Context, last uint64) uint64 {
	ctx, cancel := context.WithTimeout(ctx, w.opts.SetupTimeout)
	defer cancel()
	s, err := w.js.Stream(ctx, w.opts.JobsStream)
	if err != nil {
		return 0 // not reachable now: the next sweep tries again
	}
	st := s.CachedInfo().State
	if st.Msgs == 0 || st.FirstSeq != last {
		return st.FirstSeq
	}
	seq := st.FirstSeq
	for range sweepLook {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
		if err != nil {
			break // past the last message, or not reachable now
		}
		if len(m.Data) == 0 && m.Header.Get("Status") != "" {
			w.sweepJob(ctx, s, m)
		}
		seq = m.Sequence + 1
	}
	return st.FirstSeq
}

// sweepJob stores the rejection event of a job nats.go never hands over,
// then deletes the job from the stream. If the event is not stored, the
// job stays for the next sweep.
func (w *Worker) sweepJob(ctx context.Context, s jetstream.Stream, m *jetstream.RawStreamMsg) {
	id := clip(m.Header.Get(jetstream.MsgIDHeader), MaxEventJobID)
	ev := malformedEvent(id, m.Sequence, "", w.opts.Protocol, errStatusShaped, m.Data)
	msg, err := eventMsg(w.opts.subject(KindRejected), eventMsgID(KindRejected, id, m.Sequence, m.Time.UnixNano()), ev)
	if err == nil {
		_, err = w.js.PublishMsg(ctx, msg)
	}
	if err != nil {
		w.m.eventErrors.WithLabelValues(KindRejected).Inc()
		w.log.Warn("event not stored", slog.String("kind", KindRejected), slog.String("job_id", id),
			slog.Uint64("seq", m.Sequence), slog.Any("error", err))
		return
	}
	if err := s.DeleteMsg(ctx, m.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		w.log.Warn("malformed job: could not delete it from the stream", slog.String("job_id", id),
			slog.Uint64("seq", m.Sequence), slog.Any("error", err))
		return
	}
	w.m.malformed.WithLabelValues(ev.Reason).Inc()
	w.log.Warn("malformed job", slog.String("job_id", id), slog.Uint64("seq", m.Sequence),
		slog.String("reason", ev.Reason), slog.Any("error", errStatusShaped))
}
