// Command apns-bench measures the worker end to end: it publishes N push
// jobs to JetStream and times each one until the worker's ack for it passes
// through the server, with the real worker code path (consumer.Worker and
// an apns engine, configured by config.Load from APNS_WORKER_* variables)
// against an apns/apnstest server.
//
// Modes:
//
//	apns-bench [flags]                       embedded nats-server, worker(s)
//	                                         and APNs test server in this process
//	apns-bench -spawn-worker PATH [flags]    worker(s) are the apns-worker binary
//	                                         at PATH, the APNs test server is a
//	                                         child process: CPU and RSS are the
//	                                         worker's own
//	apns-bench -nats URL [flags]             publish and observe only; the worker
//	                                         runs elsewhere (e.g. docker compose)
//	apns-bench -serve binary|http2 -listen ADDR -creds DIR
//	                                         run only an APNs test server, writing
//	                                         its credentials and an env file to DIR
//	apns-bench -compare -rate N -duration D -spawn-worker PATH|self
//	                                         the paced comparison: a bare JetStream
//	                                         consumer, a direct send without NATS
//	                                         and the worker, one after the other,
//	                                         each in its own process (compare.go);
//	                                         -rounds N: N times over, with medians
//
// It prints a table on stdout, a progress bar on stderr, writes -json FILE,
// and exits 3 if a job was lost.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

type benchConfig struct {
	n           int
	protocol    string
	workers     int
	rejected    float64
	rate        float64
	paceStep    time.Duration // -pace-step
	payload     int
	jsonFile    string
	window      time.Duration
	confirm     time.Duration
	conns       int
	maxInFlight int
	maxPending  int
	timeout     time.Duration
	natsURL     string
	spawnWorker string
	serve       string
	listen      string
	creds       string
	cpuProfile  string
	memProfile  string
	msgID       bool
	baseline    bool
	apnsAddr    string
	protocolSet bool // -protocol given (with -nats alone, the worker's mode is not the bench's to know)
	workerProf  string
	runWorker   bool
	noAPNs      bool // -no-apns: -compare's no-apns phase; -run-worker: the instant engine
	rounds      int  // -rounds: -compare's phases, this many times over
	progress    bool
	verbose     bool
	// env holds the APNS_WORKER_* variables of the bench's environment
	// that go to its workers as they are (see env.go).
	env map[string]string
	// rejectedTokens are the tokens of -rejected-tokens FILE.
	rejectedTokens []string
	rejectedFile   string
	warmup         int
	silentClose    int
	// -compare and its child processes (compare.go, direct.go).
	compare     bool
	duration    time.Duration
	runBaseline bool
	runDirect   bool
	tokenBase   int
}

// parseFlags parses args with no APNS_WORKER_* variable set.
// offer is the publishers' pace: -rate, released every -pace-step.
func (c *benchConfig) offer() offer { return offer{rate: c.rate, step: c.paceStep} }

func parseFlags(args []string, stderr io.Writer) (*benchConfig, error) {
	return parseFlagsEnv(args, nil, stderr)
}

