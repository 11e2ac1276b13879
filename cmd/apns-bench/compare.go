package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpush/apns-worker/cmd/internal/worker"
	"github.com/jetpush/apns-worker/config"
)

// runCompare is -compare: against one embedded nats-server and one APNs
// test server in a child process, it runs the phases consumer, direct and
// worker (and no-apns, with -no-apns) one after the other, each in a
// process of its own, at the same offered rate, each after a warm-up at
// that rate on a fresh jobs stream; with -rounds N, that sequence N times.
func runCompare(ctx context.Context, c *benchConfig, stderr io.Writer) (res *compareResult, err error) {
	sc, err := newScratch()
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, sc.close()) }()
	dir := sc.dir
	res = &compareResult{
		Protocol: c.protocol, Rate: c.rate, PaceStepMS: ms(c.paceStep), DurationS: float64(c.n) / c.rate, Jobs: c.n, Warmup: c.warmup,
		Payload: len(makePayload(c.payload)), Rejected: c.rejected, Conns: c.conns, Worker: c.spawnWorker, Rounds: c.rounds,
		GoVersion: runtime.Version(), LoadBefore: loadAvg(), ClockTickMS: ms(clockTick),
	}
	if res.DurationS < 10 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("phases of %.1fs: CPU per job is counted in 10 ms ticks, so its resolution is ±%.2f µs/job; use -duration 10s or more", res.DurationS, usPerJob(clockTick, c.n)))
	}

	natsURL, stopNATS, err := startNATS(filepath.Join(dir, "nats"))
	if err != nil {
		return nil, err
	}
	sc.onClose(stopNATS)
	// The k-th phase run (over every round) has its jobs' tokens from
	// k·span (tokenBase), so the APNs server counts each phase's apart.
	span := max(c.n, c.warmup)
	phases := []string{phaseConsumer, phaseDirect, phaseWorker}
	if c.noAPNs {
		phases = append(phases, phaseNoAPNs)
	}
	srv, err := startChildServer(c.protocol, filepath.Join(dir, "creds"), c.rounds*len(phases)*span, c.rejected, stderr)
	if err != nil {
		return nil, err
	}
	sc.onClose(func() error { srv.close(); return nil })
	env := workerEnv(c, natsURL, srv.info())
	wcfg, err := loadConfig(env)
	if err != nil {
		return nil, err
	}
	pnc, err := nats.Connect(natsURL, nats.Name("apns-bench publisher"))
	if err != nil {
		return nil, err
	}
	sc.onClose(func() error { pnc.Close(); return nil })
	js, err := jetstream.New(pnc, jetstream.WithPublishAsyncMaxPending(c.maxPending))
	if err != nil {
		return nil, err
	}

	for round := 1; round <= c.rounds; round++ {
		for i, name := range phases {
			k := (round-1)*len(phases) + i
			if c.rounds > 1 {
				fmt.Fprintf(stderr, "apns-bench: round %d of %d, ", round, c.rounds)
			} else {
				fmt.Fprint(stderr, "apns-bench: ")
			}
			fmt.Fprintf(stderr, "phase %d of %d: %s, %d warm-up jobs and %d measured at %.0f jobs/s\n", i+1, len(phases), name, c.warmup, c.n, c.rate)
			p, err := comparePhase(ctx, c, name, round, k*span, dir, srv, env, wcfg, natsURL, js, stderr)
			if p.Name != "" {
				p.Round = round
				if err != nil {
					p.Error = err.Error()
				}
				res.Phases = append(res.Phases, p)
			}
			if err != nil {
				res.setRatios()
				if c.rounds > 1 {
					return res, fmt.Errorf("round %d, phase %s: %w", round, name, err)
				}
				return res, fmt.Errorf("phase %s: %w", name, err)
			}
		}
	}
	res.setRatios()
	return res, nil
}

