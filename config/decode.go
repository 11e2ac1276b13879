package config

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/jetpush/apns-worker/apns"
)

// Defaults that depend on the mode.
const (
	maxInFlightBinary = 200_000 // 40 000 jobs/s for the 5 s assumed-delivered window
	maxInFlightHTTP2  = 10_000
	maxPayloadBinary  = 2048
	maxPayloadHTTP2   = 4096
	mockConfirmAfter  = 50 * time.Millisecond // the mock gateway answers confirm markers
	maxConns          = 1000
	maxNameLen        = 255 // JetStream stream and consumer names
)

// decoder turns a spec into a Config, collecting one *Error per bad
// variable. Variables are named without Prefix here.
type decoder struct {
	errs []error
	bad  map[string]bool // variables with an error: later checks skip them
	seen map[string]bool // variables decoded (the tests compare with envconfig)
	now  func() time.Time
}

func newDecoder() *decoder {
	return &decoder{bad: map[string]bool{}, seen: map[string]bool{}, now: time.Now}
}

// fullName returns the name users set for variable v.
func fullName(v string) string { return Prefix + "_" + v }

func (d *decoder) fail(v string, err error) {
	d.bad[v] = true
	d.errs = append(d.errs, &Error{Var: fullName(v), Err: err})
}

func (d *decoder) failf(v, format string, args ...any) {
	d.fail(v, fmt.Errorf(format, args...))
}

func (d *decoder) err() error { return errors.Join(d.errs...) }

// ok reports whether none of the variables has an error.
func (d *decoder) ok(vs ...string) bool {
	for _, v := range vs {
		if d.bad[v] {
			return false
		}
	}
	return true
}

