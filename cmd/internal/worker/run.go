// Package worker wires the worker process from a config.Config: NATS
// (embedded or remote), the consumer, the APNs engine for the mode, the
// feedback poller and the HTTP endpoints. cmd/apns-worker runs it; the
// in-process benchmark runs the same code.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/config"
	"github.com/jetpush/apns-worker/consumer"
	"github.com/jetpush/apns-worker/feedback"
)

// Option adjusts Run.
type Option func(*options)

type options struct {
	observe func(apns.Outcome)
	engine  func(apns.OutcomeFunc) apns.Engine
}

// WithOutcomeObserver calls f with each engine outcome before the consumer
// handles it (the benchmark counts resends with it). f must be fast.
func WithOutcomeObserver(f func(apns.Outcome)) Option {
	return func(o *options) { o.observe = f }
}

// WithEngine replaces the APNs engine the configuration names with the one
// newEngine returns, wired to the consumer's outcome func (the benchmark's
// engine without APNs, which shows what the worker costs by itself). No
// credentials are loaded and no feedback poller is started.
func WithEngine(newEngine func(apns.OutcomeFunc) apns.Engine) Option {
	return func(o *options) { o.engine = newEngine }
}

// Run wires the worker and blocks until ctx is done, then shuts down in
// order: stop pulling, let the engine finish and every outcome be acked or
// naked, stop the feedback poller, and only then close NATS.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, opts ...Option) (err error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	// One shutdown budget, ShutdownGrace from the signal, covers every
	// step: the drain of the pull buffer, the engine's last outcomes, the
	// ack flush and the NATS drain.
	// shutdownEnd is fixed once, when the signal arrives (or Run fails).
	var shutdownEnd time.Time
	stopAt := make(chan time.Time, 1)
	defer context.AfterFunc(ctx, func() { stopAt <- time.Now() })()
	fixShutdownEnd := func() time.Time {
		if shutdownEnd.IsZero() {
			select {
			case t := <-stopAt:
				shutdownEnd = t.Add(cfg.ShutdownGrace)
			default: // stopped by an error, not a signal
				shutdownEnd = time.Now().Add(cfg.ShutdownGrace)
			}
		}
		return shutdownEnd
	}
	natsReserve := min(cfg.ShutdownGrace/6, 5*time.Second)
	started, running := time.Now(), false

	reg := prometheus.NewRegistry()
	// Registered first, so it runs last: once NATS is drained.
	defer func() {
		if running {
			logSummary(log, reg, started)
		}
	}()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := consumer.NewMetrics(reg)
	if err != nil {
		return err
	}
	// /readyz answers from the start: not ready until NATS and the engine
	// are up.
	var live readiness
	stopHTTP, err := serveHTTP(cfg.HTTPAddr, reg, live.problems, log)
	if err != nil {
		return err
	}
	defer stopHTTP()

	live.setPhase("connecting to NATS")
	faults := newNATSFaults(cfg, log)
	nc, closeNATS, err := connectNATS(ctx, cfg, log, faults)
	if err != nil {
		return err
	}
	defer func() {
		err = errors.Join(err, closeNATS(max(time.Until(fixShutdownEnd()), time.Second)))
	}()
	// A PubAck lost without a reconnect must not hold its event's job (or
	// the pending-publish window) forever.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}

	if err := checkJetStream(ctx, js, nc.ConnectedUrlRedacted()); err != nil {
		return err
	}
	live.setPhase("creating the streams and the consumer")
	start := time.Now()
	w, err := setUpJetStream(ctx, nc, js, consumer.Options{
		JobsStream:    cfg.Jobs.Stream,
		JobsSubject:   cfg.Jobs.Subject,
		Durable:       cfg.Jobs.Consumer,
		EventsStream:  cfg.Events.Stream,
		EventsSubject: cfg.Events.Subject,
		EventsMaxAge:  eventsMaxAge(cfg.Events.MaxAge),
		Replicas:      cfg.Replicas,
		AckWait:       cfg.Jobs.AckWait,
		MaxDeliver:    cfg.Jobs.MaxDeliver,
		Backoff:       cfg.Jobs.Backoff,
		MaxInFlight:   cfg.MaxInFlight,
		Receipts:      cfg.Events.Receipts,
		Protocol:      protocolName(cfg.APNs.Mode),
		MaxPayload:    cfg.APNs.MaxPayload,
		DefaultTopic:  cfg.APNs.Topic,
		DrainTimeout:  max(cfg.ShutdownGrace/4, time.Second),
		Logger:        log.With(slog.String("component", "consumer")),
		Metrics:       metrics,
	}, cfg.NATS.ConnectTimeout, live.setPhase, log)
	if err != nil {
		return err
	}
	stepDone(log, "jetstream streams and consumer ready", "APNS_WORKER_JOBS_STREAM", cfg.Jobs.Stream, start)

	onOutcome := w.HandleOutcome
	if o.observe != nil {
		onOutcome = func(out apns.Outcome) {
			o.observe(out)
			w.HandleOutcome(out)
		}
	}
	live.setPhase("loading the APNs credentials")
	start = time.Now()
	var eng apns.Engine
	var creds engineCreds
	closeMock := func() {}
	if o.engine != nil {
		eng = o.engine(onOutcome)
	} else if eng, creds, closeMock, err = newEngine(cfg, onOutcome, log); err != nil {
		_ = w.Shutdown(context.Background(), nil)
		return err
	}
	defer closeMock()
	stepDone(log, "apns engine ready", "APNS_WORKER_APNS_MODE", string(cfg.APNs.Mode), start)
	reg.MustRegister(consumer.NewEngineCollector(eng))
	probeAPNs(ctx, cfg.APNs, creds, log)
	live.set(nc, eng)

	stopFeedback := func(time.Time) {}
	if o.engine == nil && cfg.APNs.Mode == config.ModeBinary && cfg.Feedback.Addr != "" && cfg.Feedback.Interval > 0 {
		if stopFeedback, err = startFeedback(ctx, cfg, creds, w, log); err != nil {
			_ = w.Shutdown(context.Background(), eng)
			return err
		}
	}

	log.Info("worker running",
		slog.String("jobs_subject", cfg.Jobs.Subject),
		slog.String("events", cfg.Events.Subject+".>"),
		slog.String("apns_mode", string(cfg.APNs.Mode)))
	running = true
	// A permission the worker cannot run without, refused, stops it as a
	// signal would, and is its error.
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	go func() {
		select {
		case <-faults.Done():
			stopRun()
		case <-runCtx.Done():
		}
	}()
	runErr := errors.Join(w.Run(runCtx, eng), faults.Err())

	end := fixShutdownEnd()
	log.Info("shutting down", slog.String("grace", cfg.ShutdownGrace.String()), slog.String("left", time.Until(end).Round(time.Millisecond).String()))
	sctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), end.Add(-natsReserve))
	defer cancel()
	shutErr := w.Shutdown(sctx, eng) // closes the engine; every outcome acked, naked or termed
	stopFeedback(end.Add(-natsReserve))
	return errors.Join(runErr, shutErr)
}

