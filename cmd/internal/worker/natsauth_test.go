package worker

import (
	"context"
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns/apnstest"
	"github.com/jetpush/apns-worker/config"
)

// pkiFiles writes p's CA, client certificate and key to files.
func pkiFiles(t *testing.T, p *apnstest.PKI) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	ca, cert, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	require.NoError(t, os.WriteFile(ca, p.CAPEM, 0o600))
	require.NoError(t, os.WriteFile(cert, p.ClientCertPEM, 0o600))
	require.NoError(t, os.WriteFile(key, p.ClientKeyPEM, 0o600))
	return ca, cert, key
}

// startTLSNATS starts a nats-server on loopback that requires a client
// certificate of pki's CA (tls verify), speaking at most TLS version max.
func startTLSNATS(t *testing.T, pki *apnstest.PKI, maxVersion uint16) *server.Server {
	t.Helper()
	o := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true}
	o.TLSConfig = pki.ServerTLS(true)
	o.TLSConfig.MaxVersion = maxVersion
	o.TLS, o.TLSVerify, o.TLSTimeout = true, true, 2
	s, err := server.NewServer(o)
	require.NoError(t, err)
	go s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	require.True(t, s.ReadyForConnections(10*time.Second))
	return s
}

func remoteConfig(n config.NATS) *config.Config {
	n.ConnectTimeout, n.ReconnectWait, n.Name = 30*time.Second, time.Second, "apns-worker-test"
	return &config.Config{NATS: n, SocketCalls: config.SocketCallsRuntime}
}

// TestConnectClientCertRefused: a NATS server that requires a client
// certificate refuses a worker without one, or with one of another CA,
// with a TLS alert; with TLS 1.3 the alert only comes after the client's
// handshake, and nats.go, which writes CONNECT first, sees it or only a
// closed connection, by timing. Either way it is a dead end at once,
// naming APNS_WORKER_NATS_TLS_CERT, not an unreachable server retried for
// NATS_CONNECT_TIMEOUT. The server's own certificate is verified as ever.
func TestConnectClientCertRefused(t *testing.T) {
	pki := apnstest.MustPKI()
	ca, cert, key := pkiFiles(t, pki)
	_, otherCert, otherKey := pkiFiles(t, apnstest.MustPKI())
	log := slog.New(slog.DiscardHandler)

	for _, v := range []struct {
		name string
		max  uint16
	}{{"TLS 1.2", tls.VersionTLS12}, {"TLS 1.3", tls.VersionTLS13}} {
		s := startTLSNATS(t, pki, v.max)
		url := s.ClientURL()
		for _, tt := range []struct {
			name      string
			n         config.NATS
			wantValue string
			msg       string
		}{
			{"no client certificate", config.NATS{TLSCAFile: ca}, "", "requires a TLS client certificate"},
			{"client certificate of another CA", config.NATS{TLSCAFile: ca, TLSCertFile: otherCert, TLSKeyFile: otherKey}, otherCert, "refused the TLS client certificate"},
		} {
			t.Run(v.name+"/"+tt.name, func(t *testing.T) {
				tt.n.URLs = []string{url}
				// Repeated: which of the two answers nats.go gets is timing.
				for range 10 {
					start := time.Now()
					nc, closeNATS, err := connectNATS(context.Background(), remoteConfig(tt.n), log, nil)
					if err == nil {
						_ = closeNATS(time.Second)
						nc.Close()
					}
					var dead *DeadEnd
					require.ErrorAs(t, err, &dead)
					require.Equal(t, "APNS_WORKER_NATS_TLS_CERT", dead.Var, "%v", err)
					require.Equal(t, tt.wantValue, dead.Value)
					require.Contains(t, err.Error(), tt.msg)
					require.Contains(t, err.Error(), "remote error: tls: ")
					require.Less(t, time.Since(start), 5*time.Second)
				}
			})
		}
		t.Run(v.name+"/client certificate of its CA", func(t *testing.T) {
			nc, closeNATS, err := connectNATS(context.Background(),
				remoteConfig(config.NATS{URLs: []string{url}, TLSCAFile: ca, TLSCertFile: cert, TLSKeyFile: key}), log, nil)
			require.NoError(t, err)
			require.True(t, nc.IsConnected())
			require.NoError(t, closeNATS(5*time.Second))
		})
	}
	t.Run("server certificate not trusted", func(t *testing.T) {
		s := startTLSNATS(t, pki, tls.VersionTLS13)
		otherCA, _, _ := pkiFiles(t, apnstest.MustPKI())
		_, _, err := connectNATS(context.Background(),
			remoteConfig(config.NATS{URLs: []string{s.ClientURL()}, TLSCAFile: otherCA, TLSCertFile: cert, TLSKeyFile: key}), log, nil)
		var dead *DeadEnd
		require.ErrorAs(t, err, &dead)
		require.Equal(t, "APNS_WORKER_NATS_TLS_CA", dead.Var, "%v", err)
	})
}