func (d *decoder) decode(s *spec) *Config {
	c := new(Config)

	// Phase 1: each variable on its own.
	n := &c.NATS
	n.URLs = d.natsURLs("NATS_URL", s.NATS.URL)
	n.CredsFile = d.str("NATS_CREDS", s.NATS.Creds)
	n.NKeyFile = d.str("NATS_NKEY", s.NATS.Nkey)
	n.User = d.str("NATS_USER", s.NATS.User)
	n.Password = Secret(d.str("NATS_PASSWORD", s.NATS.Password))
	n.Token = Secret(d.str("NATS_TOKEN", s.NATS.Token))
	n.TLSCAFile = d.str("NATS_TLS_CA", s.NATS.TlsCa)
	n.TLSCertFile = d.str("NATS_TLS_CERT", s.NATS.TlsCert)
	n.TLSKeyFile = d.str("NATS_TLS_KEY", s.NATS.TlsKey)
	n.ConnectTimeout = d.duration("NATS_CONNECT_TIMEOUT", s.NATS.ConnectTimeout, true)
	n.ReconnectWait = d.duration("NATS_RECONNECT_WAIT", s.NATS.ReconnectWait, false)
	n.Name = d.str("NATS_NAME", s.NATS.Name)

	c.Embedded.DataDir = d.str("EMBEDDED_DATA_DIR", s.Embedded.DataDir)
	c.Embedded.Listen = d.hostPort("EMBEDDED_LISTEN", s.Embedded.Listen, true)

	j := &c.Jobs
	j.Stream = d.name("JOBS_STREAM", s.Jobs.Stream)
	j.Subject = d.subject("JOBS_SUBJECT", s.Jobs.Subject)
	j.Consumer = d.name("JOBS_CONSUMER", s.Jobs.Consumer)
	j.AckWait = d.duration("JOBS_ACK_WAIT", s.Jobs.AckWait, false)
	j.MaxDeliver = d.integer("JOBS_MAX_DELIVER", s.Jobs.MaxDeliver, 1, 1_000_000)
	j.Backoff = d.durations("JOBS_BACKOFF", s.Jobs.Backoff)

	e := &c.Events
	e.Stream = d.name("EVENTS_STREAM", s.Events.Stream)
	e.MaxAge = d.duration("EVENTS_MAX_AGE", s.Events.MaxAge, true)
	e.Subject = d.subject("EVENTS_SUBJECT", s.Events.Subject)
	e.Receipts = d.boolean("EVENTS_RECEIPTS", s.Events.Receipts)

	a := &c.APNs
	modeSet := strings.TrimSpace(s.APNS.Mode) != ""
	a.Mode = Mode(d.oneOf("APNS_MODE", s.APNS.Mode, string(ModeMock), string(ModeMock), string(ModeBinary), string(ModeHTTP2)))
	a.Environment = Environment(d.oneOf("APNS_ENVIRONMENT", s.APNS.Environment, string(Production), string(Production), string(Sandbox)))
	a.Engine = Engine(d.oneOf("APNS_ENGINE", s.APNS.Engine, string(EngineH2), string(EngineH2), string(EngineStd)))
	if a.Engine != EngineH2 && a.Mode != ModeHTTP2 && d.ok("APNS_ENGINE") {
		d.failf("APNS_ENGINE", "%s is an HTTP/2 engine, but %s is %s; unset it", a.Engine, fullName("APNS_MODE"), a.Mode)
	}
	a.Addr = d.str("APNS_ADDR", s.APNS.Addr)
	a.CAFile = d.str("APNS_CA_FILE", s.APNS.CaFile)
	a.CertFile = d.str("APNS_CERT_FILE", s.APNS.CertFile)
	a.CertPassword = Secret(d.str("APNS_CERT_PASSWORD", s.APNS.CertPassword))
	a.KeyFile = d.str("APNS_KEY_FILE", s.APNS.KeyFile)
	a.P8File = d.str("APNS_P8_FILE", s.APNS.P8File)
	a.KeyID = d.appleID("APNS_KEY_ID", s.APNS.KeyID)
	a.TeamID = d.appleID("APNS_TEAM_ID", s.APNS.TeamID)
	a.Topic = d.topic("APNS_TOPIC", s.APNS.Topic)
	a.Conns = d.integer("APNS_CONNS", s.APNS.Conns, 1, maxConns)
	a.AssumedDelivered = d.duration("APNS_ASSUMED_DELIVERED", s.APNS.AssumedDelivered, false)
	switch {
	case strings.TrimSpace(s.APNS.ConfirmAfter) != "":
		a.ConfirmAfter = d.duration("APNS_CONFIRM_AFTER", s.APNS.ConfirmAfter, true)
	case a.Mode == ModeMock: // unset: the mock gateway answers markers
		if a.AssumedDelivered > mockConfirmAfter {
			a.ConfirmAfter = mockConfirmAfter
		}
		d.str("APNS_CONFIRM_AFTER", "")
	default:
		d.str("APNS_CONFIRM_AFTER", "")
	}
	a.IdleTimeout = d.duration("APNS_IDLE_TIMEOUT", s.APNS.IdleTimeout, true)
	a.MaxPayload = d.optInteger("APNS_MAX_PAYLOAD", s.APNS.MaxPayload, 1, 65535)
	a.RequestTimeout = d.duration("APNS_REQUEST_TIMEOUT", s.APNS.RequestTimeout, false)

	c.Feedback.Addr = d.hostPort("FEEDBACK_ADDR", s.Feedback.Addr, false)
	c.Feedback.Interval = d.duration("FEEDBACK_INTERVAL", s.Feedback.Interval, true)

	c.Replicas = d.integer("REPLICAS", s.Replicas, 1, 5)
	c.MaxInFlight = d.optInteger("MAX_IN_FLIGHT", s.MaxInFlight, 1, 100_000_000)
	c.HTTPAddr = d.hostPort("HTTP_ADDR", s.HTTPAddr, true)
	c.Log.Level = d.level("LOG_LEVEL", s.Log.Level)
	c.Log.Format = LogFormat(d.oneOf("LOG_FORMAT", s.Log.Format, string(LogAuto), string(LogAuto), string(LogText), string(LogJSON)))
	c.ShutdownGrace = d.duration("SHUTDOWN_GRACE", s.ShutdownGrace, false)
	c.Procs = Procs(d.oneOf("PROCS", s.Procs, string(ProcsAuto), string(ProcsAuto), string(ProcsRuntime)))
	c.SocketCalls = SocketCalls(d.oneOf("SOCKET_CALLS", s.SocketCalls, string(SocketCallsDirect), string(SocketCallsDirect), string(SocketCallsRuntime)))
	c.GCFloorMiB = d.integer("GC_FLOOR_MIB", s.GCFloorMiB, 0, 1<<16)

	// Phase 2: rules across variables, files, and mode-dependent defaults.
	d.checkNATS(c)
	d.checkStreams(c)
	d.checkAPNs(c, modeSet)
	if c.MaxInFlight == 0 {
		c.MaxInFlight = maxInFlightBinary
		if c.APNs.Mode == ModeHTTP2 {
			c.MaxInFlight = maxInFlightHTTP2
		}
	}
	return c
}

