// Package config reads the worker's settings from the environment and
// validates them before anything starts.
//
// Every variable starts with [Prefix] (APNS_WORKER_). Load reports every bad
// variable at once, each as an *[Error] that names the variable exactly as the
// user sets it. Secrets (passwords, tokens) never appear in errors, and
// [Config.LogValue] and [Config.String] redact them. Files named by the
// settings are read and checked lightly (readable, the right kind of PEM or
// PKCS#12 content); loading them for real is the job of the packages that use
// them.
package config

import (
	"log/slog"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// Prefix starts the name of every variable Load reads.
const Prefix = "APNS_WORKER"

// Config is the worker's validated configuration. Load fills every field,
// defaults included; the comment on each field names its variable.
type Config struct {
	NATS     NATS
	Embedded Embedded
	Jobs     Jobs
	Events   Events
	APNs     APNs
	Feedback Feedback

	// Replicas is the number of replicas of the jobs stream, the events
	// stream and the durable consumer, 1 to 5 (APNS_WORKER_REPLICAS, default
	// 1). More than 1 needs a clustered JetStream.
	Replicas int
	// MaxInFlight bounds the jobs held between JetStream and their outcome:
	// the engine's capacity, the consumer's MaxAckPending and its pull
	// buffer (APNS_WORKER_MAX_IN_FLIGHT). By default it depends on the mode:
	// 200000 for binary and mock (the assumed-delivered window holds every
	// job sent within it: 40 000 jobs/s for 5 s), 10000 for http2.
	MaxInFlight int

	// HTTPAddr is where /healthz, /readyz and /metrics listen
	// (APNS_WORKER_HTTP_ADDR, default 127.0.0.1:8080). Empty disables them.
	HTTPAddr string
	Log      Log
	// ShutdownGrace bounds a graceful stop after SIGINT or SIGTERM
	// (APNS_WORKER_SHUTDOWN_GRACE, default 30s).
	ShutdownGrace time.Duration
	// Procs is how many Ps (threads running Go code) the worker uses
	// (APNS_WORKER_PROCS, default auto): see [Procs].
	Procs Procs
	// SocketCalls is how the worker reads and writes its connections to
	// NATS and APNs (APNS_WORKER_SOCKET_CALLS, default direct): see
	// [SocketCalls].
	SocketCalls SocketCalls
	// GCFloorMiB is the heap goal the worker keeps the garbage collector at
	// or above while its live heap is small, in MiB (APNS_WORKER_GC_FLOOR_MIB,
	// default 32; 0 off): see cmd/internal/gcfloor.
	GCFloorMiB int
}

// SocketCalls chooses how the worker's sockets are read and written.
type SocketCalls string

// The socket-call policies.
const (
	// SocketCallsDirect makes each read and write on the connections to
	// NATS and APNs a direct system call on the non-blocking socket
	// (Linux; elsewhere it is SocketCallsRuntime): at moderate rates the
	// Go scheduler then wakes no thread for them (package
	// internal/rawconn).
	SocketCallsDirect SocketCalls = "direct"
	// SocketCallsRuntime reads and writes through Go's net package, as
	// any Go program does.
	SocketCallsRuntime SocketCalls = "runtime"
)

// Procs chooses the worker's GOMAXPROCS policy.
type Procs string

// The GOMAXPROCS policies.
const (
	// ProcsAuto runs on one P while the process uses well under one core
	// and on the runtime's default above (package cmd/internal/procs); a
	// GOMAXPROCS variable, when set, wins.
	ProcsAuto Procs = "auto"
	// ProcsRuntime leaves GOMAXPROCS to the runtime: the GOMAXPROCS
	// variable, or the CPUs (or CPU limit) of the machine.
	ProcsRuntime Procs = "runtime"
)

// NATS says how to reach NATS. With no URLs the worker starts an embedded
// nats-server (see [Embedded]); the other settings then must be empty.
// At most one of CredsFile, NKeyFile, User+Password and Token is set.
type NATS struct {
	// URLs are the servers to connect to, from the comma-separated
	// APNS_WORKER_NATS_URL (schemes nats, tls, ws, wss; no credentials in
	// the URL). Empty (the default) starts an embedded nats-server.
	URLs []string
	// CredsFile is a NATS credentials file (user JWT and NKey seed)
	// (APNS_WORKER_NATS_CREDS).
	CredsFile string
	// NKeyFile is a file holding an NKey user seed (APNS_WORKER_NATS_NKEY).
	NKeyFile string
	// User and Password authenticate with a user name and password
	// (APNS_WORKER_NATS_USER, APNS_WORKER_NATS_PASSWORD); both or neither.
	User     string
	Password Secret
	// Token authenticates with a token (APNS_WORKER_NATS_TOKEN).
	Token Secret
	// TLSCAFile holds the PEM CA certificates that verify the NATS servers
	// (APNS_WORKER_NATS_TLS_CA); empty uses the system roots.
	TLSCAFile string
	// TLSCertFile and TLSKeyFile are a PEM client certificate and its key
	// for TLS to NATS (APNS_WORKER_NATS_TLS_CERT, APNS_WORKER_NATS_TLS_KEY);
	// both or neither.
	TLSCertFile string
	TLSKeyFile  string
	// ConnectTimeout bounds the first connection at start-up: the worker
	// retries with back-off for this long (an unreachable NATS, then a
	// JetStream cluster that is not ready), then exits 2 naming the variable
	// (APNS_WORKER_NATS_CONNECT_TIMEOUT, default 30s; 0 tries once).
	ConnectTimeout time.Duration
	// ReconnectWait is the pause between reconnect attempts once connected;
	// the worker reconnects forever (APNS_WORKER_NATS_RECONNECT_WAIT,
	// default 2s).
	ReconnectWait time.Duration
	// Name is the connection name servers show in monitoring
	// (APNS_WORKER_NATS_NAME, default apns-worker).
	Name string
}

// Embedded configures the nats-server the worker starts when NATS.URLs is
// empty. It runs JetStream with file storage.
type Embedded struct {
	// DataDir is where JetStream stores its files
	// (APNS_WORKER_EMBEDDED_DATA_DIR, default ./data/nats).
	DataDir string
	// Listen is the host:port producers connect to
	// (APNS_WORKER_EMBEDDED_LISTEN, default 127.0.0.1:4222).
	Listen string
}

// Jobs configures the work-queue stream producers publish jobs to and the
// durable pull consumer every worker shares.
type Jobs struct {
	// Stream is the jobs stream's name (APNS_WORKER_JOBS_STREAM, default
	// APNS_JOBS).
	Stream string
	// Subject is where producers publish jobs (APNS_WORKER_JOBS_SUBJECT,
	// default apns.jobs); the stream captures it and Subject.> (see
	// [Jobs.Subjects]).
	Subject string
	// Consumer is the durable consumer's name (APNS_WORKER_JOBS_CONSUMER,
	// default apns-worker). Workers with the same name share the jobs.
	Consumer string
	// AckWait is how long JetStream waits for an ack before redelivering
	// (APNS_WORKER_JOBS_ACK_WAIT, default 10s, at least 1s). A running
	// worker keeps every job it holds with InProgress (every AckWait/3), so
	// jobs may wait longer than this in the engine; a crashed worker's jobs
	// go to another worker after about AckWait.
	AckWait time.Duration
	// MaxDeliver is how many times a job is tried before it goes to the
	// dead-letter subject (APNS_WORKER_JOBS_MAX_DELIVER, default 10).
	MaxDeliver int
	// Backoff holds the delays before a failed job is tried again: the
	// n-th failure waits Backoff[n-1], the last one repeating
	// (APNS_WORKER_JOBS_BACKOFF, comma-separated, default 1s,5s,30s,2m,5m).
	Backoff []time.Duration
}

// Subjects returns the subjects the jobs stream captures: Subject and
// Subject.>.
func (j Jobs) Subjects() []string { return []string{j.Subject, j.Subject + ".>"} }

// Events configures the limits-retention stream the worker publishes what
// producers must act on to.
type Events struct {
	// Stream is the events stream's name (APNS_WORKER_EVENTS_STREAM,
	// default APNS_EVENTS).
	Stream string
	// MaxAge is how long events are kept (APNS_WORKER_EVENTS_MAX_AGE,
	// default 168h); 0 keeps them until the stream's other limits apply.
	MaxAge time.Duration
	// Subject is the prefix of the event subjects
	// (APNS_WORKER_EVENTS_SUBJECT, default apns.events): <Subject>.rejected
	// (rejected or malformed jobs), <Subject>.badtokens (dead device
	// tokens, from rejections and the feedback service),
	// <Subject>.deadletter (jobs that failed MaxDeliver times) and
	// <Subject>.delivered (receipts, when Receipts is on).
	Subject string
	// Receipts turns on delivery receipts (APNS_WORKER_EVENTS_RECEIPTS,
	// default false).
	Receipts bool
}

// Subjects returns the subjects the events stream captures: Subject.>.
func (e Events) Subjects() []string { return []string{e.Subject + ".>"} }

// Mode is how the worker talks to APNs.
type Mode string

// The modes.
const (
	// ModeMock sends to an in-process APNs test server instead of Apple:
	// nothing reaches a device. It is the default, so the worker runs with
	// no setup; the worker must log it loudly.
	ModeMock Mode = "mock"
	// ModeBinary speaks the legacy binary protocol with a client
	// certificate (Apple stopped accepting it in 2021; compatible gateways).
	ModeBinary Mode = "binary"
	// ModeHTTP2 speaks Apple's HTTP/2 provider API, with token (.p8) or
	// certificate auth.
	ModeHTTP2 Mode = "http2"
)

// Engine is which HTTP/2 engine sends in http2 mode.
type Engine string

// The HTTP/2 engines.
const (
	// EngineH2 is the worker's own HTTP/2 engine (apns.HTTP2Engine): the
	// default, the fastest.
	EngineH2 Engine = "h2"
	// EngineStd is the reference engine on golang.org/x/net/http2's
	// Transport (apns.StdEngine): a fallback with the same outcomes.
	EngineStd Engine = "std"
)

// Environment chooses Apple's hosts.
type Environment string

// The environments.
const (
	Production Environment = "production"
	Sandbox    Environment = "sandbox"
)

// APNs configures the connection to Apple.
//
// Binary mode needs CertFile. HTTP/2 mode needs either token auth (P8File,
// KeyID, TeamID and Topic) or certificate auth (CertFile). CertFile is a
// PKCS#12 file (opened with CertPassword) or a PEM certificate whose private
// key is in the same file or in KeyFile.
type APNs struct {
	// Mode is mock, binary or http2 (APNS_WORKER_APNS_MODE, default mock).
	// Load refuses the default when APNs credentials are set, so a
	// deployment that forgot the mode does not silently send nowhere.
	Mode Mode
	// Environment is production or sandbox and chooses Apple's hosts
	// (APNS_WORKER_APNS_ENVIRONMENT, default production).
	Environment Environment
	// Engine is the HTTP/2 engine in http2 mode: h2 (default) or std, the
	// reference on x/net's Transport (APNS_WORKER_APNS_ENGINE).
	Engine Engine
	// Addr is where the engine connects: host:port in binary mode, a base
	// URL (https://host[:port]) in http2 mode (APNS_WORKER_APNS_ADDR).
	// By default Apple's host for the mode and Environment:
	// gateway[.sandbox].push.apple.com:2195 or
	// https://api[.sandbox].push.apple.com. Empty in mock mode.
	Addr string
	// CAFile is a PEM CA bundle that verifies the APNs server instead of
	// the system roots, for gateways and test servers that are not Apple's
	// (APNS_WORKER_APNS_CA_FILE). Certificate checks always stay on.
	CAFile string
	// CertFile is the client certificate, .p12 or PEM
	// (APNS_WORKER_APNS_CERT_FILE).
	CertFile string
	// CertPassword opens a .p12 CertFile (APNS_WORKER_APNS_CERT_PASSWORD).
	CertPassword Secret
	// KeyFile is the PEM private key of a PEM CertFile that does not hold
	// its key (APNS_WORKER_APNS_KEY_FILE).
	KeyFile string
	// P8File is the token-auth signing key from Apple, a PKCS#8 EC P-256
	// .p8 file (APNS_WORKER_APNS_P8_FILE); http2 only.
	P8File string
	// KeyID is the 10-character id of the P8File key
	// (APNS_WORKER_APNS_KEY_ID).
	KeyID string
	// TeamID is the 10-character Apple developer team id
	// (APNS_WORKER_APNS_TEAM_ID).
	TeamID string
	// Topic is the default apns-topic, usually the app's bundle id; jobs
	// may override it (APNS_WORKER_APNS_TOPIC). Required with token auth.
	Topic string
	// Conns is the number of connections to APNs (APNS_WORKER_APNS_CONNS,
	// default 4).
	Conns int
	// AssumedDelivered is how long the binary engine waits for an error
	// response before it reports a notification delivered
	// (APNS_WORKER_APNS_ASSUMED_DELIVERED, default 5s).
	AssumedDelivered time.Duration
	// ConfirmAfter, when not 0, makes the binary engine confirm what a
	// connection wrote with a known-bad marker frame once the oldest
	// notification waited this long, instead of the whole window
	// (APNS_WORKER_APNS_CONFIRM_AFTER; default 0, off, except 50ms in
	// mock mode, whose in-process gateway answers markers as APNs did);
	// see apns.WithConfirmMarkers.
	ConfirmAfter time.Duration
	// IdleTimeout: a connection idle this long is closed (binary) or
	// pinged (http2) (APNS_WORKER_APNS_IDLE_TIMEOUT, default 5m); 0 never.
	IdleTimeout time.Duration
	// MaxPayload is the largest payload in bytes the worker sends
	// (APNS_WORKER_APNS_MAX_PAYLOAD); by default 2048 in binary and mock
	// mode, 4096 in http2 mode (the engine allows VoIP its 5120).
	MaxPayload int
	// RequestTimeout bounds one HTTP/2 request
	// (APNS_WORKER_APNS_REQUEST_TIMEOUT, default 10s).
	RequestTimeout time.Duration
}

// TokenAuth reports whether the worker signs requests with a .p8 key
// (HTTP/2 token auth) rather than a client certificate.
func (a APNs) TokenAuth() bool { return a.P8File != "" }

// Feedback configures the binary protocol's feedback service poller.
type Feedback struct {
	// Addr is the feedback service's host:port
	// (APNS_WORKER_FEEDBACK_ADDR). By default, in binary mode with Apple's
	// gateway (no APNS_WORKER_APNS_ADDR), feedback[.sandbox].push.apple.com:2196
	// by Environment; otherwise empty (no poller): with another gateway,
	// and in http2 and mock mode, where bad tokens come from responses.
	Addr string
	// Interval is the pause between polls (APNS_WORKER_FEEDBACK_INTERVAL,
	// default 1h); 0 disables the poller.
	Interval time.Duration
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error (APNS_WORKER_LOG_LEVEL, default
	// info).
	Level slog.Level
	// Format is auto, text or json (APNS_WORKER_LOG_FORMAT, default auto).
	Format LogFormat
}

// LogFormat chooses the log handler.
type LogFormat string

// The log formats.
const (
	// LogAuto is colored text (tint) on a terminal, JSON otherwise.
	LogAuto LogFormat = "auto"
	LogText LogFormat = "text"
	LogJSON LogFormat = "json"
)

// spec is what envconfig reads. Every value is a string so that one bad
// value does not hide the others: decode parses each one and names its
// variable in errors. Nested structs with split_words give each field
// exactly one name (Prefix_GROUP_FIELD); explicit envconfig tags would also
// read an unprefixed name. The names here must match those in decode,
// which config_test checks.
type spec struct {
	NATS struct {
		URL            string `split_words:"true" desc:"NATS servers, comma-separated (nats://host:4222); empty starts an embedded nats-server"`
		Creds          string `split_words:"true" desc:"NATS credentials file (user JWT and NKey seed)"`
		Nkey           string `split_words:"true" desc:"file holding an NKey user seed"`
		User           string `split_words:"true" desc:"NATS user name (with NATS_PASSWORD)"`
		Password       string `split_words:"true" desc:"NATS password (secret)"`
		Token          string `split_words:"true" desc:"NATS token (secret)"`
		TlsCa          string `split_words:"true" desc:"PEM CA certificates that verify the NATS servers (default: system roots)"`
		TlsCert        string `split_words:"true" desc:"PEM client certificate for TLS to NATS (with NATS_TLS_KEY)"`
		TlsKey         string `split_words:"true" desc:"PEM key of NATS_TLS_CERT"`
		ConnectTimeout string `split_words:"true" default:"30s" desc:"how long start-up retries an unreachable NATS, then a JetStream cluster that is not ready, before exit 2; 0 tries once"`
		ReconnectWait  string `split_words:"true" default:"2s" desc:"pause between reconnect attempts once connected (forever)"`
		Name           string `split_words:"true" default:"apns-worker" desc:"connection name shown in NATS monitoring"`
	} `split_words:"true"`
	Embedded struct {
		DataDir string `split_words:"true" default:"./data/nats" desc:"embedded nats-server: JetStream storage directory (locked: one process)"`
		Listen  string `split_words:"true" default:"127.0.0.1:4222" desc:"embedded nats-server: host:port producers connect to (no auth, no TLS)"`
	} `split_words:"true"`
	Jobs struct {
		Stream     string `split_words:"true" default:"APNS_JOBS" desc:"jobs stream name (work-queue retention)"`
		Subject    string `split_words:"true" default:"apns.jobs" desc:"subject producers publish jobs to (and below it)"`
		Consumer   string `split_words:"true" default:"apns-worker" desc:"durable consumer name the workers share"`
		AckWait    string `split_words:"true" default:"10s" desc:"redelivery delay of an unacked job: how soon a crashed worker's jobs are resent (held jobs get InProgress)"`
		MaxDeliver string `split_words:"true" default:"10" desc:"attempts before a job is dead-lettered"`
		Backoff    string `split_words:"true" default:"1s,5s,30s,2m,5m" desc:"retry delays after failures, comma-separated, the last repeating"`
	} `split_words:"true"`
	Events struct {
		Stream   string `split_words:"true" default:"APNS_EVENTS" desc:"events stream name"`
		MaxAge   string `split_words:"true" default:"168h" desc:"how long events are kept; 0: until other limits"`
		Subject  string `split_words:"true" default:"apns.events" desc:"prefix of the event subjects (.rejected, .badtokens, .deadletter, .delivered)"`
		Receipts string `split_words:"true" default:"false" desc:"publish a .delivered event per delivered job"`
	} `split_words:"true"`
	APNS struct {
		Mode             string `split_words:"true" desc:"mock (default: in-process gateway, reaches no device), binary or http2"` // no default: Load tells unset from mock
		Environment      string `split_words:"true" default:"production" desc:"production or sandbox: chooses Apple's hosts"`
		Engine           string `split_words:"true" default:"h2" desc:"http2: h2 (the worker's own engine) or std (the reference on x/net's Transport, a fallback)"`
		Addr             string `split_words:"true" desc:"APNs address (binary host:port, http2 https://host[:port]); default Apple's"`
		CaFile           string `split_words:"true" desc:"PEM CA bundle that verifies the APNs server instead of the system roots"`
		CertFile         string `split_words:"true" desc:"client certificate, .p12 or PEM (binary; http2 certificate auth)"`
		CertPassword     string `split_words:"true" desc:"password of a .p12 APNS_CERT_FILE (secret)"`
		KeyFile          string `split_words:"true" desc:"PEM key of a PEM APNS_CERT_FILE without one"`
		P8File           string `split_words:"true" desc:"http2 token auth: the .p8 key from Apple (PKCS#8 or SEC 1, EC P-256)"`
		KeyID            string `split_words:"true" desc:"http2 token auth: the 10-character key id"`
		TeamID           string `split_words:"true" desc:"http2 token auth: the 10-character team id"`
		Topic            string `split_words:"true" desc:"default apns-topic (bundle id); required with token auth"`
		Conns            string `split_words:"true" default:"4" desc:"connections to APNs"`
		AssumedDelivered string `split_words:"true" default:"5s" desc:"binary: wait for an error response before a notification counts as delivered"`
		ConfirmAfter     string `split_words:"true" desc:"binary: confirm with a marker frame after this wait; 0 off (mock: 50ms)"` // default by mode: Load
		IdleTimeout      string `split_words:"true" default:"5m" desc:"idle connection closed (binary) or pinged (http2) after this; 0 never"`
		MaxPayload       string `split_words:"true" desc:"largest payload in bytes (default 2048 binary and mock, 4096 http2)"`
		RequestTimeout   string `split_words:"true" default:"10s" desc:"http2: bound of one request"`
	} `split_words:"true"`
	Feedback struct {
		Addr     string `split_words:"true" desc:"binary: feedback service host:port (default Apple's with Apple's gateway)"`
		Interval string `split_words:"true" default:"1h" desc:"binary: pause between feedback polls; 0 off"`
	} `split_words:"true"`
	Replicas    string `split_words:"true" default:"1" desc:"replicas of the streams and the consumer, 1-5 (more needs a cluster)"`
	MaxInFlight string `split_words:"true" desc:"jobs held between JetStream and their outcome (default 200000 binary and mock, 10000 http2)"`
	HTTPAddr    string `split_words:"true" default:"127.0.0.1:8080" desc:"where /healthz, /readyz and /metrics listen; empty: off"`
	Log         struct {
		Level  string `split_words:"true" default:"info" desc:"debug (one line per job), info, warn or error"`
		Format string `split_words:"true" default:"auto" desc:"auto (text on a terminal, else json), text or json"`
	} `split_words:"true"`
	ShutdownGrace string `split_words:"true" default:"30s" desc:"bound of a graceful stop after SIGTERM or SIGINT"`
	Procs         string `default:"auto" desc:"auto (one P while the worker uses well under a core, fewer thread wake-ups; the runtime's default above) or runtime (GOMAXPROCS as the Go runtime sets it); a GOMAXPROCS variable wins"`
	SocketCalls   string `split_words:"true" default:"direct" desc:"direct (reads and writes to NATS and APNs as direct system calls on Linux, fewer thread wake-ups) or runtime (through Go's net package)"`
	GCFloorMiB    string `envconfig:"GC_FLOOR_MIB" default:"32" desc:"MiB the garbage collector's heap goal is kept at or above while the live heap is small (rarer collections at moderate rates, a lower p99); 0 off; a non-empty GOGC variable turns it off"`
}

// Load reads the environment and validates it. The error, if any, joins an
// *[Error] for each bad variable (see [Errors]); the Config is then nil.
func Load() (*Config, error) {
	var s spec
	if err := envconfig.Process(Prefix, &s); err != nil {
		return nil, err // only for a bad spec: every field is a string
	}
	d := newDecoder()
	c := d.decode(&s)
	if err := d.err(); err != nil {
		return nil, err
	}
	return c, nil
}
