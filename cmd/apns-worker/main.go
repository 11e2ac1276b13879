// Command apns-worker pulls push jobs from a NATS JetStream durable
// consumer, sends them to APNs, and acks each job once APNs' outcome is
// known. Rejections, bad device tokens and dead letters are published as
// events. Configuration comes from APNS_WORKER_* environment variables (see
// README.md).
//
// Usage:
//
//	apns-worker              run the worker
//	apns-worker healthcheck  exit 0 if the running worker's /healthz answers
//	apns-worker mock-apns    serve mock APNs endpoints (docker compose demo)
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/lmittmann/tint"

	"github.com/jetpush/apns-worker/cmd/internal/worker"
	"github.com/jetpush/apns-worker/config"
)

func main() {
	cmd := ""
	if len(os.Args) > 1 {
		cmd = os.Args[1]
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	switch cmd {
	case "":
		err = runWorker(ctx)
	case "healthcheck":
		err = healthcheck(ctx)
	case "mock-apns":
		err = runMockAPNs(ctx, os.Args[2:])
	case "-h", "-help", "--help", "help":
		fmt.Println("usage: apns-worker [healthcheck | mock-apns [flags]]; settings: APNS_WORKER_* (see README.md)")
		return
	default:
		err = fmt.Errorf("unknown command %q (want none, healthcheck or mock-apns)", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "apns-worker:", err)
		os.Exit(1)
	}
}

func runWorker(ctx context.Context) error {
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
		os.Exit(2)
	}
	log := newLogger(cfg.Log)
	slog.SetDefault(log)
	log.Info("starting", slog.Any("config", cfg))
	if err := worker.Run(ctx, cfg, log); err != nil {
		log.Error("stopped with an error", slog.Any("error", err))
		return errors.New("stopped with an error")
	}
	log.Info("stopped")
	return nil
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
