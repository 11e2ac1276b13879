package worker

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"

	"github.com/jetpush/apns-worker/apns/apnstest"
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
	noALPN := tlsServer(t, cfg, func(net.Conn) {})
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
		{"no ALPN", "https://" + noALPN, roots, "apns answers TLS but not HTTP/2 (ALPN h2); the engine keeps trying", "APNS_WORKER_APNS_ADDR"},
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

// TestProbeAPNsClientCertificate: a client certificate the server refuses
// is named at start-up (APNS_WORKER_APNS_CERT_FILE), in TLS 1.2, where the
// handshake fails, and in TLS 1.3, where the refusal is the first thing
// read after the client's side of the handshake; in http2 and binary mode.
// A server that takes the certificate but does not answer with HTTP/2
// SETTINGS is named too (APNS_WORKER_APNS_ADDR).
func TestProbeAPNsClientCertificate(t *testing.T) {
	pki, other := apnstest.MustPKI(), apnstest.MustPKI()
	serve := func(t *testing.T, maxVersion uint16, alpn []string, answer func(net.Conn)) string {
		cfg := pki.ServerTLS(true)
		cfg.MaxVersion, cfg.NextProtos = maxVersion, alpn
		return tlsServer(t, cfg, answer)
	}
	settings := func(c net.Conn) { // an HTTP/2 server's first frame
		fr := http2.NewFramer(c, c)
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100})
		_, _ = io.Copy(io.Discard, c)
	}
	silent := func(c net.Conn) { _, _ = io.Copy(io.Discard, c) }
	http1 := func(c net.Conn) { _, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n") }

	const refused, reachable = "apns refused the TLS client certificate; the engine keeps trying", "apns reachable"
	for _, tt := range []struct {
		name       string
		mode       config.Mode
		maxVersion uint16
		cert       tls.Certificate
		answer     func(net.Conn)
		msg, v     string
	}{
		{"http2 TLS 1.3 refused", config.ModeHTTP2, 0, other.ClientCert, settings, refused, "APNS_WORKER_APNS_CERT_FILE"},
		{"http2 TLS 1.2 refused", config.ModeHTTP2, tls.VersionTLS12, other.ClientCert, settings, refused, "APNS_WORKER_APNS_CERT_FILE"},
		{"http2 taken", config.ModeHTTP2, 0, pki.ClientCert, settings, reachable, "APNS_WORKER_APNS_ADDR"},
		{"http2 taken, no SETTINGS", config.ModeHTTP2, 0, pki.ClientCert, http1, "apns answers TLS but not HTTP/2 (no SETTINGS); the engine keeps trying", "APNS_WORKER_APNS_ADDR"},
		{"binary TLS 1.3 refused", config.ModeBinary, 0, other.ClientCert, silent, refused, "APNS_WORKER_APNS_CERT_FILE"},
		{"binary taken", config.ModeBinary, 0, pki.ClientCert, silent, reachable, "APNS_WORKER_APNS_ADDR"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var alpn []string
			if tt.mode == config.ModeHTTP2 {
				alpn = []string{"h2"}
			}
			addr := serve(t, tt.maxVersion, alpn, tt.answer)
			if tt.mode == config.ModeHTTP2 {
				addr = "https://" + addr
			}
			var out bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&out, nil))
			a := config.APNs{Mode: tt.mode, Addr: addr, CertFile: "/run/secrets/apns.p12"}
			probeAPNs(context.Background(), a, engineCreds{roots: pki.RootCAs, cert: tt.cert}, log)
			var line struct{ Msg, Level, Var, Value string }
			require.NoError(t, json.Unmarshal(out.Bytes(), &line), out.String())
			require.Equal(t, tt.msg, line.Msg, out.String())
			require.Equal(t, tt.v, line.Var, out.String())
			if tt.msg != reachable {
				require.Equal(t, "WARN", line.Level)
			}
		})
	}
}

// tlsServer serves TLS with cfg on a loopback port until the test ends:
// answer runs on each connection whose handshake succeeds, which is then
// closed. It returns the address.
func tlsServer(t *testing.T, cfg *tls.Config, answer func(net.Conn)) string {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if c.(*tls.Conn).Handshake() == nil {
					answer(c)
				}
			}()
		}
	}()
	return ln.Addr().String()
}