// eventsMaxAge maps APNS_WORKER_EVENTS_MAX_AGE=0 (no age limit) to the
// consumer's "none" (negative; its zero means the 7-day default).
func eventsMaxAge(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func protocolName(m config.Mode) string {
	switch m {
	case config.ModeHTTP2:
		return consumer.ProtocolHTTP2
	case config.ModeMock:
		return consumer.ProtocolMock // the binary engine against the in-process gateway
	}
	return consumer.ProtocolBinary
}

// startFeedback polls the feedback service and publishes its bad tokens.
// stop cancels the poller and waits for it until deadline (5 s at most).
func startFeedback(ctx context.Context, cfg *config.Config, creds engineCreds, w *consumer.Worker, log *slog.Logger) (stop func(deadline time.Time), err error) {
	opts := []feedback.Option{feedback.WithLogger(log.With(slog.String("component", "feedback")))}
	if creds.roots != nil {
		opts = append(opts, feedback.WithRootCAs(creds.roots))
	}
	fc, err := feedback.NewClient(cfg.Feedback.Addr, creds.cert, opts...)
	if err != nil {
		return nil, fmt.Errorf("feedback: %w", err)
	}
	p, err := feedback.NewPoller(fc, cfg.Feedback.Interval, func(ctx context.Context, toks []feedback.BadToken) error {
		bad := make([]consumer.BadToken, len(toks))
		for i, t := range toks {
			bad[i] = consumer.BadToken{Token: t.Token, Time: t.Time}
		}
		log.Info("feedback service reported bad tokens", slog.Int("count", len(bad)))
		return w.PublishBadTokens(ctx, bad)
	}, feedback.WithStopGrace(min(3*time.Second, cfg.ShutdownGrace/10))) // within stop's wait, before NATS closes
	if err != nil {
		return nil, fmt.Errorf("feedback: %w", err)
	}
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(pctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("feedback poller stopped", slog.Any("error", err))
		}
	}()
	return func(deadline time.Time) {
		cancel()
		select {
		case <-done:
		case <-time.After(min(time.Until(deadline), 5*time.Second)):
			log.Warn("feedback poller did not stop in time")
		}
	}, nil
}
