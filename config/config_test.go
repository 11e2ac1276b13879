package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/stretchr/testify/require"
	"software.sslmate.com/src/go-pkcs12"
)

// Tests set the process environment (envconfig reads nothing else), so
// none of them is parallel.

// setEnv clears every APNS_WORKER_ variable for the test, then sets env,
// whose keys omit the prefix.
func setEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, Prefix+"_") {
			t.Setenv(k, "") // restored after the test
			require.NoError(t, os.Unsetenv(k))
		}
	}
	for k, v := range env {
		t.Setenv(Prefix+"_"+k, v)
	}
}

// merge returns a copy of base with over applied.
func merge(base, over map[string]string) map[string]string {
	m := map[string]string{}
	for k, v := range base {
		m[k] = v
	}
	for k, v := range over {
		m[k] = v
	}
	return m
}

const (
	p12Password  = "p12-Secret-Pw-3f9a"
	natsPassword = "nats-Secret-Pw-71c2"
	natsToken    = "nats-Secret-Token-9d0e"
	urlPassword  = "url-Secret-Pw-5b8e"
)

// files are credentials generated for a test.
type files struct {
	dir       string
	caPEM     string // CA certificate
	certPEM   string // client certificate only
	keyPEM    string // its key, PKCS#8
	combined  string // certificate and key
	p12       string // certificate and key, password p12Password
	expired   string // expired certificate and key, PEM
	p8        string // EC P-256 PKCS#8: Apple's token-auth key
	p8Ed25519 string // PKCS#8, but not EC
	garbage   string // not PEM, not PKCS#12
	missing   string // does not exist
	creds     string // NATS credentials: a user JWT and its NKey seed
	nkey      string // an NKey user seed
}

func newFiles(t *testing.T) files {
	t.Helper()
	dir := t.TempDir()
	f := files{dir: dir}
	write := func(name string, b ...[]byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, bytes.Join(b, nil), 0o600))
		return p
	}
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	newKey := func() (*ecdsa.PrivateKey, []byte) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		der, err := x509.MarshalPKCS8PrivateKey(k)
		require.NoError(t, err)
		return k, der
	}
	newCert := func(k *ecdsa.PrivateKey, cn string, notAfter time.Time) (*x509.Certificate, []byte) {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    notAfter.Add(-48 * time.Hour),
			NotAfter:     notAfter,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		require.NoError(t, err)
		c, err := x509.ParseCertificate(der)
		require.NoError(t, err)
		return c, der
	}

	caKey, _ := newKey()
	_, caDER := newCert(caKey, "test CA", time.Now().Add(24*time.Hour))
	f.caPEM = write("ca.pem", pemOf("CERTIFICATE", caDER))

	key, keyDER := newKey()
	cert, certDER := newCert(key, "Apple Push Services: com.example.app", time.Now().Add(24*time.Hour))
	f.certPEM = write("cert.pem", pemOf("CERTIFICATE", certDER))
	f.keyPEM = write("key.pem", pemOf("PRIVATE KEY", keyDER))
	f.combined = write("combined.pem", pemOf("CERTIFICATE", certDER), pemOf("PRIVATE KEY", keyDER))
	p12, err := pkcs12.Modern.Encode(key, cert, nil, p12Password)
	require.NoError(t, err)
	f.p12 = write("cert.p12", p12)

	oldKey, oldKeyDER := newKey()
	_, oldDER := newCert(oldKey, "old", time.Now().Add(-24*time.Hour))
	f.expired = write("expired.pem", pemOf("CERTIFICATE", oldDER), pemOf("PRIVATE KEY", oldKeyDER))

	_, p8DER := newKey()
	f.p8 = write("AuthKey_ABCDE12345.p8", pemOf("PRIVATE KEY", p8DER))
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	edDER, err := x509.MarshalPKCS8PrivateKey(edKey)
	require.NoError(t, err)
	f.p8Ed25519 = write("ed25519.p8", pemOf("PRIVATE KEY", edDER))

	f.garbage = write("garbage.bin", []byte("not a certificate\x00\x01"))
	f.creds = write("worker.creds", []byte(testCreds))
	f.nkey = write("worker.nk", []byte(testUserSeed+"\n"))
	f.missing = filepath.Join(dir, "missing.pem")
	return f
}

// tokenAuth is a valid http2 token-auth environment.
func tokenAuth(f files) map[string]string {
	return map[string]string{
		"APNS_MODE":    "http2",
		"APNS_P8_FILE": f.p8,
		"APNS_KEY_ID":  "ABCDE12345",
		"APNS_TEAM_ID": "TEAM123456",
		"APNS_TOPIC":   "com.example.app",
	}
}

