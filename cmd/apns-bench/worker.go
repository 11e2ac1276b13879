package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/cmd/internal/gcfloor"
	"github.com/jetpush/apns-worker/cmd/internal/procs"
	"github.com/jetpush/apns-worker/cmd/internal/worker"
	"github.com/jetpush/apns-worker/config"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// benchTopic is the apns-topic of HTTP/2 requests (token auth needs one).
const benchTopic = "com.example.apnsbench"

// workerEnv is the APNS_WORKER_* environment of a worker for this run,
// against the bench's own APNs test server. An in-process worker loads it
// with config.Load, a spawned one gets it as its environment: both go
// through the same configuration code.
func workerEnv(c *benchConfig, natsURL string, si serverInfo) map[string]string {
	env := runEnv(c, natsURL, si.Protocol, si.Addr)
	env["APNS_WORKER_APNS_CA_FILE"] = filepath.Join(si.Dir, caFile)
	if si.Protocol == "http2" {
		env["APNS_WORKER_APNS_P8_FILE"] = filepath.Join(si.Dir, p8File)
		env["APNS_WORKER_APNS_KEY_ID"] = si.KeyID
		env["APNS_WORKER_APNS_TEAM_ID"] = si.TeamID
		env["APNS_WORKER_APNS_TOPIC"] = benchTopic
	} else {
		env["APNS_WORKER_APNS_CERT_FILE"] = filepath.Join(si.Dir, clientCertFile)
		env["APNS_WORKER_APNS_KEY_FILE"] = filepath.Join(si.Dir, clientKeyFile)
	}
	return env
}

// externalAPNsEnv is the workers' environment for -apns-addr: runEnv's
// settings, and the credentials and CA of every APNS_WORKER_APNS_*
// variable of environ (the mode and the address are the bench's flags).
func externalAPNsEnv(c *benchConfig, natsURL string, environ []string) map[string]string {
	env := runEnv(c, natsURL, c.protocol, c.apnsAddr)
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if _, set := env[k]; !set && strings.HasPrefix(k, config.Prefix+"_APNS_") {
			env[k] = v
		}
	}
	return env
}

// runEnv is what every worker of the run gets whatever its APNs server:
// NATS, mode and address, the bench's connection, window and marker
// flags, no HTTP listener, and quiet JSON logs.
func runEnv(c *benchConfig, natsURL, protocol, addr string) map[string]string {
	env := maps.Clone(c.env) // the user's other APNS_WORKER_* variables
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, map[string]string{
		"APNS_WORKER_NATS_URL":               natsURL,
		"APNS_WORKER_APNS_MODE":              protocol,
		"APNS_WORKER_APNS_ADDR":              addr,
		"APNS_WORKER_APNS_CONNS":             fmt.Sprint(c.conns),
		"APNS_WORKER_APNS_ASSUMED_DELIVERED": c.window.String(),
		"APNS_WORKER_HTTP_ADDR":              "",
		"APNS_WORKER_LOG_FORMAT":             "json",
		"APNS_WORKER_LOG_LEVEL":              "error",
	})
	if protocol == "binary" {
		env["APNS_WORKER_APNS_CONFIRM_AFTER"] = c.confirm.String()
	}
	if c.verbose {
		env["APNS_WORKER_LOG_LEVEL"] = "info"
	}
	if c.maxInFlight > 0 {
		env["APNS_WORKER_MAX_IN_FLIGHT"] = fmt.Sprint(c.maxInFlight)
	}
	return env
}

// loadConfig runs config.Load on env alone: any APNS_WORKER_* variable of
// this process is unset meanwhile, and the environment is restored after.
func loadConfig(env map[string]string) (*config.Config, error) {
	saved := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, config.Prefix+"_") {
			saved[k] = v
			_ = os.Unsetenv(k)
		}
	}
	defer func() {
		for k := range env {
			_ = os.Unsetenv(k)
		}
		for k, v := range saved {
			_ = os.Setenv(k, v)
		}
	}()
	for k, v := range env {
		if err := os.Setenv(k, v); err != nil {
			return nil, err
		}
	}
	cfg, err := config.Load()
	if err != nil {
		return nil, fmt.Errorf("worker config: %w", err)
	}
	return cfg, nil
}

// runningWorker is one worker, in this process or a child.
type runningWorker interface {
	// pid is the process to measure, 0 for this one.
	pid() int
	stop() error
}

// inprocWorker is cmd/apns-worker's code path (worker.Run) in this
// process, with its own NATS connection; the only thing added is an outcome
// observer that counts resends.
type inprocWorker struct {
	cancel context.CancelFunc
	done   chan error
}

func startInprocWorker(cfg *config.Config, log *slog.Logger, resends *atomic.Int64, opts ...worker.Option) *inprocWorker {
	ctx, cancel := context.WithCancel(context.Background())
	iw := &inprocWorker{cancel: cancel, done: make(chan error, 1)}
	countResends := worker.WithOutcomeObserver(func(o apns.Outcome) {
		if o.Attempts > 1 {
			resends.Add(int64(o.Attempts - 1))
		}
	})
	go func() { iw.done <- worker.Run(ctx, cfg, log, append(opts, countResends)...) }()
	return iw
}

func (iw *inprocWorker) pid() int { return 0 }

