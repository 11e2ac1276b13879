package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/jetpush/apns-worker/apns"
)

// readiness is what /readyz reports: the start-up phase until set gives
// it the NATS connection and the engine, their state after.
type readiness struct {
	phase atomic.Pointer[string]
	live  atomic.Pointer[liveParts]
}

type liveParts struct {
	nc  *nats.Conn
	eng apns.Engine
}

func (r *readiness) setPhase(p string)                  { r.phase.Store(&p) }
func (r *readiness) set(nc *nats.Conn, eng apns.Engine) { r.live.Store(&liveParts{nc, eng}) }

// problems lists why the worker is not ready; none means ready.
func (r *readiness) problems() (problems []string, ok string) {
	l := r.live.Load()
	if l == nil {
		phase := "starting"
		if p := r.phase.Load(); p != nil {
			phase = "starting: " + *p
		}
		return []string{phase}, ""
	}
	st := l.eng.Stats()
	if !l.nc.IsConnected() {
		problems = append(problems, "nats: "+l.nc.Status().String())
	}
	if st.Connected == 0 && st.InFlight > 0 { // engines dial lazily and drop idle connections
		problems = append(problems, fmt.Sprintf("apns: no connection up, %d in flight", st.InFlight))
	}
	if st.CredentialsErr != nil {
		problems = append(problems, st.CredentialsErr.Error())
	}
	if since := st.FaultingSince; !since.IsZero() && time.Since(since) > faultsPersist {
		problems = append(problems, fmt.Sprintf("apns: answers are not APNs verdicts since %s (a proxy, a portal or a wrong APNS_WORKER_APNS_ADDR?); faults by status %v",
			since.UTC().Format(time.RFC3339), st.Faults))
	}
	return problems, fmt.Sprintf("ok: apns %d/%d connections, %d in flight", st.Connected, st.Conns, st.InFlight)
}

// faultsPersist is how long the answers may fail to be APNs' verdicts
// (apns.ErrNotAPNs: HTML 404s, proxies' 502s) before /readyz fails.
const faultsPersist = 30 * time.Second

// serveHTTP serves /healthz (the process is up), /readyz (started, NATS
// connected, credentials not refused, an APNs connection up while work is
// in flight, APNs' answers its verdicts) and /metrics on addr; an empty addr serves nothing.
func serveHTTP(addr string, reg *prometheus.Registry, ready func() ([]string, string), log *slog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		problems, ok := ready()
		if len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			for _, p := range problems {
				fmt.Fprintln(w, p)
			}
			return
		}
		fmt.Fprintln(w, ok)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, deadEnd("APNS_WORKER_HTTP_ADDR", addr, err)
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