// binaryP12 is a valid binary environment with a .p12 certificate.
func binaryP12(f files) map[string]string {
	return map[string]string{
		"APNS_MODE":          "binary",
		"APNS_CERT_FILE":     f.p12,
		"APNS_CERT_PASSWORD": p12Password,
	}
}

// remoteNATS is a valid environment for a NATS server with TLS.
func remoteNATS(f files) map[string]string {
	return map[string]string{
		"NATS_URL":      "tls://nats-1.example.com:4222",
		"NATS_TLS_CA":   f.caPEM,
		"NATS_TLS_CERT": f.certPEM,
		"NATS_TLS_KEY":  f.keyPEM,
	}
}

// TestNamesMatchEnvconfig checks that the names decode puts in errors are
// exactly the names envconfig reads.
func TestNamesMatchEnvconfig(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, envconfig.Usagef(Prefix, &spec{}, &buf, "{{range .}}{{usage_key .}}\n{{end}}"))
	read := strings.Fields(buf.String())

	d := newDecoder()
	d.decode(&spec{})
	var decoded []string
	for v := range d.seen {
		decoded = append(decoded, fullName(v))
	}
	slices.Sort(read)
	slices.Sort(decoded)
	require.Equal(t, read, decoded)
	require.Len(t, read, 53)
}

func TestDefaults(t *testing.T) {
	setEnv(t, nil)
	c, err := Load()
	require.NoError(t, err)
	want := &Config{
		NATS: NATS{ConnectTimeout: 30 * time.Second, ReconnectWait: 2 * time.Second, Name: "apns-worker"},
		Embedded: Embedded{
			DataDir: "./data/nats",
			Listen:  "127.0.0.1:4222",
		},
		Jobs: Jobs{
			Stream:     "APNS_JOBS",
			Subject:    "apns.jobs",
			Consumer:   "apns-worker",
			AckWait:    10 * time.Second,
			MaxDeliver: 10,
			Backoff:    []time.Duration{time.Second, 5 * time.Second, 30 * time.Second, 2 * time.Minute, 5 * time.Minute},
		},
		Events: Events{
			Stream:  "APNS_EVENTS",
			MaxAge:  168 * time.Hour,
			Subject: "apns.events",
		},
		APNs: APNs{
			Mode:             ModeMock,
			Environment:      Production,
			Engine:           EngineH2,
			Conns:            4,
			AssumedDelivered: 5 * time.Second,
			ConfirmAfter:     50 * time.Millisecond, // mock mode's default
			IdleTimeout:      5 * time.Minute,
			MaxPayload:       2048,
			RequestTimeout:   10 * time.Second,
		},
		Feedback:      Feedback{Interval: time.Hour},
		Replicas:      1,
		MaxInFlight:   200_000,
		HTTPAddr:      "127.0.0.1:8080",
		Log:           Log{Level: slog.LevelInfo, Format: LogAuto},
		ShutdownGrace: 30 * time.Second,
		Procs:         ProcsAuto,
		SocketCalls:   SocketCallsDirect,
		GCFloorMiB:    32,
	}
	require.Equal(t, want, c)
	require.Equal(t, []string{"apns.jobs", "apns.jobs.>"}, c.Jobs.Subjects())
	require.Equal(t, []string{"apns.events.>"}, c.Events.Subjects())
}

// TestEmptyDisables checks that set-but-empty values are not replaced by
// defaults where empty means "off".
func TestEmptyDisables(t *testing.T) {
	setEnv(t, map[string]string{"HTTP_ADDR": "", "FEEDBACK_INTERVAL": "0", "APNS_IDLE_TIMEOUT": "0s", "EVENTS_MAX_AGE": "0",
		"APNS_MODE": "", "APNS_ENVIRONMENT": "", "LOG_LEVEL": "", "LOG_FORMAT": ""}) // empty enums take their defaults
	c, err := Load()
	require.NoError(t, err)
	require.Equal(t, ModeMock, c.APNs.Mode)
	require.Equal(t, Production, c.APNs.Environment)
	require.Equal(t, slog.LevelInfo, c.Log.Level)
	require.Equal(t, LogAuto, c.Log.Format)
	require.Empty(t, c.HTTPAddr)
	require.Zero(t, c.Feedback.Interval)
	require.Zero(t, c.APNs.IdleTimeout)
	require.Zero(t, c.Events.MaxAge)
}