// TestConnectBadKeyFiles: a credentials, NKey or TLS file nats.go cannot
// load (config.Load refuses them; here the configuration is built by hand,
// as by a file changed since) is a dead end naming its variable, not an
// unreachable server.
func TestConnectBadKeyFiles(t *testing.T) {
	nc0, _ := plainNATS(t)
	url := nc0.ConnectedUrl()
	junk := filepath.Join(t.TempDir(), "junk")
	require.NoError(t, os.WriteFile(junk, []byte("not a seed, not a key\n"), 0o600))
	_, certA, _ := pkiFiles(t, apnstest.MustPKI())
	_, _, keyB := pkiFiles(t, apnstest.MustPKI())

	for _, tt := range []struct {
		name, v string
		n       config.NATS
	}{
		{"nkey without a seed", "APNS_WORKER_NATS_NKEY", config.NATS{NKeyFile: junk}},
		{"creds without a seed", "APNS_WORKER_NATS_CREDS", config.NATS{CredsFile: junk}},
		{"tls key of another certificate", "APNS_WORKER_NATS_TLS_CERT", config.NATS{TLSCertFile: certA, TLSKeyFile: keyB}},
		{"tls ca not a certificate", "APNS_WORKER_NATS_TLS_CA", config.NATS{TLSCAFile: junk}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.n.URLs = []string{url}
			start := time.Now()
			_, _, err := connectNATS(context.Background(), remoteConfig(tt.n), slog.New(slog.DiscardHandler), nil)
			var dead *DeadEnd
			require.ErrorAs(t, err, &dead)
			require.Equal(t, tt.v, dead.Var, "%v", err)
			require.Less(t, time.Since(start), 5*time.Second)
		})
	}
}

// TestProbeClientCert: the probe connectRetry makes when nats.go saw the
// connection closed after the TLS handshake reads the server's refusal
// (it never writes, so the alert cannot be lost to a closed connection);
// a server that accepts the certificate, or does not speak TLS, is no
// refusal.
func TestProbeClientCert(t *testing.T) {
	pki := apnstest.MustPKI()
	ca, cert, key := pkiFiles(t, pki)
	_, otherCert, otherKey := pkiFiles(t, apnstest.MustPKI())
	s := startTLSNATS(t, pki, tls.VersionTLS13)
	nc0, _ := plainNATS(t)

	for _, tt := range []struct {
		name  string
		n     config.NATS
		url   string
		alert string // "" no refusal
	}{
		{"no client certificate", config.NATS{TLSCAFile: ca}, s.ClientURL(), "tls: certificate required"},
		{"client certificate of another CA", config.NATS{TLSCAFile: ca, TLSCertFile: otherCert, TLSKeyFile: otherKey}, s.ClientURL(), "tls: unknown certificate authority"},
		{"client certificate of its CA", config.NATS{TLSCAFile: ca, TLSCertFile: cert, TLSKeyFile: key}, s.ClientURL(), ""},
		{"no TLS", config.NATS{TLSCAFile: ca}, nc0.ConnectedUrl(), ""},
		{"websocket not probed", config.NATS{TLSCAFile: ca}, "wss://" + s.Addr().String(), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			at, err := probeClientCert(tt.n, []string{"nats://127.0.0.1:1", tt.url}, 500*time.Millisecond)
			if tt.alert == "" {
				require.NoError(t, err)
				return
			}
			require.Equal(t, tt.url, at)
			alert, ok := certAlert(err)
			require.True(t, ok, "%v", err)
			require.Equal(t, tt.alert, alert)
		})
	}
}