func (d *decoder) checkNATS(c *Config) {
	n := &c.NATS
	if n.Name == "" {
		d.failf("NATS_NAME", "must not be empty")
	}
	if len(n.URLs) == 0 && d.ok("NATS_URL") {
		if c.Embedded.Listen == "" && d.ok("EMBEDDED_LISTEN") {
			d.failf("EMBEDDED_LISTEN", "must not be empty: producers connect to the embedded nats-server here")
		}
		if c.Embedded.DataDir == "" {
			d.failf("EMBEDDED_DATA_DIR", "must not be empty: the embedded nats-server stores JetStream here")
		}
		// The embedded server has neither authentication nor TLS: a
		// setting for them means the URL was forgotten.
		for _, v := range []struct{ name, val string }{
			{"NATS_CREDS", n.CredsFile}, {"NATS_NKEY", n.NKeyFile},
			{"NATS_USER", n.User}, {"NATS_PASSWORD", n.Password.Reveal()},
			{"NATS_TOKEN", n.Token.Reveal()}, {"NATS_TLS_CA", n.TLSCAFile},
			{"NATS_TLS_CERT", n.TLSCertFile}, {"NATS_TLS_KEY", n.TLSKeyFile},
		} {
			if v.val != "" {
				d.failf(v.name, "set, but %s is empty: the worker would start an embedded nats-server, which uses no authentication or TLS; set %s",
					fullName("NATS_URL"), fullName("NATS_URL"))
			}
		}
		return
	}

	// One authentication method.
	var first string
	for _, m := range []struct{ name, val string }{
		{"NATS_CREDS", n.CredsFile}, {"NATS_NKEY", n.NKeyFile},
		{"NATS_USER", n.User + n.Password.Reveal()}, {"NATS_TOKEN", n.Token.Reveal()},
	} {
		switch {
		case m.val == "":
		case first == "":
			first = m.name
		default:
			name := m.name
			if name == "NATS_USER" && n.User == "" {
				name = "NATS_PASSWORD"
			}
			d.failf(name, "set together with %s: use one NATS authentication method", fullName(first))
		}
	}
	d.pair("NATS_USER", n.User, "NATS_PASSWORD", n.Password.Reveal())
	d.pair("NATS_TLS_CERT", n.TLSCertFile, "NATS_TLS_KEY", n.TLSKeyFile)

	if _, ok := d.readFile("NATS_CREDS", n.CredsFile); ok {
		d.checkNATSCreds("NATS_CREDS", n.CredsFile)
	}
	if _, ok := d.readFile("NATS_NKEY", n.NKeyFile); ok {
		d.checkNATSNKey("NATS_NKEY", n.NKeyFile)
	}
	d.checkCA("NATS_TLS_CA", n.TLSCAFile)
	if b, ok := d.readFile("NATS_TLS_CERT", n.TLSCertFile); ok {
		d.checkPEMCert("NATS_TLS_CERT", n.TLSCertFile, b)
	}
	if b, ok := d.readFile("NATS_TLS_KEY", n.TLSKeyFile); ok && pemKey(b) == nil {
		d.failf("NATS_TLS_KEY", "%s: no PEM PRIVATE KEY block", n.TLSKeyFile)
	}
	if n.TLSCertFile != "" && n.TLSKeyFile != "" && d.ok("NATS_TLS_CERT", "NATS_TLS_KEY") {
		d.checkNATSKeyPair("NATS_TLS_KEY", n.TLSCertFile, n.TLSKeyFile)
	}
}

// checkCA fails name unless file (if set) holds a PEM certificate.
func (d *decoder) checkCA(name, file string) {
	if b, ok := d.readFile(name, file); ok {
		if _, err := firstCert(b); err != nil {
			d.failf(name, "%s: %v", file, err)
		}
	}
}

// pair fails the missing one of two variables that go together.
func (d *decoder) pair(v1, val1, v2, val2 string) {
	switch {
	case val1 != "" && val2 == "":
		d.failf(v2, "required with %s", fullName(v1))
	case val1 == "" && val2 != "":
		d.failf(v1, "required with %s", fullName(v2))
	}
}

func (d *decoder) checkStreams(c *Config) {
	j, e := &c.Jobs, &c.Events
	if d.ok("JOBS_STREAM", "EVENTS_STREAM") && j.Stream == e.Stream {
		d.failf("EVENTS_STREAM", "%q is also %s: the streams need distinct names", e.Stream, fullName("JOBS_STREAM"))
	}
	if d.ok("JOBS_SUBJECT", "EVENTS_SUBJECT") && overlaps(e.Subject, j.Subject) {
		d.failf("EVENTS_SUBJECT", "%q overlaps the jobs stream's subjects %s and %s.>", e.Subject, j.Subject, j.Subject)
	}
}