// TestUnprefixedIgnored guards against envconfig's alternate names: only
// APNS_WORKER_ variables count.
func TestUnprefixedIgnored(t *testing.T) {
	setEnv(t, nil)
	for _, k := range []string{"NATS_URL", "URL", "MODE", "APNS_MODE", "LOG_LEVEL", "LEVEL", "REPLICAS", "ACK_WAIT", "JOBS_ACK_WAIT"} {
		t.Setenv(k, "bad value")
	}
	c, err := Load()
	require.NoError(t, err)
	require.Empty(t, c.NATS.URLs)
	require.Equal(t, ModeMock, c.APNs.Mode)
}

func TestValidHTTP2TokenAuth(t *testing.T) {
	f := newFiles(t)
	setEnv(t, merge(merge(tokenAuth(f), remoteNATS(f)), map[string]string{
		"NATS_URL":             "nats://a.example.com:4222, tls://b.example.com:4222,wss://c.example.com",
		"NATS_USER":            "worker",
		"NATS_PASSWORD":        natsPassword,
		"APNS_MODE":            "HTTP2", // case-insensitive
		"APNS_ENVIRONMENT":     "sandbox",
		"APNS_CONNS":           "8",
		"JOBS_ACK_WAIT":        "45s",
		"JOBS_BACKOFF":         "2s, 10s",
		"EVENTS_RECEIPTS":      "true",
		"REPLICAS":             "3",
		"LOG_LEVEL":            "debug",
		"LOG_FORMAT":           "json",
		"APNS_REQUEST_TIMEOUT": "5s",
	}))
	c, err := Load()
	require.NoError(t, err)
	require.Equal(t, []string{"nats://a.example.com:4222", "tls://b.example.com:4222", "wss://c.example.com"}, c.NATS.URLs)
	require.Equal(t, "worker", c.NATS.User)
	require.Equal(t, natsPassword, c.NATS.Password.Reveal())
	require.Equal(t, f.caPEM, c.NATS.TLSCAFile)
	require.Equal(t, APNs{
		Mode:             ModeHTTP2,
		Environment:      Sandbox,
		Engine:           EngineH2,
		Addr:             "https://api.sandbox.push.apple.com",
		P8File:           f.p8,
		KeyID:            "ABCDE12345",
		TeamID:           "TEAM123456",
		Topic:            "com.example.app",
		Conns:            8,
		AssumedDelivered: 5 * time.Second,
		IdleTimeout:      5 * time.Minute,
		MaxPayload:       4096,
		RequestTimeout:   5 * time.Second,
	}, c.APNs)
	require.True(t, c.APNs.TokenAuth())
	require.Empty(t, c.Feedback.Addr, "no feedback service with HTTP/2")
	require.Equal(t, 10_000, c.MaxInFlight)
	require.Equal(t, 45*time.Second, c.Jobs.AckWait)
	require.Equal(t, []time.Duration{2 * time.Second, 10 * time.Second}, c.Jobs.Backoff)
	require.True(t, c.Events.Receipts)
	require.Equal(t, 3, c.Replicas)
	require.Equal(t, slog.LevelDebug, c.Log.Level)
	require.Equal(t, LogJSON, c.Log.Format)
}

func TestValidHTTP2CertAuth(t *testing.T) {
	f := newFiles(t)
	setEnv(t, map[string]string{
		"APNS_MODE":      "http2",
		"APNS_CERT_FILE": f.combined,
		"APNS_ADDR":      "https://127.0.0.1:8443",
	})
	c, err := Load()
	require.NoError(t, err)
	require.False(t, c.APNs.TokenAuth())
	require.Equal(t, "https://127.0.0.1:8443", c.APNs.Addr)
	require.Empty(t, c.APNs.Topic, "certificate auth takes the topic from the certificate")
}

