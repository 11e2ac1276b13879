package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/config"
	"github.com/jetpush/apns-worker/consumer"
)

// benchTopic is the apns-topic of HTTP/2 requests (token auth needs one).
const benchTopic = "com.example.apnsbench"

// workerEnv is the APNS_WORKER_* environment of a worker for this run. An
// in-process worker loads it with config.Load, a spawned one gets it as its
// environment: both go through the same configuration code.
func workerEnv(c *benchConfig, natsURL string, si serverInfo) map[string]string {
	env := map[string]string{
		"APNS_WORKER_NATS_URL":               natsURL,
		"APNS_WORKER_APNS_MODE":              si.Protocol,
		"APNS_WORKER_APNS_ADDR":              si.Addr,
		"APNS_WORKER_APNS_CA_FILE":           filepath.Join(si.Dir, caFile),
		"APNS_WORKER_APNS_CONNS":             fmt.Sprint(c.conns),
		"APNS_WORKER_APNS_ASSUMED_DELIVERED": c.window.String(),
		"APNS_WORKER_HTTP_ADDR":              "",
		"APNS_WORKER_LOG_FORMAT":             "json",
		"APNS_WORKER_LOG_LEVEL":              "error",
	}
	if c.verbose {
		env["APNS_WORKER_LOG_LEVEL"] = "info"
	}
	if c.maxInFlight > 0 {
		env["APNS_WORKER_MAX_IN_FLIGHT"] = fmt.Sprint(c.maxInFlight)
	}
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

// loadConfig runs config.Load on env alone (any APNS_WORKER_* variable of
// this process is unset first).
func loadConfig(env map[string]string) (*config.Config, error) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, config.Prefix+"_") {
			_ = os.Unsetenv(k)
		}
	}
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

// worker is one worker, in this process or a child.
type worker interface {
	// pid is the process to measure, 0 for this one.
	pid() int
	stop() error
}

// inprocWorker is the worker's code path in this process, wired as
// cmd/apns-worker wires it (run.go, engine.go) minus the HTTP endpoints and
// the feedback poller: its own NATS connection, consumer.New, the engine
// with w.HandleOutcome, Run, then Shutdown and Drain.
type inprocWorker struct {
	nc     *nats.Conn
	w      *consumer.Worker
	eng    apns.Engine
	grace  time.Duration
	cancel context.CancelFunc
	done   chan error
}

func startInprocWorker(cfg *config.Config, log *slog.Logger, resends *atomic.Int64) (*inprocWorker, error) {
	nc, err := nats.Connect(strings.Join(cfg.NATS.URLs, ","), nats.Name(cfg.NATS.Name),
		nats.MaxReconnects(-1), nats.ReconnectWait(cfg.NATS.ReconnectWait))
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	w, err := consumer.New(js, consumer.Options{
		JobsStream:    cfg.Jobs.Stream,
		JobsSubject:   cfg.Jobs.Subject,
		Durable:       cfg.Jobs.Consumer,
		EventsStream:  cfg.Events.Stream,
		EventsSubject: cfg.Events.Subject,
		EventsMaxAge:  cfg.Events.MaxAge,
		Replicas:      cfg.Replicas,
		AckWait:       cfg.Jobs.AckWait,
		MaxDeliver:    cfg.Jobs.MaxDeliver,
		Backoff:       cfg.Jobs.Backoff,
		MaxInFlight:   cfg.MaxInFlight,
		Receipts:      cfg.Events.Receipts,
		Protocol:      string(cfg.APNs.Mode),
		Logger:        log.With(slog.String("component", "consumer")),
	})
	if err != nil {
		nc.Close()
		return nil, err
	}
	// Counting resends (Attempts beyond the first) is the only thing
	// added to the worker's outcome path.
	onOutcome := func(o apns.Outcome) {
		if o.Attempts > 1 {
			resends.Add(int64(o.Attempts - 1))
		}
		w.HandleOutcome(o)
	}
	eng, err := newEngine(cfg, onOutcome, log)
	if err != nil {
		_ = w.Shutdown(context.Background(), nil)
		nc.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	iw := &inprocWorker{nc: nc, w: w, eng: eng, grace: cfg.ShutdownGrace, cancel: cancel, done: make(chan error, 1)}
	go func() { iw.done <- w.Run(ctx, eng) }()
	return iw, nil
}

func (iw *inprocWorker) pid() int { return 0 }

// stop shuts down in cmd/apns-worker's order: stop pulling, close the
// engine and finish every job, then drain NATS.
func (iw *inprocWorker) stop() error {
	iw.cancel()
	runErr := <-iw.done
	sctx, cancel := context.WithTimeout(context.Background(), iw.grace)
	defer cancel()
	shutErr := iw.w.Shutdown(sctx, iw.eng)
	return errors.Join(runErr, shutErr, drain(iw.nc))
}

func drain(nc *nats.Conn) error {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return err
	}
	select {
	case <-closed:
		return nil
	case <-time.After(30 * time.Second):
		nc.Close()
		return errors.New("nats: drain timed out")
	}
}

// newEngine builds the engine as cmd/apns-worker's newEngine does for the
// binary and http2 modes.
func newEngine(cfg *config.Config, onOutcome apns.OutcomeFunc, log *slog.Logger) (apns.Engine, error) {
	a := cfg.APNs
	opts := []apns.Option{
		apns.WithOutcomeFunc(onOutcome),
		apns.WithLogger(log.With(slog.String("component", "apns"))),
		apns.WithConns(a.Conns),
		apns.WithMaxInFlight(cfg.MaxInFlight),
	}
	if a.CAFile != "" {
		pem, err := os.ReadFile(a.CAFile)
		if err != nil {
			return nil, err
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no certificate", a.CAFile)
		}
		opts = append(opts, apns.WithRootCAs(roots))
	}
	switch a.Mode {
	case config.ModeBinary:
		cert, err := apns.LoadPEMCertificate(a.CertFile, a.KeyFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, apns.WithAssumeDelivered(a.AssumedDelivered), apns.WithMaxPayload(a.MaxPayload))
		if a.IdleTimeout > 0 {
			opts = append(opts, apns.WithIdleTimeout(a.IdleTimeout))
		}
		return apns.NewBinaryEngine(a.Addr, cert, opts...)
	case config.ModeHTTP2:
		pem, err := os.ReadFile(a.P8File)
		if err != nil {
			return nil, err
		}
		key, err := apns.ParseP8(pem)
		if err != nil {
			return nil, err
		}
		opts = append(opts, apns.WithRequestTimeout(a.RequestTimeout), apns.WithTopic(a.Topic))
		if a.IdleTimeout > 0 {
			opts = append(opts, apns.WithPingInterval(a.IdleTimeout))
		}
		return apns.NewHTTP2Engine(a.Addr, apns.TokenAuth(key, a.KeyID, a.TeamID), opts...)
	}
	return nil, fmt.Errorf("mode %q: the bench runs binary or http2", a.Mode)
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
	cmd := exec.Command(path, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, config.Prefix+"_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	cw := &childWorker{cmd: cmd, done: make(chan error, 1)}
	go func() { cw.done <- cmd.Wait() }()
	return cw, nil
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
	var resends atomic.Int64
	iw, err := startInprocWorker(cfg, log, &resends)
	if err != nil {
		return err
	}
	<-ctx.Done()
	return iw.stop()
}
