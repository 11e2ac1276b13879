package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The jobs and events streams and the durable consumer: created when
// missing, their worker-owned settings kept up to date, healed after a
// failover.

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
	jobs, err := w.ensureStreamCapped(ctx, jetstream.StreamConfig{
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
	w.warnDroppingLimits(jobs)
	return w.ensureEvents(ctx)
}

// warnDroppingLimits warns when an operator's limits on the jobs stream
// let the server drop jobs (a max age, or a cap with discard old): those
// go without an outcome or an event, which the worker cannot tell.
func (w *Worker) warnDroppingLimits(c jetstream.StreamConfig) {
	capped := c.MaxMsgs > 0 || c.MaxBytes > 0 || c.MaxMsgsPerSubject > 0
	if c.MaxAge > 0 || capped && c.Discard == jetstream.DiscardOld {
		w.log.Warn("the jobs stream's limits let the server drop jobs, which then get no outcome and no event",
			slog.String("stream", c.Name), slog.Duration("max_age", c.MaxAge), slog.Int64("max_msgs", c.MaxMsgs),
			slog.Int64("max_bytes", c.MaxBytes), slog.String("discard", c.Discard.String()))
	}
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

// subjectCovers reports whether pattern wide matches every subject that
// pattern narrow matches (NATS tokens; * one token, > the rest).
func subjectCovers(wide, narrow string) bool {
	wt, nt := strings.Split(wide, "."), strings.Split(narrow, ".")
	for i, w := range wt {
		switch {
		case w == ">":
			return i < len(nt)
		case i >= len(nt) || nt[i] == ">":
			return false
		case w != "*" && w != nt[i]:
			return false
		}
	}
	return len(wt) == len(nt)
}

// ensureStreamCapped runs ensureStream, and, if the server refuses want's
// de-duplication window as longer than its limit (server option
// jetstream.limits.duplicate_window), again with that limit, with a
// warning: a shorter window only lets an older repeated publish through.
func (w *Worker) ensureStreamCapped(ctx context.Context, want jetstream.StreamConfig, own func(*jetstream.StreamConfig)) (jetstream.StreamConfig, error) {
	have, err := ensureStream(ctx, w.js, want, own)
	if limit, ok := serverLimit(err, dupWindowLimit); ok {
		if d, perr := time.ParseDuration(limit); perr == nil && d > 0 && d < want.Duplicates {
			w.log.Warn("the server limits de-duplication windows; using its limit", slog.String("stream", want.Name),
				slog.Duration("duplicates", want.Duplicates), slog.Duration("server_limit", d))
			want.Duplicates = d
			have, err = ensureStream(ctx, w.js, want, own)
		}
	}
	return have, err
}

// Server limits named in JetStream's refusals: the de-duplication window
// (a stream's config error) and MaxAckPending (JSConsumerMaxPendingAckExcess).
var (
	dupWindowLimit     = regexp.MustCompile(`^duplicates window can not be larger then server limit of (\S+)$`)
	maxAckPendingLimit = regexp.MustCompile(`^consumer max ack pending exceeds system limit of (\d+)$`)
)

// serverLimit returns the limit a JetStream API error of the form re names.
func serverLimit(err error, re *regexp.Regexp) (string, bool) {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return "", false
	}
	m := re.FindStringSubmatch(apiErr.Description)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// ensureEvents creates the events stream, or brings what the worker owns
// of it up to date.
func (w *Worker) ensureEvents(ctx context.Context) error {
	o := &w.opts
	maxAge := max(o.EventsMaxAge, 0) // negative: no limit
	_, err := w.ensureStreamCapped(ctx, jetstream.StreamConfig{
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
		// Shutdown waits for this goroutine: end it with the worker.
		ctx, cancel := w.untilStopped(context.Background())
		defer cancel()
		ctx, cancelT := context.WithTimeout(ctx, w.opts.SetupTimeout)
		defer cancelT()
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
// only what the worker owns: its subjects are added (others kept, but for
// ones that a subject of want's covers; one that covers a subject of
// want's stands for it; a partial overlap is an error), acks to publishes
// are on, replicas are raised to want's (never lowered), the
// de-duplication window is set (at most the stream's max age), and
// whatever own sets is applied. Limits an operator set by hand (max bytes,
// max messages, discard policy, placement, …) stay as they are. A stream
// whose retention differs from want's cannot serve: that is an error
// naming both. It returns the stream's config as it left it.
func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, own func(*jetstream.StreamConfig)) (jetstream.StreamConfig, error) {
	for attempt := 0; ; attempt++ {
		s, err := js.Stream(ctx, want.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			_, err = js.CreateStream(ctx, want)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) && attempt < 3 {
				continue // another worker created it meanwhile: update that one
			}
			return want, err
		}
		if err != nil {
			return jetstream.StreamConfig{}, err
		}
		have := s.CachedInfo().Config
		if have.Retention != want.Retention {
			return have, fmt.Errorf("exists with %s retention, the worker needs %s: delete it or point the worker at another stream",
				have.Retention, want.Retention)
		}
		next := have
		next.Subjects = slices.Clone(have.Subjects)
		for _, subj := range want.Subjects {
			// The server refuses overlapping subjects in one stream. An
			// operator's wider subject (apns.>) already captures ours;
			// narrower ones (apns.jobs.ios) give way to ours, which
			// captures them; one that only partly overlaps ours
			// (apns.*.ios against apns.jobs.>) leaves part of ours
			// uncaptured, which the worker cannot run with.
			if slices.ContainsFunc(next.Subjects, func(s string) bool { return subjectCovers(s, subj) }) {
				continue
			}
			next.Subjects = slices.DeleteFunc(next.Subjects, func(s string) bool { return subjectCovers(subj, s) })
			if i := slices.IndexFunc(next.Subjects, func(s string) bool { return subjectsCollide(s, subj) }); i >= 0 {
				return have, fmt.Errorf("its subject %s overlaps %s, which the worker needs whole: give the stream %s (or a subject that covers it) instead",
					next.Subjects[i], subj, subj)
			}
			next.Subjects = append(next.Subjects, subj)
		}
		// Without acks to publishes, no event or job is ever confirmed
		// stored: the worker owns this setting.
		next.NoAck = false
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
			return have, nil
		}
		_, err = js.UpdateStream(ctx, next)
		return next, err
	}
}

// bindConsumer creates the durable consumer, or brings an existing one to
// the worker's settings. Its AckWait and MaxAckPending are shared by every
// worker on it, which may have been started with other values (a rolling
// upgrade): they are raised to this worker's, never lowered. Lowering
// AckWait under a worker that keeps its jobs alive at a longer one's pace
// would let them expire while it holds them, and the server would send
// them again; this worker keeps its own jobs alive at its own, shorter,
// pace, which is safe under a longer AckWait.
func (w *Worker) bindConsumer(ctx context.Context) error {
	o := &w.opts
	ackWait, maxAckPending := o.AckWait, o.MaxAckPending
	if c, err := w.js.Consumer(ctx, o.JobsStream, o.Durable); err == nil {
		have := c.CachedInfo().Config
		if have.AckWait > ackWait {
			w.log.Warn("the durable's ack wait is longer than APNS_WORKER_JOBS_ACK_WAIT; keeping it, as other workers may hold jobs that long "+
				"(to lower it, stop every worker and edit or delete the durable)",
				slog.String("durable", o.Durable), slog.Duration("durable_ack_wait", have.AckWait), slog.Duration("ack_wait", o.AckWait))
			ackWait = have.AckWait
		}
		maxAckPending = max(maxAckPending, have.MaxAckPending)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       o.Durable,
		Description:   "apns-worker jobs, shared by every worker",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1, // enforced by the worker: dead letter, then Term
		MaxAckPending: maxAckPending,
	}
	c, err := w.js.CreateOrUpdateConsumer(ctx, o.JobsStream, cfg)
	if limit, ok := serverLimit(err, maxAckPendingLimit); ok {
		// The server (or the account) caps MaxAckPending: the workers on
		// the durable hold at most that many jobs between them.
		if n, perr := strconv.Atoi(limit); perr == nil && n > 0 && n < cfg.MaxAckPending {
			w.log.Warn("the server limits max ack pending; using its limit: the workers on the durable hold at most that many jobs "+
				"(lower APNS_WORKER_MAX_IN_FLIGHT so that each worker's share fits)",
				slog.String("durable", o.Durable), slog.Int("max_ack_pending", cfg.MaxAckPending), slog.Int("server_limit", n),
				slog.Int("max_in_flight", o.MaxInFlight))
			cfg.MaxAckPending = n
			c, err = w.js.CreateOrUpdateConsumer(ctx, o.JobsStream, cfg)
		}
	}
	if err != nil {
		return fmt.Errorf("consumer: durable %s on %s: %w", o.Durable, o.JobsStream, err)
	}
	w.cons = c
	return nil
}