func TestValidBinaryCert(t *testing.T) {
	f := newFiles(t)
	tests := []struct {
		name string
		env  map[string]string
	}{
		{"p12", binaryP12(f)},
		{"pem cert and key file", map[string]string{"APNS_MODE": "binary", "APNS_CERT_FILE": f.certPEM, "APNS_KEY_FILE": f.keyPEM}},
		{"pem with key", map[string]string{"APNS_MODE": "binary", "APNS_CERT_FILE": f.combined}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setEnv(t, tt.env)
			c, err := Load()
			require.NoError(t, err)
			require.Equal(t, ModeBinary, c.APNs.Mode)
			require.Equal(t, "gateway.push.apple.com:2195", c.APNs.Addr)
			require.Equal(t, "feedback.push.apple.com:2196", c.Feedback.Addr)
			require.Equal(t, 2048, c.APNs.MaxPayload)
			require.Equal(t, 200_000, c.MaxInFlight)
		})
	}

	t.Run("sandbox", func(t *testing.T) {
		setEnv(t, merge(binaryP12(f), map[string]string{"APNS_ENVIRONMENT": "sandbox"}))
		c, err := Load()
		require.NoError(t, err)
		require.Equal(t, "gateway.sandbox.push.apple.com:2195", c.APNs.Addr)
		require.Equal(t, "feedback.sandbox.push.apple.com:2196", c.Feedback.Addr)
	})

	t.Run("sandbox and overrides", func(t *testing.T) {
		setEnv(t, merge(binaryP12(f), map[string]string{
			"APNS_ENVIRONMENT":       "sandbox",
			"APNS_ADDR":              "127.0.0.1:2195",
			"APNS_MAX_PAYLOAD":       "4096",
			"APNS_ASSUMED_DELIVERED": "2s",
			"APNS_CONFIRM_AFTER":     "100ms",
			"JOBS_ACK_WAIT":          "3s",
			"MAX_IN_FLIGHT":          "50000",
		}))
		c, err := Load()
		require.NoError(t, err)
		require.Equal(t, "127.0.0.1:2195", c.APNs.Addr)
		require.Empty(t, c.Feedback.Addr, "Apple's feedback service only with Apple's gateway")
		require.Equal(t, 4096, c.APNs.MaxPayload)
		require.Equal(t, 50_000, c.MaxInFlight)
		require.Equal(t, 100*time.Millisecond, c.APNs.ConfirmAfter)
	})

	t.Run("confirm markers off where they cannot help", func(t *testing.T) {
		setEnv(t, map[string]string{"APNS_ASSUMED_DELIVERED": "40ms"}) // mock mode
		c, err := Load()
		require.NoError(t, err)
		require.Zero(t, c.APNs.ConfirmAfter, "mock mode's 50ms default is not shorter than the window")

		setEnv(t, merge(tokenAuth(f), map[string]string{"APNS_CONFIRM_AFTER": "0"}))
		c, err = Load()
		require.NoError(t, err, "0 (off) is accepted in http2 mode")
		require.Zero(t, c.APNs.ConfirmAfter)
	})
}

