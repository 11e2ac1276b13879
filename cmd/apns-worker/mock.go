package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/jetpush/apns-worker/apns/apnstest"
	"github.com/jetpush/apns-worker/cmd/internal/worker"
)

// usageError is bad usage of a command (an unknown flag, an extra
// argument), already explained on stderr with the usage: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }

// runMockAPNs serves the in-process test servers (binary gateway, feedback
// HTTP/2 provider API) on fixed addresses and writes the
// credentials a worker needs to reach them into -dir. For the docker compose
// demo: nothing here reaches Apple.
func runMockAPNs(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mock-apns", flag.ContinueOnError)
	binaryAddr := fs.String("binary", "127.0.0.1:2195", "binary gateway listen address")
	feedbackAddr := fs.String("feedback", "127.0.0.1:2196", "feedback service listen address")
	http2Addr := fs.String("http2", "127.0.0.1:2197", "HTTP/2 provider API listen address")
	host := fs.String("host", "localhost", "extra host name for the server certificate")
	dir := fs.String("dir", "./data/mock-apns", "where to write ca.pem, client.pem, client-key.pem, AuthKey.p8 and env")
	keyID := fs.String("key-id", "", "HTTP/2 token auth key id, 10 characters A-Z 0-9 (default: random); with -team-id")
	teamID := fs.String("team-id", "", "HTTP/2 token auth team id, 10 characters A-Z 0-9 (default: random); with -key-id")
	httpAddr := fs.String("http", "", "serve GET /healthz here once the credentials are written (the image's HEALTHCHECK)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: apns-worker mock-apns [flags]

Serves mock APNs endpoints (binary gateway, feedback service, HTTP/2
provider API) for the docker compose demo and writes, into -dir, the
credentials and an env file with every APNS_WORKER_* variable a worker
needs to use them. It reads no environment variable. Nothing reaches Apple.
Tokens starting with hex bad0 are rejected (BadDeviceToken, status 8).

flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err} // the flag package printed it, with the usage
	}
	if fs.NArg() > 0 {
		err := fmt.Errorf("unexpected argument %q", fs.Arg(0))
		fmt.Fprintln(fs.Output(), err)
		fs.Usage()
		return usageError{err}
	}
	h2opts := []apnstest.HTTP2Option{apnstest.HTTP2ReasonFunc(worker.RejectMockBadTokensHTTP2)}
	if *keyID != "" || *teamID != "" {
		// Fixed ids, so a compose file can give the worker its
		// APNS_WORKER_APNS_KEY_ID and TEAM_ID; the key is still fresh.
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		h2opts = append(h2opts, apnstest.HTTP2Key(*keyID, *teamID, key))
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	pki, err := apnstest.NewPKIFor(*host)
	if err != nil {
		return err
	}
	gw, err := apnstest.ListenGateway(apnstest.GatewayPKI(pki), apnstest.GatewayAddr(*binaryAddr), apnstest.CountOnly(),
		apnstest.RejectFunc(worker.RejectMockBadTokens))
	if err != nil {
		return err
	}
	defer gw.Close()
	fb := apnstest.NewFeedbackServer(apnstest.FeedbackPKI(pki), apnstest.FeedbackAddr(*feedbackAddr))
	defer fb.Close()
	h2, err := apnstest.ListenHTTP2(append(h2opts, apnstest.HTTP2PKI(pki), apnstest.HTTP2Listen(*http2Addr))...)
	if err != nil {
		return err
	}
	defer h2.Close()
	go func() { _ = h2.Serve() }()

	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	env := mockEnv(abs, h2.URL, gw.Addr, fb.Addr, h2.KeyID, h2.TeamID)
	for name, b := range map[string][]byte{
		"ca.pem":         pki.CAPEM,
		"client.pem":     pki.ClientCertPEM,
		"client-key.pem": pki.ClientKeyPEM,
		"AuthKey.p8":     h2.P8(),
		"env":            []byte(env),
	} {
		if err := os.WriteFile(filepath.Join(*dir, name), b, 0o644); err != nil {
			return err
		}
	}
	if *httpAddr != "" {
		stop, err := serveMockHealth(*httpAddr)
		if err != nil {
			return err
		}
		defer stop()
	}
	log.Warn("MOCK APNs: test servers, nothing reaches Apple",
		slog.String("binary", gw.Addr), slog.String("feedback", fb.Addr), slog.String("http2", h2.URL),
		slog.String("credentials", *dir), slog.String("key_id", h2.KeyID), slog.String("team_id", h2.TeamID))
	<-ctx.Done()
	return nil
}

// mockEnv is the env file mock-apns writes: every variable a worker needs
// to send to the mock's HTTP/2 server (`set -a; . DIR/env; set +a`), and,
// commented out, the binary gateway's and feedback service's instead.
func mockEnv(dir, h2URL, binaryAddr, feedbackAddr, keyID, teamID string) string {
	return fmt.Sprintf(`# apns-worker settings for the mock APNs servers (nothing reaches Apple).
# Load them with: set -a; . %[1]s/env; set +a
APNS_WORKER_APNS_MODE=http2
APNS_WORKER_APNS_ADDR=%[2]s
APNS_WORKER_APNS_CA_FILE=%[1]s/ca.pem
APNS_WORKER_APNS_P8_FILE=%[1]s/AuthKey.p8
APNS_WORKER_APNS_KEY_ID=%[5]s
APNS_WORKER_APNS_TEAM_ID=%[6]s
APNS_WORKER_APNS_TOPIC=com.example.app
# Binary protocol instead (unset the four token-auth lines above):
# APNS_WORKER_APNS_MODE=binary
# APNS_WORKER_APNS_ADDR=%[3]s
# APNS_WORKER_APNS_CERT_FILE=%[1]s/client.pem
# APNS_WORKER_APNS_KEY_FILE=%[1]s/client-key.pem
# APNS_WORKER_FEEDBACK_ADDR=%[4]s
`, dir, h2URL, binaryAddr, feedbackAddr, keyID, teamID)
}

// serveMockHealth answers GET /healthz on addr, so that the container's
// HEALTHCHECK (apns-worker healthcheck) passes once the credentials exist.
func serveMockHealth(addr string) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-http: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("mock-apns health endpoint stopped", slog.Any("error", err))
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}