// parseFlagsEnv parses args, with the APNS_WORKER_* variables of environ
// applied as the worker reads them (env.go).
func parseFlagsEnv(args, environ []string, stderr io.Writer) (*benchConfig, error) {
	c := &benchConfig{}
	fs := flag.NewFlagSet("apns-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.n, "n", 200_000, "jobs to publish")
	fs.StringVar(&c.protocol, "protocol", "http2", "APNs protocol: binary or http2")
	fs.IntVar(&c.workers, "workers", 1, "workers sharing the durable consumer (1 to 16)")
	fs.Float64Var(&c.rejected, "rejected", 0.01, "share of jobs whose token the APNs server rejects")
	fs.Float64Var(&c.rate, "rate", 0, "publish at this many jobs/s; 0: as fast as JetStream takes them")
	fs.DurationVar(&c.paceStep, "pace-step", defaultPaceStep,
		"with -rate: release the jobs that fell due together every this long (1ms: 10 jobs a step at 10000 jobs/s); 100us at 10000 jobs/s offers them one by one, as a publisher that sleeps between jobs does")
	fs.IntVar(&c.payload, "payload", 128, "payload bytes (at least 20)")
	fs.StringVar(&c.jsonFile, "json", "", "write the result as JSON to this file")
	fs.DurationVar(&c.window, "window", time.Second,
		"binary mode: assumed-delivered window (APNS_WORKER_APNS_ASSUMED_DELIVERED; its default is 5s); without confirm markers every ack waits for it")
	fs.DurationVar(&c.confirm, "confirm-after", 100*time.Millisecond,
		"binary mode: confirm markers after this long (APNS_WORKER_APNS_CONFIRM_AFTER; the worker's default is 0, off); 0: off, every ack waits for the window")
	fs.IntVar(&c.conns, "conns", 4, "connections to APNs per worker (APNS_WORKER_APNS_CONNS)")
	fs.IntVar(&c.maxInFlight, "max-in-flight", 0, "APNS_WORKER_MAX_IN_FLIGHT; 0: the worker's default for the mode")
	fs.BoolVar(&c.msgID, "msg-id", false,
		"publish each job with a Nats-Msg-Id header, as producers that retry should; JetStream's de-duplication then costs it about 15% of its throughput")
	fs.BoolVar(&c.baseline, "baseline", false,
		"JetStream alone: a consumer that acks each job at once replaces the workers and the APNs server (the ceiling for a worker here)")
	fs.IntVar(&c.maxPending, "max-pending", 4096, "publisher: most PublishAsync messages awaiting their PubAck")
	fs.DurationVar(&c.timeout, "timeout", 0, "give up after this long; 0: 60s + 1ms per job")
	fs.StringVar(&c.apnsAddr, "apns-addr", "",
		"send to this APNs server instead of the bench's own (host:port for binary, https URL for http2); the workers take its credentials from this process's APNS_WORKER_APNS_* variables (CA_FILE, P8_FILE, KEY_ID, TEAM_ID, TOPIC or CERT_FILE, KEY_FILE)")
	fs.StringVar(&c.natsURL, "nats", "", "use this NATS server instead of an embedded one; alone, a worker must be running against it")
	fs.StringVar(&c.spawnWorker, "spawn-worker", "",
		"run the workers as this apns-worker binary, measuring their CPU and RSS; \"self\": this binary with -run-worker (for -worker-cpuprofile)")
	fs.StringVar(&c.serve, "serve", "", "run only an APNs test server for this protocol (binary or http2) until SIGINT/SIGTERM")
	fs.StringVar(&c.listen, "listen", "127.0.0.1:0", "-serve: listen address")
	fs.StringVar(&c.creds, "creds", "", "-serve: directory for ca.pem, client.pem, client-key.pem, AuthKey.p8 and env")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of this process, first publish to last ack")
	fs.StringVar(&c.memProfile, "memprofile", "", "write an allocation profile of this process at the last ack, and FILE.base at the first publish (pprof -diff_base FILE.base)")
	fs.StringVar(&c.workerProf, "worker-cpuprofile", "", "with -spawn-worker self: write each worker's CPU profile to this file, suffixed .<i>")
	fs.BoolVar(&c.runWorker, "run-worker", false,
		"run one worker, wired as in-process runs wire it, from APNS_WORKER_* until SIGINT/SIGTERM (what -spawn-worker self starts)")
	fs.BoolVar(&c.progress, "progress", true, "draw a progress bar on stderr")
	fs.BoolVar(&c.verbose, "v", false, "worker logs at info level (default: errors only)")
	fs.IntVar(&c.silentClose, "silent-close", 0,
		"the bench's APNs server closes a connection silently (binary: no error response; http2: no GOAWAY) at every N-th notification it takes, as a load balancer may; shows the resend bound (writes per job); 0: never")
	fs.IntVar(&c.warmup, "warmup", 2000, "jobs published and finished before the measured ones, not counted (warm connections and caches), at -rate if set; 0: none; -compare's default: 1 s of -rate, at least 2000")
	fs.BoolVar(&c.compare, "compare", false,
		"the paced comparison: at -rate for -duration, a bare JetStream consumer, a direct send to the APNs server without NATS, and the worker of -spawn-worker, one after the other, each in its own process; one table of their CPU per job, latency, syscalls and context switches")
	fs.BoolVar(&c.noAPNs, "no-apns", false,
		"-compare: a fourth phase, no-apns: this binary's worker with an engine that answers each notification at once (the rejected share with 400 BadDeviceToken) without APNs or a network, which shows what the worker costs by itself beside the bare consumer; -run-worker: that engine")
	fs.IntVar(&c.rounds, "rounds", 1, "-compare: run the phases this many times, round after round (consumer, direct, worker…, then again), and report each round and the medians of the ratios: on a noisy machine one round's ratio can swing by 10 %")
	fs.DurationVar(&c.duration, "duration", 0, "with -rate: publish for this long (-n jobs at most); -compare's default: 10s a phase")
	fs.BoolVar(&c.runBaseline, "run-baseline", false, "run -compare's bare consumer from APNS_WORKER_* until SIGINT/SIGTERM (what -compare starts)")
	fs.BoolVar(&c.runDirect, "run-direct", false, "run -compare's direct phase from APNS_WORKER_*, writing its result to -json FILE (what -compare starts)")
	fs.IntVar(&c.tokenBase, "token-base", 0, "-run-direct: number the jobs' tokens from this")
	fs.StringVar(&c.rejectedFile, "rejected-tokens", "",
		"with -apns-addr or -nats: hex device tokens, one a line, that the APNs server rejects (e.g. of apps since uninstalled); the rejected share cycles through them instead of bad0… tokens, which only the bench's own servers reject")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: apns-bench [flags]\n\nflags:\n")
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), `
Environment: the worker's APNS_WORKER_* variables reach the bench's workers
as the worker reads them (apns-worker -h lists them).
APNS_WORKER_APNS_CONNS, APNS_WORKER_MAX_IN_FLIGHT,
APNS_WORKER_APNS_ASSUMED_DELIVERED and APNS_WORKER_APNS_CONFIRM_AFTER set
the defaults of -conns, -max-in-flight, -window and -confirm-after. Those
naming NATS, the APNs address and mode, the embedded server, HTTP and
logging are refused (use the flags), and so are the APNs credentials
unless -apns-addr is given. Unknown names are refused.
`)
	}
	if err := applyEnvFlags(fs, environ); err != nil {
		return nil, err
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	c.protocolSet = set["protocol"]
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.serve != "" {
		c.protocol = c.serve
	}
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	child := c.runWorker || c.runBaseline || c.runDirect
	if !child { // a child reads its environment as the worker does
		var envErrs []error
		c.env, envErrs = workerEnvFrom(environ, c.apnsAddr != "")
		errs = append(errs, envErrs...)
	}
	if c.rejectedFile != "" {
		var err error
		switch {
		case c.apnsAddr == "" && (c.natsURL == "" || c.spawnWorker != ""):
			bad("-rejected-tokens names tokens another APNs server rejects: use it with -apns-addr, or -nats with a worker running elsewhere (the bench's own servers reject bad0… tokens)")
		default:
			if c.rejectedTokens, err = readTokenList(c.rejectedFile); err != nil {
				bad("-rejected-tokens: %v", err)
			}
		}
	}
	if c.protocol != "binary" && c.protocol != "http2" {
		bad("-protocol %q: want binary or http2", c.protocol)
	}
	if c.n < 1 {
		bad("-n %d < 1", c.n)
	}
	if c.warmup < 0 {
		bad("-warmup %d < 0", c.warmup)
	}
	if c.workers < 1 || c.workers > 16 {
		bad("-workers %d: want 1 to 16", c.workers)
	}
	if c.rejected < 0 || c.rejected > 1 {
		bad("-rejected %g: want a share from 0 to 1", c.rejected)
	}
	if c.rate < 0 {
		bad("-rate %g < 0", c.rate)
	}
	if c.paceStep < 10*time.Microsecond || c.paceStep > time.Second || (set["pace-step"] && c.rate <= 0) {
		bad("-pace-step %s: want 10us to 1s, with -rate", c.paceStep)
	}
	maxPayload := 4096
	if c.protocol == "binary" {
		maxPayload = 2048
	}
	if c.payload < 20 || c.payload > maxPayload {
		bad("-payload %d: want 20 to %d bytes", c.payload, maxPayload)
	}
	if c.window <= 0 || c.confirm < 0 {
		bad("-window %s <= 0 or -confirm-after %s < 0", c.window, c.confirm)
	}
	if c.conns < 1 || c.maxInFlight < 0 || c.maxPending < 1 {
		bad("-conns, -max-pending must be >= 1, -max-in-flight >= 0")
	}
	if c.apnsAddr != "" && (c.baseline || c.serve != "" || (c.natsURL != "" && c.spawnWorker == "")) {
		bad("-apns-addr is where the bench's workers send: not with -baseline, -serve, or -nats without -spawn-worker")
	}
	if c.baseline && (c.spawnWorker != "" || c.natsURL != "" || c.serve != "") {
		bad("-baseline runs its own consumer on the embedded nats-server: not with -spawn-worker, -nats or -serve")
	}
	if c.compare {
		if c.duration == 0 {
			c.duration = 10 * time.Second
		}
		if !set["warmup"] {
			c.warmup = max(c.warmup, int(c.rate))
		}
		switch {
		case c.rate <= 0:
			bad("-compare needs -rate N jobs/s")
		case c.spawnWorker == "":
			bad("-compare needs -spawn-worker PATH (an apns-worker binary) or self")
		case c.baseline || c.natsURL != "" || c.apnsAddr != "" || c.serve != "" || c.workers != 1 || c.msgID || c.silentClose != 0 || c.rejectedFile != "":
			bad("-compare runs one worker against its own nats-server and APNs server: not with -baseline, -nats, -apns-addr, -serve, -workers, -msg-id, -silent-close or -rejected-tokens")
		}
	}
	if c.rounds < 1 || (c.rounds > 1 && !c.compare) {
		bad("-rounds %d: a count of -compare rounds, >= 1", c.rounds)
	}
	if c.noAPNs && !c.compare && !c.runWorker {
		bad("-no-apns is a phase of -compare")
	}
	if c.duration < 0 || (c.duration > 0 && c.rate <= 0) {
		bad("-duration %s: needs -rate, and must be > 0", c.duration)
	}
	if c.duration > 0 && c.rate > 0 {
		n := int(c.rate * c.duration.Seconds())
		if !set["n"] || n < c.n {
			c.n = max(n, 1)
		}
	}
	if c.timeout == 0 {
		c.timeout = 60*time.Second + time.Duration(c.n)*time.Millisecond + c.duration
	}
	return c, errors.Join(errs...)
}

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func realMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if _, ok := stderr.(*os.File); !ok { // children's output is copied to it by goroutines of their own
		stderr = &syncWriter{w: stderr}
	}
	c, err := parseFlagsEnv(args, os.Environ(), stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "apns-bench:", err)
		return 2
	}
	if len(c.env) > 0 && !c.runWorker {
		fmt.Fprintf(stderr, "apns-bench: the workers also get, from the environment: %s\n", strings.Join(slices.Sorted(maps.Keys(c.env)), " "))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var child func() error // the modes -spawn-worker and -compare start
	switch {
	case c.runWorker:
		child = func() error { return runOneWorker(ctx, c, stderr) }
	case c.runBaseline:
		child = func() error { return runBaselineChild(ctx) }
	case c.runDirect:
		child = func() error { return runDirect(ctx, c, stderr) }
	}
	if child != nil {
		if err := child(); err != nil {
			fmt.Fprintln(stderr, "apns-bench:", err)
			return 1
		}
		return 0
	}
	if c.compare {
		return compareMain(ctx, c, stdout, stderr)
	}
	if c.serve != "" {
		if err := serve(ctx, c, stdin, stdout); err != nil {
			fmt.Fprintln(stderr, "apns-bench:", err)
			return 1
		}
		return 0
	}
	res, err := run(ctx, c, stderr)
	if res != nil {
		res.writeTable(stdout)
		if c.jsonFile != "" {
			if werr := res.writeJSON(c.jsonFile); werr != nil {
				err = errors.Join(err, werr)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "apns-bench:", err)
	}
	switch {
	case res != nil && res.Lost > 0:
		fmt.Fprintf(stderr, "apns-bench: %d jobs lost\n", res.Lost)
		return 3
	case err != nil:
		return 1
	}
	return 0
}

// compareMain runs -compare and reports it; it exits 3 if a job was lost.
func compareMain(ctx context.Context, c *benchConfig, stdout, stderr io.Writer) int {
	res, err := runCompare(ctx, c, stderr)
	if res != nil {
		res.writeTable(stdout)
		if c.jsonFile != "" {
			err = errors.Join(err, res.writeJSON(c.jsonFile))
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "apns-bench:", err)
	}
	switch {
	case res != nil && res.lost() > 0:
		fmt.Fprintf(stderr, "apns-bench: %d jobs lost\n", res.lost())
		return 3
	case err != nil:
		return 1
	}
	return 0
}

// syncWriter serializes the writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