// TestBadVariable: each bad variable gives exactly one error, and it names
// that variable as users set it.
func TestBadVariable(t *testing.T) {
	f := newFiles(t)
	token, binary, nats := tokenAuth(f), binaryP12(f), remoteNATS(f)
	remote := map[string]string{"NATS_URL": "nats://127.0.0.1:4222"}
	tests := []struct {
		name string
		base map[string]string
		env  map[string]string
		want string // without the prefix
		msg  string // in the error
	}{
		{"url without scheme", nil, map[string]string{"NATS_URL": "localhost:4222"}, "NATS_URL", `scheme "localhost"`},
		{"url scheme", nil, map[string]string{"NATS_URL": "http://localhost:4222"}, "NATS_URL", `scheme "http"`},
		{"url unparsable", nil, map[string]string{"NATS_URL": "nats://h:x"}, "NATS_URL", `parse "nats://h:x"`},
		{"url empty item", nil, map[string]string{"NATS_URL": "nats://a:4222,,nats://b:4222"}, "NATS_URL", "empty URL"},
		{"url with password", nil, map[string]string{"NATS_URL": "nats://u:" + urlPassword + "@a:4222"}, "NATS_URL", `"nats://[redacted]@a:4222": credentials in the URL are not allowed`},
		{"url with token", nil, map[string]string{"NATS_URL": "nats://" + natsToken + "@a:4222"}, "NATS_URL", "credentials in the URL"},
		{"url no host", nil, map[string]string{"NATS_URL": "nats://:4222"}, "NATS_URL", "missing host"},
		{"creds missing file", remote, map[string]string{"NATS_CREDS": f.missing}, "NATS_CREDS", f.missing},
		{"nkey missing file", remote, map[string]string{"NATS_NKEY": f.missing}, "NATS_NKEY", "no such file"},
		{"creds with embedded", nil, map[string]string{"NATS_CREDS": f.garbage}, "NATS_CREDS", "embedded nats-server"},
		{"user without password", remote, map[string]string{"NATS_USER": "u"}, "NATS_PASSWORD", "required with APNS_WORKER_NATS_USER"},
		{"password without user", remote, map[string]string{"NATS_PASSWORD": natsPassword}, "NATS_USER", "required with APNS_WORKER_NATS_PASSWORD"},
		{"token with creds", remote, map[string]string{"NATS_CREDS": f.creds, "NATS_TOKEN": natsToken}, "NATS_TOKEN", "one NATS authentication method"},
		{"tls ca not pem", nats, map[string]string{"NATS_TLS_CA": f.garbage}, "NATS_TLS_CA", "no PEM CERTIFICATE block"},
		{"apns ca not pem", nil, map[string]string{"APNS_CA_FILE": f.garbage}, "APNS_CA_FILE", "no PEM CERTIFICATE block"},
		{"tls cert is a key", nats, map[string]string{"NATS_TLS_CERT": f.keyPEM}, "NATS_TLS_CERT", "no PEM CERTIFICATE block"},
		{"tls cert without key", remote, map[string]string{"NATS_TLS_CERT": f.certPEM}, "NATS_TLS_KEY", "required with APNS_WORKER_NATS_TLS_CERT"},
		{"tls key no key", nats, map[string]string{"NATS_TLS_KEY": f.certPEM}, "NATS_TLS_KEY", "no PEM PRIVATE KEY block"},
		{"reconnect wait unit", nil, map[string]string{"NATS_RECONNECT_WAIT": "2x"}, "NATS_RECONNECT_WAIT", `unknown unit "x"`},
		{"reconnect wait zero", nil, map[string]string{"NATS_RECONNECT_WAIT": "0s"}, "NATS_RECONNECT_WAIT", "must be positive"},
		{"nats name empty", nil, map[string]string{"NATS_NAME": ""}, "NATS_NAME", "must not be empty"},
		{"embedded data dir", nil, map[string]string{"EMBEDDED_DATA_DIR": ""}, "EMBEDDED_DATA_DIR", "must not be empty"},
		{"embedded listen empty", nil, map[string]string{"EMBEDDED_LISTEN": ""}, "EMBEDDED_LISTEN", "must not be empty"},
		{"embedded listen", nil, map[string]string{"EMBEDDED_LISTEN": "4222"}, "EMBEDDED_LISTEN", "not host:port"},
		{"jobs stream", nil, map[string]string{"JOBS_STREAM": "apns.jobs"}, "JOBS_STREAM", "JetStream name"},
		{"jobs subject wildcard", nil, map[string]string{"JOBS_SUBJECT": "apns.*"}, "JOBS_SUBJECT", "wildcards"},
		{"jobs consumer", nil, map[string]string{"JOBS_CONSUMER": ""}, "JOBS_CONSUMER", "must not be empty"},
		{"ack wait syntax", nil, map[string]string{"JOBS_ACK_WAIT": "1 minute"}, "JOBS_ACK_WAIT", "time: "},
		{"ack wait below 1s", nil, map[string]string{"JOBS_ACK_WAIT": "500ms"}, "JOBS_ACK_WAIT", "below 1s"},
		{"connect timeout", nil, map[string]string{"NATS_CONNECT_TIMEOUT": "-1s"}, "NATS_CONNECT_TIMEOUT", "must be positive"},
		{"max deliver", nil, map[string]string{"JOBS_MAX_DELIVER": "0"}, "JOBS_MAX_DELIVER", "out of range"},
		{"max deliver syntax", nil, map[string]string{"JOBS_MAX_DELIVER": "ten"}, "JOBS_MAX_DELIVER", "not an integer"},
		{"backoff empty item", nil, map[string]string{"JOBS_BACKOFF": "1s,,2s"}, "JOBS_BACKOFF", "time: "},
		{"backoff negative", nil, map[string]string{"JOBS_BACKOFF": "1s,-2s"}, "JOBS_BACKOFF", "must be positive"},
		{"events stream same", nil, map[string]string{"EVENTS_STREAM": "APNS_JOBS"}, "EVENTS_STREAM", "distinct names"},
		{"events max age", nil, map[string]string{"EVENTS_MAX_AGE": "-1h"}, "EVENTS_MAX_AGE", "must be positive"},
		{"events below jobs", nil, map[string]string{"EVENTS_SUBJECT": "apns.jobs.events"}, "EVENTS_SUBJECT", "overlaps the jobs stream's subjects"},
		{"events above jobs", nil, map[string]string{"EVENTS_SUBJECT": "apns"}, "EVENTS_SUBJECT", "overlaps the jobs stream's subjects"},
		{"events space", nil, map[string]string{"EVENTS_SUBJECT": "apns bad"}, "EVENTS_SUBJECT", "whitespace"},
		{"events empty token", nil, map[string]string{"EVENTS_SUBJECT": "apns..events"}, "EVENTS_SUBJECT", "empty token"},
		{"receipts", nil, map[string]string{"EVENTS_RECEIPTS": "yes please"}, "EVENTS_RECEIPTS", "not true or false"},
		{"mode unknown", nil, map[string]string{"APNS_MODE": "http3"}, "APNS_MODE", `"http3" is not one of mock, binary, http2`},
		{"mode unset with credentials", token, map[string]string{"APNS_MODE": ""}, "APNS_MODE", "mock APNs gateway"},
		{"environment", nil, map[string]string{"APNS_ENVIRONMENT": "staging"}, "APNS_ENVIRONMENT", "production, sandbox"},
		{"addr binary", binary, map[string]string{"APNS_ADDR": "gateway.push.apple.com"}, "APNS_ADDR", "host:port"},
		{"addr binary port", binary, map[string]string{"APNS_ADDR": "gateway.push.apple.com:99999"}, "APNS_ADDR", "port"},
		{"addr http2", token, map[string]string{"APNS_ADDR": "http://api.push.apple.com"}, "APNS_ADDR", "base URL"},
		{"binary without cert", nil, map[string]string{"APNS_MODE": "binary"}, "APNS_CERT_FILE", "required in binary mode"},
		{"cert missing file", binary, map[string]string{"APNS_CERT_FILE": f.missing}, "APNS_CERT_FILE", f.missing},
		{"cert not p12", binary, map[string]string{"APNS_CERT_FILE": f.garbage}, "APNS_CERT_FILE", "not a PKCS#12"},
		{"cert pem without certificate", binary, map[string]string{"APNS_CERT_FILE": f.keyPEM}, "APNS_CERT_FILE", "no PEM CERTIFICATE block"},
		{"cert expired", binary, map[string]string{"APNS_CERT_FILE": f.expired}, "APNS_CERT_FILE", "expired"},
		{"cert password wrong", binary, map[string]string{"APNS_CERT_PASSWORD": "wrong"}, "APNS_CERT_PASSWORD", "does not open"},
		{"cert password missing", binary, map[string]string{"APNS_CERT_PASSWORD": ""}, "APNS_CERT_PASSWORD", "does not open"},
		{"key file without cert", nil, map[string]string{"APNS_KEY_FILE": f.keyPEM}, "APNS_KEY_FILE", "APNS_WORKER_APNS_P8_FILE"},
		{"pem cert needs key", binary, map[string]string{"APNS_CERT_FILE": f.certPEM}, "APNS_KEY_FILE", "holds no private key"},
		{"key file not a key", binary, map[string]string{"APNS_CERT_FILE": f.certPEM, "APNS_KEY_FILE": f.caPEM}, "APNS_KEY_FILE", "no PEM PRIVATE KEY block"},
		{"key file with p12", binary, map[string]string{"APNS_KEY_FILE": f.keyPEM}, "APNS_KEY_FILE", "holds its key"},
		{"http2 no credentials", nil, map[string]string{"APNS_MODE": "http2"}, "APNS_P8_FILE", "needs credentials"},
		{"engine unknown", token, map[string]string{"APNS_ENGINE": "nghttp2"}, "APNS_ENGINE", "nghttp2"},
		{"engine outside http2", binary, map[string]string{"APNS_ENGINE": "std"}, "APNS_ENGINE", "HTTP/2 engine"},
		{"http2 both credentials", token, map[string]string{"APNS_CERT_FILE": f.combined}, "APNS_CERT_FILE", "certificate auth or token auth"},
		{"p8 not pem", token, map[string]string{"APNS_P8_FILE": f.garbage}, "APNS_P8_FILE", "no PEM PRIVATE KEY block"},
		{"p8 not ec", token, map[string]string{"APNS_P8_FILE": f.p8Ed25519}, "APNS_P8_FILE", "EC P-256"},
		{"p8 missing file", token, map[string]string{"APNS_P8_FILE": f.missing}, "APNS_P8_FILE", "no such file"},
		{"p8 in binary mode", binary, map[string]string{"APNS_P8_FILE": f.p8, "APNS_KEY_ID": "ABCDE12345", "APNS_TEAM_ID": "TEAM123456", "APNS_TOPIC": "com.example.app"}, "APNS_P8_FILE", "http2 mode only"},
		{"key id short", token, map[string]string{"APNS_KEY_ID": "ABC123"}, "APNS_KEY_ID", "not 10 characters"},
		{"key id missing", token, map[string]string{"APNS_KEY_ID": ""}, "APNS_KEY_ID", "required with APNS_WORKER_APNS_P8_FILE"},
		{"team id lower case", token, map[string]string{"APNS_TEAM_ID": "team123456"}, "APNS_TEAM_ID", "not 10 characters"},
		{"team id missing", token, map[string]string{"APNS_TEAM_ID": ""}, "APNS_TEAM_ID", "required"},
		{"topic missing", token, map[string]string{"APNS_TOPIC": ""}, "APNS_TOPIC", "required"},
		{"topic space", token, map[string]string{"APNS_TOPIC": "com.example app"}, "APNS_TOPIC", "bundle id"},
		{"conns", nil, map[string]string{"APNS_CONNS": "0"}, "APNS_CONNS", "out of range 1..1000"},
		{"assumed delivered", nil, map[string]string{"APNS_ASSUMED_DELIVERED": "0"}, "APNS_ASSUMED_DELIVERED", "must be positive"},
		{"idle timeout", nil, map[string]string{"APNS_IDLE_TIMEOUT": "-5m"}, "APNS_IDLE_TIMEOUT", "must be positive"},
		{"confirm after", nil, map[string]string{"APNS_CONFIRM_AFTER": "soon"}, "APNS_CONFIRM_AFTER", "soon"},
		{"confirm after in http2 mode", token, map[string]string{"APNS_CONFIRM_AFTER": "100ms"}, "APNS_CONFIRM_AFTER", "binary mode"},
		{"confirm after not below the window", binary, map[string]string{"APNS_CONFIRM_AFTER": "5s"}, "APNS_CONFIRM_AFTER", "not shorter than APNS_WORKER_APNS_ASSUMED_DELIVERED (5s)"},
		{"confirm after above a set window", binary, map[string]string{"APNS_CONFIRM_AFTER": "2s", "APNS_ASSUMED_DELIVERED": "1s"}, "APNS_CONFIRM_AFTER", "(1s)"},
		{"max payload", nil, map[string]string{"APNS_MAX_PAYLOAD": "70000"}, "APNS_MAX_PAYLOAD", "out of range"},
		{"request timeout", nil, map[string]string{"APNS_REQUEST_TIMEOUT": "soon"}, "APNS_REQUEST_TIMEOUT", "time: "},
		{"feedback addr", binary, map[string]string{"FEEDBACK_ADDR": ":2196"}, "FEEDBACK_ADDR", "missing host"},
		{"feedback interval", nil, map[string]string{"FEEDBACK_INTERVAL": "-1h"}, "FEEDBACK_INTERVAL", "must be positive"},
		{"replicas", nil, map[string]string{"REPLICAS": "6"}, "REPLICAS", "out of range 1..5"},
		{"max in flight", nil, map[string]string{"MAX_IN_FLIGHT": "0"}, "MAX_IN_FLIGHT", "out of range"},
		{"http addr", nil, map[string]string{"HTTP_ADDR": "8080"}, "HTTP_ADDR", "not host:port"},
		{"log level", nil, map[string]string{"LOG_LEVEL": "verbose"}, "LOG_LEVEL", "debug, info, warn, error"},
		{"procs", nil, map[string]string{"PROCS": "2"}, "PROCS", "auto, runtime"},
		{"socket calls", nil, map[string]string{"SOCKET_CALLS": "raw"}, "SOCKET_CALLS", "direct, runtime"},
		{"gc floor", nil, map[string]string{"GC_FLOOR_MIB": "-1"}, "GC_FLOOR_MIB", "out of range 0..65536"},
		{"gc floor unit", nil, map[string]string{"GC_FLOOR_MIB": "32MiB"}, "GC_FLOOR_MIB", `"32MiB" is not an integer`},
		{"log format", nil, map[string]string{"LOG_FORMAT": "xml"}, "LOG_FORMAT", "auto, text, json"},
		{"shutdown grace", nil, map[string]string{"SHUTDOWN_GRACE": "0"}, "SHUTDOWN_GRACE", "must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setEnv(t, merge(tt.base, tt.env))
			c, err := Load()
			require.Error(t, err)
			require.Nil(t, c)
			errs := Errors(err)
			require.Len(t, errs, 1, "errors: %v", err)
			require.Equal(t, fullName(tt.want), errs[0].Var)
			require.True(t, strings.HasPrefix(err.Error(), fullName(tt.want)+": "), err.Error())
			require.Contains(t, err.Error(), tt.msg)
			for _, s := range []string{p12Password, natsPassword, natsToken, urlPassword} {
				require.NotContains(t, err.Error(), s)
			}
		})
	}
}