// comparePhase runs one phase of a round, its jobs' tokens from tokenBase,
// with the APNs server's counts of them where it sends to APNs; dir is the
// run's scratch directory.
func comparePhase(ctx context.Context, c *benchConfig, name string, round, tokenBase int, dir string, srv *childServer, env map[string]string, wcfg *config.Config, natsURL string, js jetstream.JetStream, stderr io.Writer) (p phaseResult, err error) {
	before, err := srv.stats(tokenBase, c.n) // the server's counters are its whole life's
	if err != nil {
		return p, err
	}
	if name == phaseDirect {
		p, err = directPhase(ctx, c, env, dir, tokenBase, stderr)
	} else {
		p, err = natsPhase(ctx, c, name, round, env, wcfg, natsURL, js, tokenBase, stderr)
	}
	if (name == phaseDirect || name == phaseWorker) && p.Name != "" {
		after, serr := srv.stats(tokenBase, c.n)
		err = errors.Join(err, serr)
		p.setAPNs(before, after, c.warmup)
	}
	return p, err
}

// natsPhase measures one process that consumes the jobs stream: the bare
// consumer (apns-bench -run-baseline) or the worker (-spawn-worker). The
// stream is deleted first, so the phase starts on a fresh one.
func natsPhase(ctx context.Context, c *benchConfig, name string, round int, env map[string]string, wcfg *config.Config, natsURL string, js jetstream.JetStream, tokenBase int, stderr io.Writer) (p phaseResult, err error) {
	if err := js.DeleteStream(ctx, wcfg.Jobs.Stream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return p, fmt.Errorf("deleting the jobs stream: %w", err)
	}
	var cw *childWorker
	if name == phaseWorker {
		prof := ""
		if c.workerProf != "" {
			prof = fmt.Sprintf("%s.%d", c.workerProf, round-1)
		}
		cw, err = startChildWorker(c.spawnWorker, prof, env, stderr)
	} else {
		exe, xerr := os.Executable()
		if xerr != nil {
			return p, xerr
		}
		args := []string{"-run-baseline"}
		if name == phaseNoAPNs {
			args = []string{"-run-worker", "-no-apns"}
		}
		cw, err = startChild(exe, args, env, stderr)
	}
	if err != nil {
		return p, err
	}
	stopped := false
	defer func() {
		if !stopped {
			err = errors.Join(err, cw.stop())
		}
	}()
	stream, durable := wcfg.Jobs.Stream, wcfg.Jobs.Consumer
	base, err := waitReady(ctx, js, stream, durable, 1, []*childWorker{cw})
	if err != nil {
		return p, err
	}
	payload := makePayload(c.payload)
	if c.warmup > 0 {
		if base, err = warmUp(ctx, js, wcfg.Jobs.Subject, stream, durable, c.warmup, payload, c.offer(), tokenBase); err != nil {
			return p, err
		}
	}
	onc, err := nats.Connect(natsURL, nats.Name("apns-bench observer"))
	if err != nil {
		return p, err
	}
	t := newTracker(c.n, stream, base)
	t.tokenBase = tokenBase
	if _, err := t.subscribe(onc, wcfg.Events.Subject); err != nil {
		onc.Close()
		return p, err
	}

	pid := cw.pid()
	s0 := sampleProc(pid)
	t.start = time.Now()
	stopProgress := startProgress(stderr, t, c.progress)
	var s1 procSample
	pubErr, waitErr := t.runJobs(ctx, c.timeout, func(ctx context.Context) error {
		return t.publishAll(ctx, js, wcfg.Jobs.Subject, c.rejected, c.offer(), payload, c.maxPending, false)
	}, func() { s1 = sampleProc(pid) })
	stopProgress()
	if err := worker.DrainNATS(onc, 30*time.Second); err != nil { // every observed ack handled
		return p, err
	}
	o := t.outcome()
	p = newPhaseResult(name, "publish → ack", c.rate, c.n, o, s0, s1)
	p.StreamLeft = streamLeft(ctx, js, stream, o.lost == 0)
	if exited, xerr := cw.exited(); exited {
		waitErr = errors.Join(waitErr, fmt.Errorf("%s pid %d exited during the run: %v", name, pid, xerr))
	}
	stopped = true
	if serr := cw.stop(); serr != nil {
		waitErr = errors.Join(waitErr, fmt.Errorf("stopping the %s: %w", name, serr))
	}
	return p, errors.Join(pubErr, waitErr)
}
