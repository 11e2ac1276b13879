package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/cmd/internal/worker"
)

// run is one benchmark run: NATS (embedded unless -nats), the APNs test
// server (in this process, or a child with -spawn-worker, or none with
// -nats alone), the workers, then the jobs, measured until the last ack.
func run(ctx context.Context, c *benchConfig, stderr io.Writer) (res *result, err error) {
	sc, err := newScratch()
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, sc.close()) }()
	dir := sc.dir
	load := loadAvg()

	natsURL := c.natsURL
	if natsURL == "" {
		url, stop, err := startNATS(filepath.Join(dir, "nats"))
		if err != nil {
			return nil, err
		}
		sc.onClose(stop)
		natsURL = url
	}

	// The APNs test server and the workers.
	external := c.natsURL != "" && c.spawnWorker == ""
	var srv apnsServer
	switch {
	case external: // the worker and its APNs server are someone else's
	case c.baseline: // JetStream alone: no APNs server
	case c.apnsAddr != "": // the APNs server is someone else's
	case c.spawnWorker != "":
		cs, err := startChildServer(c.protocol, filepath.Join(dir, "creds"), c.n, c.rejected, stderr)
		if err != nil {
			return nil, err
		}
		srv = cs
	default:
		ls, err := startLocalServer(c.protocol, "", filepath.Join(dir, "creds"), c.n, c.rejected, c.silentClose)
		if err != nil {
			return nil, err
		}
		srv = ls
	}
	var env map[string]string
	switch {
	case srv != nil:
		sc.onClose(func() error { srv.close(); return nil })
		env = workerEnv(c, natsURL, srv.info())
	case c.apnsAddr != "":
		env = externalAPNsEnv(c, natsURL, os.Environ())
	default:
		env = maps.Clone(c.env)
		env["APNS_WORKER_NATS_URL"] = natsURL
	}
	wcfg, err := loadConfig(env) // names of streams and subjects; the in-process workers' config
	if err != nil {
		return nil, err
	}
	var resends atomic.Int64 // in-process workers: notifications written more than once
	var workers []runningWorker
	var children []*childWorker
	stopWorkers := func() error {
		var errs []error
		for _, w := range workers {
			errs = append(errs, w.stop())
		}
		workers = nil
		return errors.Join(errs...)
	}
	sc.onClose(stopWorkers)
	if c.baseline {
		bnc, err := nats.Connect(natsURL, nats.Name("apns-bench baseline consumer"))
		if err != nil {
			return nil, err
		}
		sc.onClose(func() error { bnc.Close(); return nil })
		bjs, err := jetstream.New(bnc)
		if err != nil {
			return nil, err
		}
		for range c.workers {
			b, err := startBaseline(ctx, bjs, wcfg)
			if err != nil {
				return nil, err
			}
			workers = append(workers, b)
		}
	} else if !external {
		level := slog.LevelError
		if c.verbose {
			level = slog.LevelInfo
		}
		log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
		for i := range c.workers {
			if c.spawnWorker != "" {
				prof := ""
				if c.workerProf != "" {
					prof = fmt.Sprintf("%s.%d", c.workerProf, i)
				}
				cw, err := startChildWorker(c.spawnWorker, prof, env, stderr)
				if err != nil {
					return nil, err
				}
				workers, children = append(workers, cw), append(children, cw)
				continue
			}
			workers = append(workers, startInprocWorker(wcfg, log, &resends))
		}
	}

	// The bench's own connections: one publishes, one observes.
	pnc, err := nats.Connect(natsURL, nats.Name("apns-bench publisher"))
	if err != nil {
		return nil, err
	}
	sc.onClose(func() error { pnc.Close(); return nil })
	js, err := jetstream.New(pnc, jetstream.WithPublishAsyncMaxPending(c.maxPending))
	if err != nil {
		return nil, err
	}
	base, err := waitReady(ctx, js, wcfg.Jobs.Stream, wcfg.Jobs.Consumer, len(workers), children)
	if err != nil {
		return nil, err
	}
	if c.warmup > 0 {
		if base, err = warmUp(ctx, js, wcfg.Jobs.Subject, wcfg.Jobs.Stream, wcfg.Jobs.Consumer, c.warmup, makePayload(c.payload), c.offer(), 0); err != nil {
			return nil, err
		}
	}
	onc, err := nats.Connect(natsURL, nats.Name("apns-bench observer"))
	if err != nil {
		return nil, err
	}
	t := newTracker(c.n, wcfg.Jobs.Stream, base)
	for _, s := range c.rejectedTokens {
		tok, _ := apns.ParseToken(s) // checked by parseFlags
		t.rejectedTokens = append(t.rejectedTokens, tok)
	}
	if _, err := t.subscribe(onc, wcfg.Events.Subject); err != nil {
		onc.Close()
		return nil, err
	}

	// Measure.
	payload := makePayload(c.payload)
	var pids []int
	for _, w := range workers {
		if w.pid() != 0 {
			pids = append(pids, w.pid())
		}
	}
	var srvPIDs []int
	if cs, ok := srv.(*childServer); ok {
		srvPIDs = append(srvPIDs, cs.cmd.Process.Pid)
	}
	cpu0, childCPU0, srvCPU0 := selfCPU(), procCPU(pids), procCPU(srvPIDs)
	if c.cpuProfile != "" {
		f, err := os.Create(c.cpuProfile)
		if err != nil {
			onc.Close()
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			onc.Close()
			f.Close()
			return nil, err
		}
		defer f.Close()
	}
	if c.memProfile != "" {
		runtime.GC() // a baseline the profile's -diff_base can drop
		if err := writeHeapProfile(c.memProfile + ".base"); err != nil {
			onc.Close()
			return nil, err
		}
	}
	t.start = time.Now()
	stopProgress := startProgress(stderr, t, c.progress)
	var cpu1, childCPU1, srvCPU1 time.Duration
	pubErr, waitErr := t.runJobs(ctx, c.timeout, func(ctx context.Context) error {
		return t.publishAll(ctx, js, wcfg.Jobs.Subject, c.rejected, c.offer(), payload, c.maxPending, c.msgID)
	}, func() {
		cpu1, childCPU1, srvCPU1 = selfCPU(), procCPU(pids), procCPU(srvPIDs)
		if c.cpuProfile != "" {
			pprof.StopCPUProfile()
		}
		if c.memProfile != "" {
			if err := writeHeapProfile(c.memProfile); err != nil {
				fmt.Fprintf(stderr, "apns-bench: %v\n", err)
			}
		}
	})
	stopProgress()
	if err := worker.DrainNATS(onc, 30*time.Second); err != nil { // every observed ack handled
		return nil, err
	}
	o := t.outcome()

	// After the run: what is left in the stream, what the server saw, RSS.
	left := streamLeft(ctx, js, wcfg.Jobs.Stream, o.lost == 0)
	res = newResult(c, o, load)
	res.Warmup = c.warmup
	if res.ElapsedS < minSteadyRun.Seconds() {
		res.Warnings = append(res.Warnings, fmt.Sprintf("the measured run took %.1fs, under %s: its rates are mostly start-up and buffers, not a sustained load; use a larger -n", res.ElapsedS, minSteadyRun))
	}
	res.StreamLeft = left
	res.NakCount = int(t.naks.Load())
	res.DeadLetters = int(t.deadLetters.Load())
	if len(pids) > 0 {
		res.Scope = "worker process (apns-worker); nats-server, publisher and APNs server run elsewhere"
		res.setCPU(childCPU1 - childCPU0)
		for _, pid := range pids {
			res.PeakRSSMB = max(res.PeakRSSMB, float64(procHWM(pid))/(1<<20))
		}
		res.BenchCPUUsPerJob = usPerJob(cpu1-cpu0, c.n)
		res.ServerCPUUsPerJob = usPerJob(srvCPU1-srvCPU0, c.n)
	} else if c.baseline {
		res.Scope = "whole bench process: nats-server, publisher, a consumer that acks each job at once"
		res.setCPU(cpu1 - cpu0)
		res.PeakRSSMB = float64(procHWM(0)) / (1 << 20)
	} else if !external {
		res.Scope = "whole bench process: nats-server, publisher, worker(s), APNs test server"
		res.setCPU(cpu1 - cpu0)
		res.PeakRSSMB = float64(procHWM(0)) / (1 << 20)
	} else {
		res.Scope = "bench process only (publisher, observer, embedded nats-server if any): the worker is external"
		res.setCPU(cpu1 - cpu0)
		res.PeakRSSMB = float64(procHWM(0)) / (1 << 20)
	}
	for _, cw := range children {
		if exited, err := cw.exited(); exited {
			waitErr = errors.Join(waitErr, fmt.Errorf("apns-worker pid %d exited during the run: %v", cw.pid(), err))
		}
	}
	if err := stopWorkers(); err != nil {
		waitErr = errors.Join(waitErr, fmt.Errorf("stopping workers: %w", err))
	}
	res.Resends, res.WritesPerJob = -1, -1
	if !external && !c.baseline && len(pids) == 0 {
		res.Resends = int(resends.Load())
		res.WritesPerJob = 1 + float64(res.Resends)/float64(c.n)
	}
	res.Duplicates, res.MissingAtAPNs, res.APNsAccepted, res.APNsRejected, res.APNsConns = -1, -1, -1, -1, -1
	if srv != nil {
		st, err := srv.stats(0, c.n)
		if err != nil {
			return res, err
		}
		res.Duplicates, res.APNsAccepted, res.APNsRejected = st.Duplicates, st.Accepted-c.warmup, st.Rejected
		res.MissingAtAPNs, res.APNsConns, res.SilentCloses = st.Missing, st.Conns, st.SilentCloses
	}
	return res, errors.Join(pubErr, waitErr)
}