// stop cancels Run, which shuts down in order (stop pulling, close the
// engine and finish every job, drain NATS), and returns its error.
func (iw *inprocWorker) stop() error {
	iw.cancel()
	return <-iw.done
}

// childWorker is the apns-worker binary run as a child process.
type childWorker struct {
	cmd  *exec.Cmd
	done chan error
}

// startChildWorker starts the apns-worker binary at path, or for path
// "self" this binary with -run-worker (and -cpuprofile prof, if not empty).
func startChildWorker(path, prof string, env map[string]string, stderr io.Writer) (*childWorker, error) {
	var args []string
	if path == "self" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		path, args = exe, []string{"-run-worker"}
		if prof != "" {
			args = append(args, "-cpuprofile", prof)
		}
	}
	return startChild(path, args, env, stderr)
}

// startChild starts path with args and the environment childEnv(env).
func startChild(path string, args []string, env map[string]string, stderr io.Writer) (*childWorker, error) {
	cmd := exec.Command(path, args...)
	cmd.Env = childEnv(env)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	cw := &childWorker{cmd: cmd, done: make(chan error, 1)}
	go func() { cw.done <- cmd.Wait() }()
	return cw, nil
}

// childEnv is this process's environment without its APNS_WORKER_*
// variables, and env.
func childEnv(env map[string]string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, config.Prefix+"_") {
			out = append(out, kv)
		}
	}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

func (cw *childWorker) pid() int { return cw.cmd.Process.Pid }

// exited reports the child's exit, if it has exited.
func (cw *childWorker) exited() (bool, error) {
	select {
	case err := <-cw.done:
		cw.done <- err
		return true, err
	default:
		return false, nil
	}
}

func (cw *childWorker) stop() error {
	_ = cw.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-cw.done:
		return err
	case <-time.After(60 * time.Second):
		_ = cw.cmd.Process.Kill()
		return fmt.Errorf("apns-worker pid %d did not stop within 60s: %w", cw.pid(), <-cw.done)
	}
}

// runOneWorker is `apns-bench -run-worker`: one in-process worker in a
// process of its own, configured from the environment, until ctx is done.
func runOneWorker(ctx context.Context, c *benchConfig, stderr io.Writer) error {
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	if c.cpuProfile != "" {
		f, err := os.Create(c.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.Log.Level}))
	procs.Govern(ctx, cfg.Procs == config.ProcsAuto, log) // as apns-worker does
	defer gcfloor.Keep(uint64(cfg.GCFloorMiB)<<20, log)()
	var resends atomic.Int64
	var opts []worker.Option
	if c.noAPNs {
		opts = append(opts, worker.WithEngine(func(out apns.OutcomeFunc) apns.Engine {
			return newInstantEngine(out, cfg.MaxInFlight)
		}))
	}
	iw := startInprocWorker(cfg, log, &resends, opts...)
	select {
	case <-ctx.Done():
		return iw.stop()
	case err := <-iw.done: // failed to start, or stopped by itself
		return err
	}
}

// baselineConsumer is -baseline's stand-in for a worker: JetStream alone.
// It consumes the jobs stream with the same pull settings and acks every
// job as it arrives, without decoding it or sending it anywhere, so a run
// measures what nats-server, the publisher and the observer cost by
// themselves: the ceiling for a worker on this machine.
type baselineConsumer struct {
	cc jetstream.ConsumeContext
}

// startBaseline creates the jobs stream and durable as a worker would
// (work-queue retention, file storage, explicit acks) and consumes it with
// a pull buffer of baselinePull and opts.
func startBaseline(ctx context.Context, js jetstream.JetStream, cfg *config.Config, opts ...jetstream.PullConsumeOpt) (*baselineConsumer, error) {
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: cfg.Jobs.Stream, Subjects: cfg.Jobs.Subjects(),
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("baseline: jobs stream: %w", err)
	}
	cons, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: cfg.Jobs.Consumer, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: cfg.Jobs.AckWait, MaxAckPending: 4 * (cfg.MaxInFlight + baselinePull),
	})
	if err != nil {
		return nil, fmt.Errorf("baseline: durable consumer: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { _ = m.Ack() }, append([]jetstream.PullConsumeOpt{jetstream.PullMaxMessages(baselinePull)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("baseline: consume: %w", err)
	}
	return &baselineConsumer{cc: cc}, nil
}

// baselinePull is the worker's default pull buffer.
const baselinePull = 1000

func (b *baselineConsumer) pid() int { return 0 }

func (b *baselineConsumer) stop() error {
	b.cc.Drain()
	<-b.cc.Closed()
	return nil
}

// runBaselineChild is `apns-bench -run-baseline`: the bare consumer of
// -compare in a process of its own, on the NATS server and durable of the
// APNS_WORKER_* environment, as a worker started from it would be, with
// the worker's default pull settings (a buffer of 1 000, at most
// MaxInFlight; 5 s pull requests), until ctx is done.
func runBaselineChild(ctx context.Context) error {
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(strings.Join(cfg.NATS.URLs, ","), nats.Name("apns-bench bare consumer"))
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return err
	}
	b, err := startBaseline(ctx, js, cfg, jetstream.PullMaxMessages(min(baselinePull, cfg.MaxInFlight)), jetstream.PullExpiry(5*time.Second))
	if err != nil {
		nc.Close()
		return err
	}
	<-ctx.Done()
	return errors.Join(b.stop(), worker.DrainNATS(nc, 30*time.Second))
}