// TestAllErrorsAtOnce: one Load reports every bad variable.
func TestAllErrorsAtOnce(t *testing.T) {
	setEnv(t, map[string]string{
		"NATS_URL":         "localhost:4222",
		"JOBS_ACK_WAIT":    "soon",
		"REPLICAS":         "9",
		"APNS_MODE":        "http2",
		"APNS_TEAM_ID":     "x",
		"LOG_LEVEL":        "loud",
		"EVENTS_RECEIPTS":  "maybe",
		"APNS_MAX_PAYLOAD": "-1",
	})
	_, err := Load()
	t.Log(err)
	var got []string
	for _, e := range Errors(err) {
		got = append(got, strings.TrimPrefix(e.Var, Prefix+"_"))
	}
	require.ElementsMatch(t, []string{"NATS_URL", "JOBS_ACK_WAIT", "REPLICAS", "APNS_P8_FILE", "APNS_TEAM_ID", "LOG_LEVEL", "EVENTS_RECEIPTS", "APNS_MAX_PAYLOAD"}, got)
	require.Len(t, strings.Split(err.Error(), "\n"), len(got))
}

// TestSecretsRedacted: no secret in errors, LogValue, String, %v, %#v or
// JSON.
func TestSecretsRedacted(t *testing.T) {
	f := newFiles(t)
	secrets := []string{p12Password, natsPassword, natsToken, urlPassword}

	t.Run("config", func(t *testing.T) {
		setEnv(t, merge(binaryP12(f), map[string]string{
			"NATS_URL":      "nats://a.example.com:4222,nats://b.example.com:4222",
			"NATS_USER":     "worker",
			"NATS_PASSWORD": natsPassword,
		}))
		c, err := Load()
		require.NoError(t, err)
		require.Equal(t, p12Password, c.APNs.CertPassword.Reveal())

		var logs bytes.Buffer
		slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "config", c)
		slog.New(slog.NewTextHandler(&logs, nil)).Info("config", "config", *c)
		js, err := json.Marshal(c)
		require.NoError(t, err)
		outputs := map[string]string{
			"log":    logs.String(),
			"String": c.String(),
			"%v":     fmt.Sprintf("%v", c),
			"%+v":    fmt.Sprintf("%+v", *c),
			"%#v":    fmt.Sprintf("%#v", c.NATS),
			"json":   string(js),
		}
		for name, out := range outputs {
			for _, s := range secrets {
				require.NotContains(t, out, s, name)
			}
		}
		require.Contains(t, logs.String(), `"password":"[redacted]"`)
		require.Contains(t, logs.String(), `"cert_password":"[redacted]"`)
		require.Contains(t, logs.String(), `"token":""`, "an unset secret shows as empty")
		require.Contains(t, c.String(), "apns.mode=binary")
		require.Contains(t, c.String(), "jobs.ack_wait=10s")
	})

	t.Run("errors", func(t *testing.T) {
		setEnv(t, map[string]string{
			"NATS_URL":           "nats://worker:" + urlPassword + "@a.example.com:bad,http://" + natsToken + "@b:1",
			"NATS_TOKEN":         natsToken,
			"NATS_PASSWORD":      natsPassword,
			"APNS_MODE":          "binary",
			"APNS_CERT_FILE":     f.p12,
			"APNS_CERT_PASSWORD": "wrong-" + p12Password,
		})
		_, err := Load()
		require.Error(t, err)
		require.GreaterOrEqual(t, len(Errors(err)), 4, err.Error())
		for _, s := range secrets {
			require.NotContains(t, err.Error(), s)
		}
		require.Contains(t, err.Error(), `parse "nats://[redacted]@a.example.com:bad": invalid URL`)
		require.Contains(t, err.Error(), `"http://[redacted]@b:1": scheme "http"`)
	})
}