// scratch is a run's temporary directory and what to undo when it ends.
type scratch struct {
	dir  string
	undo []func() error
}

func newScratch() (*scratch, error) {
	dir, err := os.MkdirTemp("", "apns-bench-")
	return &scratch{dir: dir}, err
}

// onClose adds f to what close runs, last added first.
func (s *scratch) onClose(f func() error) { s.undo = append(s.undo, f) }

// close runs the undo functions, last added first, then removes the
// directory.
func (s *scratch) close() error {
	var err error
	for i := len(s.undo) - 1; i >= 0; i-- {
		err = errors.Join(err, s.undo[i]())
	}
	return errors.Join(err, os.RemoveAll(s.dir))
}

// startNATS starts an embedded nats-server with JetStream storing in dir,
// on a free loopback port; stop shuts it down.
func startNATS(dir string) (url string, stop func() error, err error) {
	ns, err := server.NewServer(&server.Options{
		ServerName: "apns-bench", Host: "127.0.0.1", Port: -1,
		JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true,
	})
	if err != nil {
		return "", nil, err
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return "", nil, errors.New("embedded nats-server: not ready after 30s")
	}
	return ns.ClientURL(), func() error { ns.Shutdown(); ns.WaitForShutdown(); return nil }, nil
}

// runJobs publishes t's jobs with publish and waits until every one is
// finished, publish fails, or timeout passes; atEnd runs as soon as the
// wait ends (the last ack), before the publisher is stopped. Set t.start
// first.
func (t *tracker) runJobs(ctx context.Context, timeout time.Duration, publish func(context.Context) error, atEnd func()) (pubErr, waitErr error) {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pubCh := make(chan error, 1)
	go func() { pubCh <- publish(rctx) }()
wait:
	for {
		select {
		case <-t.done:
			break wait
		case pubErr = <-pubCh:
			pubCh = nil
			if pubErr != nil {
				break wait
			}
		case <-rctx.Done():
			waitErr = fmt.Errorf("stopped before every job was finished: %w", rctx.Err())
			break wait
		}
	}
	atEnd()
	cancel()
	if pubCh != nil {
		pubErr = <-pubCh
	}
	return pubErr, waitErr
}

