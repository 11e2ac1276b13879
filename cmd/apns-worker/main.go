// Command apns-worker pulls push jobs from a NATS JetStream durable
// consumer, sends them to APNs, and acks each job once APNs' outcome is
// known. Rejections, bad device tokens and dead letters are published as
// events. Configuration comes from APNS_WORKER_* environment variables
// (apns-worker -h lists them; see README.md).
//
// Usage:
//
//	apns-worker              run the worker
//	apns-worker healthcheck  exit 0 if the running worker's /healthz answers
//	apns-worker mock-apns    serve mock APNs endpoints (docker compose demo)
//
// Exit codes: 0 after a clean stop (SIGTERM or SIGINT, also during
// start-up), 1 when the worker stopped with an error, 2 for bad usage, a
// bad variable or a start-up dead end (the message names the variable).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/lmittmann/tint"

	"github.com/jetpush/apns-worker/cmd/internal/gcfloor"
	"github.com/jetpush/apns-worker/cmd/internal/procs"
	"github.com/jetpush/apns-worker/cmd/internal/worker"
	"github.com/jetpush/apns-worker/config"
)

func main() {
	args := os.Args[1:]
	cmd := ""
	if len(args) > 0 {
		cmd = args[0]
	}
	// SIGHUP too (a closed terminal, some supervisors): the worker has no
	// configuration to reload, and Go's default would kill it unclean.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	var err error
	switch cmd {
	case "":
		code := runWorker(ctx)
		stop()
		os.Exit(code)
	case "-h", "-help", "--help", "help":
		usage(os.Stdout)
		return
	case "healthcheck":
		if len(args) > 1 {
			if isHelp(args[1]) {
				fmt.Print(healthcheckUsage)
				return
			}
			fmt.Fprintf(os.Stderr, "apns-worker healthcheck: no arguments expected\n%s", healthcheckUsage)
			os.Exit(2)
		}
		err = healthcheck(ctx)
	case "mock-apns":
		err = runMockAPNs(ctx, args[1:])
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		if errors.As(err, new(usageError)) {
			os.Exit(2)
		}
	default:
		fmt.Fprintf(os.Stderr, "apns-worker: unknown command %q\n\n", cmd)
		usage(os.Stderr)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "apns-worker:", err)
		os.Exit(1)
	}
}

func isHelp(a string) bool {
	switch a {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}

const healthcheckUsage = `usage: apns-worker healthcheck

Exits 0 if the worker's GET /healthz answers 200 within 3s, 1 otherwise
(the container's HEALTHCHECK). It reads one variable:

  APNS_WORKER_HTTP_ADDR  default 127.0.0.1:8080  where the worker serves
                         /healthz (a 0.0.0.0 or :: host asks 127.0.0.1)
`

// usage is -h: the commands and every variable with its default and
// meaning.
func usage(w io.Writer) {
	fmt.Fprint(w, `usage: apns-worker [command]

With no command, runs the worker: pulls jobs from NATS JetStream, sends them
to APNs, acks each once APNs answered. Commands:

  healthcheck   exit 0 if the running worker's /healthz answers (-h: more)
  mock-apns     serve mock APNs endpoints for the demo (-h: its flags)

Exit codes: 0 clean stop (SIGTERM, SIGINT), 1 stopped with an error,
2 bad usage, a bad variable or a start-up dead end (the message names it).

Settings (environment; unknown APNS_WORKER_* names are warned about):
`)
	if err := config.Usage(w); err != nil {
		fmt.Fprintln(w, "  (cannot list the variables:", err, ")")
	}
	fmt.Fprintln(w, "\nREADME.md explains each setting and how they combine.")
}

// runWorker runs the worker and returns the exit code.
func runWorker(ctx context.Context) int {
	cfg, err := config.Load()
	if err != nil {
		var b []byte
		for _, e := range config.Errors(err) {
			b = fmt.Appendf(b, "  %v\n", e)
		}
		if len(b) == 0 {
			b = fmt.Appendf(b, "  %v\n", err)
		}
		fmt.Fprintf(os.Stderr, "apns-worker: bad configuration:\n%s", b)
		return 2
	}
	log := newLogger(cfg.Log)
	slog.SetDefault(log)
	log.Info("starting", slog.Int("pid", os.Getpid()))
	for _, u := range config.UnknownVars(os.Environ()) {
		log.Warn("unknown variable ignored", slog.String("var", u.Name), slog.String("did_you_mean", u.Nearest))
	}
	// One record per section: readable in text and in JSON.
	var rest []any
	for _, a := range cfg.LogValue().Group() {
		if a.Value.Kind() == slog.KindGroup {
			log.Info("config", a)
		} else {
			rest = append(rest, a)
		}
	}
	log.Info("config", rest...)
	procs.Govern(ctx, cfg.Procs == config.ProcsAuto, log)
	defer gcfloor.Keep(uint64(cfg.GCFloorMiB)<<20, log)()
	err = worker.Run(ctx, cfg, log)
	var dead *worker.DeadEnd
	switch {
	case err == nil:
		return 0
	case errors.As(err, &dead):
		log.Error("cannot start", slog.String("var", dead.Var), slog.String("value", dead.Value), slog.Any("error", dead.Err))
		return 2
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		log.Info("stopped during start-up", slog.Any("reason", err))
		return 0
	}
	log.Error("stopped with an error", slog.Any("error", err))
	return 1
}

// newLogger picks the handler: JSON, or tint text (colored on a terminal);
// auto means tint on a terminal and JSON otherwise.
func newLogger(c config.Log) *slog.Logger {
	fi, err := os.Stderr.Stat()
	tty := err == nil && fi.Mode()&os.ModeCharDevice != 0
	if c.Format == config.LogJSON || c.Format == config.LogAuto && !tty {
		return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: c.Level}))
	}
	return slog.New(tint.NewTextHandler(os.Stderr, &tint.Options{Level: c.Level, NoColor: !tty}))
}