// overlaps reports whether subject prefixes a and b capture common subjects
// (one equals the other or lies below it).
func overlaps(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+".") || strings.HasPrefix(b, a+".")
}

func (d *decoder) checkAPNs(c *Config, modeSet bool) {
	a := &c.APNs
	if !d.ok("APNS_MODE", "APNS_ENVIRONMENT") {
		return // the rest depends on them
	}
	sandbox := a.Environment == Sandbox
	if !modeSet && (a.CertFile != "" || a.P8File != "") {
		set := fullName("APNS_CERT_FILE")
		if a.CertFile == "" {
			set = fullName("APNS_P8_FILE")
		}
		d.failf("APNS_MODE", "not set, so the worker would use the mock APNs gateway, but %s is set: set http2 (or binary) to send to Apple, or mock to test", set)
	}

	// Where to connect.
	switch a.Mode {
	case ModeBinary:
		appleGateway := a.Addr == ""
		if appleGateway {
			a.Addr = pick(sandbox, "gateway.sandbox.push.apple.com:2195", "gateway.push.apple.com:2195")
		} else {
			a.Addr = d.hostPort("APNS_ADDR", a.Addr, false)
		}
		// Apple's feedback service only goes with Apple's gateway: a worker
		// pointed at another gateway polls no feedback unless told where.
		if c.Feedback.Addr == "" && appleGateway && d.ok("FEEDBACK_ADDR") {
			c.Feedback.Addr = pick(sandbox, "feedback.sandbox.push.apple.com:2196", "feedback.push.apple.com:2196")
		}
	case ModeHTTP2:
		if a.Addr == "" {
			a.Addr = pick(sandbox, "https://api.sandbox.push.apple.com", "https://api.push.apple.com")
		} else {
			d.baseURL("APNS_ADDR", a.Addr)
		}
	case ModeMock:
		a.Addr = "" // the in-process gateway has its own
	}
	if a.MaxPayload == 0 {
		a.MaxPayload = maxPayloadBinary
		if a.Mode == ModeHTTP2 {
			a.MaxPayload = maxPayloadHTTP2
		}
	}

	// Credentials.
	if a.KeyFile != "" && a.CertFile == "" {
		d.failf("APNS_KEY_FILE", "set, but %s is not (a .p8 token-auth key goes in %s)", fullName("APNS_CERT_FILE"), fullName("APNS_P8_FILE"))
	}
	switch a.Mode {
	case ModeBinary:
		if a.CertFile == "" {
			d.failf("APNS_CERT_FILE", "required in binary mode (a .p12 or PEM client certificate)")
		}
		if a.P8File != "" {
			d.failf("APNS_P8_FILE", "token auth is for http2 mode only; binary mode uses %s", fullName("APNS_CERT_FILE"))
		}
	case ModeHTTP2:
		switch {
		case a.CertFile == "" && a.P8File == "":
			d.failf("APNS_P8_FILE", "http2 mode needs credentials: set %s, %s, %s and %s (token auth) or %s (certificate auth)",
				fullName("APNS_P8_FILE"), fullName("APNS_KEY_ID"), fullName("APNS_TEAM_ID"), fullName("APNS_TOPIC"), fullName("APNS_CERT_FILE"))
		case a.CertFile != "" && a.P8File != "":
			d.failf("APNS_CERT_FILE", "set together with %s: choose certificate auth or token auth", fullName("APNS_P8_FILE"))
		}
	}
	if a.P8File != "" {
		for _, v := range []struct{ name, val string }{
			{"APNS_KEY_ID", a.KeyID}, {"APNS_TEAM_ID", a.TeamID}, {"APNS_TOPIC", a.Topic},
		} {
			if v.val == "" && d.ok(v.name) {
				d.failf(v.name, "required with %s (token auth)", fullName("APNS_P8_FILE"))
			}
		}
	}
	if a.CertFile != "" {
		d.checkAPNsCert(a)
	}
	d.checkCA("APNS_CA_FILE", a.CAFile)
	if b, ok := d.readFile("APNS_P8_FILE", a.P8File); ok {
		if _, err := apns.ParseP8(b); err != nil {
			d.failf("APNS_P8_FILE", "%s: %v", a.P8File, strings.TrimPrefix(err.Error(), "apns: .p8 key: "))
		}
	}

	// Confirm markers are the binary engine's, and only help if they can
	// fire before the window makes them pointless.
	if a.ConfirmAfter > 0 && d.ok("APNS_CONFIRM_AFTER") {
		switch {
		case a.Mode == ModeHTTP2:
			d.failf("APNS_CONFIRM_AFTER", "set to %v, but confirm markers are for binary mode: HTTP/2 confirms each notification itself; unset it or set 0", a.ConfirmAfter)
		case d.ok("APNS_ASSUMED_DELIVERED") && a.ConfirmAfter >= a.AssumedDelivered:
			d.failf("APNS_CONFIRM_AFTER", "%v is not shorter than %s (%v): no marker would ever be written; set it lower, or 0 (off)",
				a.ConfirmAfter, fullName("APNS_ASSUMED_DELIVERED"), a.AssumedDelivered)
		}
	}

	// No rule ties the ack wait to the engine's wait for an outcome: the
	// consumer sends InProgress for every job it holds, in the engine too.
	if j := c.Jobs; d.ok("JOBS_ACK_WAIT") && j.AckWait < time.Second {
		d.failf("JOBS_ACK_WAIT", "%v is below 1s: the worker's InProgress keep-alive needs at least 1s", j.AckWait)
	}
}