// waitReady waits until the jobs stream and its durable exist and, when
// this run started workers, until each has a pull request waiting; it
// returns the stream's last sequence, after which this run's jobs go.
func waitReady(ctx context.Context, js jetstream.JetStream, stream, durable string, workers int, children []*childWorker) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		for _, cw := range children {
			if exited, err := cw.exited(); exited {
				return 0, fmt.Errorf("apns-worker pid %d exited: %v", cw.pid(), err)
			}
		}
		s, err := js.Stream(ctx, stream)
		if err == nil {
			var cons jetstream.Consumer
			if cons, err = s.Consumer(ctx, durable); err == nil {
				var ci *jetstream.ConsumerInfo
				if ci, err = cons.Info(ctx); err == nil {
					if ci.NumWaiting >= workers {
						return s.CachedInfo().State.LastSeq, nil
					}
					err = fmt.Errorf("%d of %d workers pulling", ci.NumWaiting, workers)
				}
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("workers not ready: %w", last)
		case <-tick.C:
		}
	}
}

// streamLeft is the number of messages still in the jobs stream once the
// server has applied the acks (it should be 0 when nothing was lost).
func streamLeft(ctx context.Context, js jetstream.JetStream, stream string, wantEmpty bool) int {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	left := -1
	for {
		if s, err := js.Stream(ctx, stream); err == nil {
			left = int(s.CachedInfo().State.Msgs)
			if left == 0 || !wantEmpty {
				return left
			}
		}
		select {
		case <-ctx.Done():
			return left
		case <-tick.C:
		}
	}
}

// makePayload returns a JSON payload of exactly n bytes (at least the
// 20 of {"aps":{"alert":""}}).
func makePayload(n int) []byte {
	const head, tail = `{"aps":{"alert":"`, `"}}`
	fill := max(n-len(head)-len(tail), 0)
	return []byte(head + strings.Repeat("x", fill) + tail)
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return fmt.Sprintf("%s %s %s (%d cores)", f[0], f[1], f[2], runtime.NumCPU())
}

// writeHeapProfile writes the heap profile, whose alloc_ samples count
// every allocation since the process started.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return fmt.Errorf("memory profile: %w", err)
	}
	return f.Close()
}
