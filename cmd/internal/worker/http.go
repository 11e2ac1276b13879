package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/jetpush/apns-worker/apns"
)

// serveHTTP serves /healthz (the process is up), /readyz (NATS connected,
// credentials not refused, an APNs connection up while work is in flight) and /metrics on addr;
// an empty addr serves nothing.
func serveHTTP(addr string, reg *prometheus.Registry, nc *nats.Conn, eng apns.Engine, log *slog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		st := eng.Stats()
		var problems []string
		if !nc.IsConnected() {
			problems = append(problems, "nats: "+nc.Status().String())
		}
		if st.Connected == 0 && st.InFlight > 0 { // engines dial lazily and drop idle connections
			problems = append(problems, fmt.Sprintf("apns: no connection up, %d in flight", st.InFlight))
		}
		if st.CredentialsErr != nil {
			problems = append(problems, st.CredentialsErr.Error())
		}
		if len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			for _, p := range problems {
				fmt.Fprintln(w, p)
			}
			return
		}
		fmt.Fprintf(w, "ok: apns %d/%d connections, %d in flight\n", st.Connected, st.Conns, st.InFlight)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("APNS_WORKER_HTTP_ADDR: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", slog.Any("error", err))
		}
	}()
	log.Info("serving /healthz, /readyz and /metrics", slog.String("addr", ln.Addr().String()))
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