func pick(cond bool, yes, no string) string {
	if cond {
		return yes
	}
	return no
}

// checkAPNsCert checks that CertFile is a .p12 that opens with CertPassword,
// or a PEM certificate with a key in it or in KeyFile, and is not expired.
func (d *decoder) checkAPNsCert(a *APNs) {
	b, ok := d.readFile("APNS_CERT_FILE", a.CertFile)
	if !ok {
		return
	}
	var cert *x509.Certificate
	if bytes.Contains(b, []byte("-----BEGIN ")) {
		var err error
		if cert, err = firstCert(b); err != nil {
			d.failf("APNS_CERT_FILE", "%s: %v", a.CertFile, err)
			return
		}
		switch kb, ok := d.readFile("APNS_KEY_FILE", a.KeyFile); {
		case a.KeyFile == "" && pemKey(b) == nil:
			d.failf("APNS_KEY_FILE", "required: the PEM certificate %s (%s) holds no private key", a.CertFile, fullName("APNS_CERT_FILE"))
		case ok && pemKey(kb) == nil:
			d.failf("APNS_KEY_FILE", "%s: no PEM PRIVATE KEY block", a.KeyFile)
		}
	} else {
		_, c, _, err := pkcs12.DecodeChain(b, a.CertPassword.Reveal())
		switch {
		case errors.Is(err, pkcs12.ErrIncorrectPassword):
			d.failf("APNS_CERT_PASSWORD", "does not open %s (%s)", a.CertFile, fullName("APNS_CERT_FILE"))
			return
		case err != nil:
			d.failf("APNS_CERT_FILE", "%s: not a PKCS#12 (.p12) file that opens with %s: %v", a.CertFile, fullName("APNS_CERT_PASSWORD"), err)
			return
		}
		cert = c
		if a.KeyFile != "" {
			d.failf("APNS_KEY_FILE", "set, but %s is a .p12 file, which holds its key", fullName("APNS_CERT_FILE"))
		}
	}
	if now := d.now(); now.After(cert.NotAfter) {
		d.failf("APNS_CERT_FILE", "%s: certificate %q expired on %s", a.CertFile, cert.Subject.CommonName, cert.NotAfter.UTC().Format(time.DateOnly))
	}
}

func (d *decoder) checkPEMCert(v, path string, b []byte) {
	if _, err := firstCert(b); err != nil {
		d.failf(v, "%s: %v", path, err)
	}
}

// firstCert parses the first CERTIFICATE block of PEM data.
func firstCert(b []byte) (*x509.Certificate, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM CERTIFICATE block")
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

// pemKey returns the first PEM block whose type ends in PRIVATE KEY.
func pemKey(b []byte) *pem.Block {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil || strings.HasSuffix(blk.Type, "PRIVATE KEY") {
			return blk
		}
	}
}

// readFile reads path, if set, failing v when it cannot.
func (d *decoder) readFile(v, path string) ([]byte, bool) {
	if path == "" || !d.ok(v) {
		return nil, false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		d.fail(v, err) // *fs.PathError names the path
		return nil, false
	}
	return b, true
}
