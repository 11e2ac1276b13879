package worker

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/config"
)

// TestProbeAPNs: the start-up probe speaks TLS as the engine will, so that
// an address that answers TCP but not APNs' way is named at start-up: a
// certificate the worker does not trust (APNS_WORKER_APNS_CA_FILE), a
// server without HTTP/2, nothing listening (APNS_WORKER_APNS_ADDR). Only an
// HTTP/2 server with a trusted certificate is "apns reachable".
func TestProbeAPNs(t *testing.T) {
	h2 := httptest.NewUnstartedServer(http.NotFoundHandler())
	h2.EnableHTTP2 = true
	h2.StartTLS()
	t.Cleanup(h2.Close)
	h1 := httptest.NewTLSServer(http.NotFoundHandler()) // ALPN http/1.1 only
	t.Cleanup(h1.Close)
	roots := x509.NewCertPool()
	roots.AddCert(h2.Certificate())
	h1roots := x509.NewCertPool()
	h1roots.AddCert(h1.Certificate())

	// A TLS server that negotiates no application protocol at all.
	cfg := h2.TLS.Clone()
	cfg.NextProtos = nil
	noALPN, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	t.Cleanup(func() { noALPN.Close() })
	go func() {
		for {
			c, err := noALPN.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedAddr := closed.Addr().String()
	closed.Close()

	for _, tt := range []struct {
		name, addr string
		roots      *x509.CertPool
		msg, v     string
	}{
		{"http2", h2.URL, roots, "apns reachable", "APNS_WORKER_APNS_ADDR"},
		{"untrusted", h2.URL, x509.NewCertPool(), "apns not reachable yet; the engine keeps trying", "APNS_WORKER_APNS_CA_FILE"},
		{"http1 only", h1.URL, h1roots, "apns not reachable yet; the engine keeps trying", "APNS_WORKER_APNS_ADDR"},
		{"no ALPN", "https://" + noALPN.Addr().String(), roots, "apns answers TLS but not HTTP/2 (ALPN h2); the engine keeps trying", "APNS_WORKER_APNS_ADDR"},
		{"nothing listening", "https://" + closedAddr, roots, "apns not reachable yet; the engine keeps trying", "APNS_WORKER_APNS_ADDR"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&out, nil))
			a := config.APNs{Mode: config.ModeHTTP2, Addr: tt.addr, CAFile: "/etc/apns/ca.pem"}
			probeAPNs(context.Background(), a, engineCreds{roots: tt.roots}, log)
			var line struct{ Msg, Level, Var, Value string }
			require.NoError(t, json.Unmarshal(out.Bytes(), &line), out.String())
			require.Equal(t, tt.msg, line.Msg, out.String())
			require.Equal(t, tt.v, line.Var)
			if tt.msg != "apns reachable" {
				require.Equal(t, "WARN", line.Level)
			}
		})
	}
}