func TestRedactURL(t *testing.T) {
	t.Parallel() // no environment
	for in, want := range map[string]string{
		"nats://a:4222":              "nats://a:4222",
		"nats://u:p@a:4222":          "nats://[redacted]@a:4222",
		"nats://tok@a:4222/x@y":      "nats://[redacted]@a:4222/x@y",
		"u:p@a:4222":                 "[redacted]@a:4222",
		"nats://u:p@@a:4222?q=1":     "nats://[redacted]@a:4222?q=1",
		"https://api.push.apple.com": "https://api.push.apple.com",
	} {
		require.Equal(t, want, redactURL(in), in)
	}
}

func TestErrorsUnwrap(t *testing.T) {
	t.Parallel()
	inner := os.ErrNotExist
	err := fmt.Errorf("load: %w", &Error{Var: "APNS_WORKER_NATS_CREDS", Err: inner})
	require.ErrorIs(t, err, os.ErrNotExist)
	require.Len(t, Errors(err), 1)
	require.Nil(t, Errors(nil))
}

// TestEngineStd: APNS_ENGINE=std chooses the reference HTTP/2 engine.
func TestEngineStd(t *testing.T) {
	f := newFiles(t)
	setEnv(t, merge(tokenAuth(f), map[string]string{"APNS_ENGINE": "std"}))
	c, err := Load()
	require.NoError(t, err)
	require.Equal(t, EngineStd, c.APNs.Engine)
}
