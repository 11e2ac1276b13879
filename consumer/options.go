package consumer

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Protocols of Options.Protocol.
const (
	ProtocolHTTP2  = "http2"
	ProtocolBinary = "binary"
	ProtocolMock   = "mock"
)

// ErrInvalidOption reports a bad Options field.
var ErrInvalidOption = errors.New("consumer: invalid option")

// Options configure a Worker. The zero value of each field takes the
// default given in its comment.
type Options struct {
	// JobsStream is the jobs stream's name (default "APNS_JOBS"). It is
	// created or updated with work-queue retention and file storage.
	JobsStream string
	// JobsSubject is where producers publish jobs (default "apns.jobs");
	// the stream takes it and everything below it (<subject>.>).
	JobsSubject string
	// JobsDuplicates is the jobs stream's de-duplication window for
	// Nats-Msg-Id (default 2 minutes).
	JobsDuplicates time.Duration
	// Durable is the pull consumer every worker shares (default
	// "apns-worker").
	Durable string

	// EventsStream is the events stream's name (default "APNS_EVENTS"),
	// created or updated with limits retention and file storage.
	EventsStream string
	// EventsSubject is the prefix of the event subjects (default
	// "apns.events"): <prefix>.rejected, .badtokens, .deadletter and
	// .delivered. It must not overlap JobsSubject.
	EventsSubject string
	// EventsMaxAge is how long events are kept (default 7 days when zero);
	// a negative value means no age limit (the stream's MaxAge 0).
	EventsMaxAge time.Duration
	// EventsDuplicates is the events stream's de-duplication window
	// (default 10 minutes): a job redelivered within it does not publish its
	// event twice. At most EventsMaxAge, if that is limited.
	EventsDuplicates time.Duration

	// Replicas of both streams (default 1; 3 in a cluster).
	Replicas int

	// AckWait is how long the server waits for a job's ack before it
	// redelivers it (default 60 s). It must exceed the engine's
	// assumed-delivered window. A ticker every AckWait/6 sends InProgress
	// for jobs that have waited two ticks or more: a job's first comes
	// between AckWait/6 and AckWait/3 after the worker received it, then
	// one every AckWait/3, which keeps a job held by a slow engine ours.
	AckWait time.Duration
	// MaxDeliver is the deliveries a job gets before it is dead-lettered
	// (default 10), and no sooner than its back-off schedule allows since
	// the job was stored (see youngerThanRetries). The worker enforces it
	// (publish the dead letter, then Term); the server-side consumer keeps MaxDeliver unlimited so a job is
	// never stranded in the work-queue stream (nats-server #5564).
	MaxDeliver int
	// Backoff is the NakWithDelay schedule for failed jobs: the delay after
	// attempt i is Backoff[i-1], the last entry repeating (default 1s, 5s,
	// 15s, 30s, 1m, 2m, 5m).
	Backoff []time.Duration
	// MaxInFlight is how many jobs the engine holds at most (its
	// WithMaxInFlight, default 100 000); it sizes MaxAckPending. It also
	// bounds the jobs a worker holds from receipt to ack, nak or term: the
	// pull subscription stops taking jobs while MaxInFlight are held.
	MaxInFlight int
	// PullMaxMessages is the client pull buffer (default 1 000, at most
	// MaxInFlight). The worker takes jobs out of it at once while it holds
	// fewer than MaxInFlight; only once it holds MaxInFlight do jobs wait
	// in it, not yet tracked for InProgress, so keep it small relative to
	// what the engine drains in AckWait.
	PullMaxMessages int
	// MaxAckPending is the server's limit on jobs delivered and not yet
	// acked, across all workers of the durable (default 4 × (MaxInFlight +
	// PullMaxMessages), enough for four workers).
	MaxAckPending int

	// Receipts turns on a ReceiptEvent for each delivered job (default off).
	Receipts bool
	// Protocol names the engine's protocol in events: ProtocolHTTP2,
	// ProtocolBinary or ProtocolMock (the binary engine against the
	// in-process mock gateway). It also chooses the limits jobs are checked
	// against before they reach the engine (apns.HTTP2Limits, or
	// apns.BinaryLimits for binary and mock, whose payload limit the
	// engine checks).
	Protocol string
	// MaxPayload is the largest payload in bytes a job may carry
	// (APNS_WORKER_APNS_MAX_PAYLOAD), checked before the engine (0: the
	// protocol's, 4096 for HTTP/2 with 5120 for VoIP, or the binary
	// engine's own). Below HTTP/2's 4096 it caps VoIP too.
	MaxPayload int
	// DefaultTopic is the engine's default topic, if it has one: a job
	// without a topic is checked against it for its push type's suffix
	// (apns.CheckTopic). Empty: such jobs are checked for everything but
	// the suffix, which APNs then judges.
	DefaultTopic string

	// DrainTimeout bounds how long, once Run's ctx is done, buffered jobs
	// may wait for the engine to accept them; after it they are naked
	// (default 10 s).
	DrainTimeout time.Duration
	// EventTimeout bounds the wait for an event's PubAck; a job whose event
	// is not confirmed in time is naked for a retry (default 10 s).
	EventTimeout time.Duration
	// SetupTimeout bounds creating the streams and the consumer in New
	// (default 10 s).
	SetupTimeout time.Duration
	// CredentialsProbeInterval is how often, while the engine reports its
	// credentials refused (apns.Stats.CredentialsErr), the worker passes
	// one job to Send as a probe (default 30 s). Between probes it holds
	// the jobs it has (kept alive with InProgress) and takes new ones only
	// while it holds fewer than MaxInFlight, so a refusal neither spins
	// jobs nor burns their attempts; a probe the engine lets through
	// clears the refusal once APNs takes it. At least 10 ms.
	CredentialsProbeInterval time.Duration

	// Logger (default: discard).
	Logger *slog.Logger
	// Metrics (default: collectors that are not registered anywhere).
	Metrics *Metrics

	// eventRetryBase is the first wait before an event is published again
	// (default 100 ms; tests shorten it).
	eventRetryBase time.Duration
}

var defaultBackoff = []time.Duration{
	time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute,
}

// withDefaults fills zero fields and validates the rest.
func (o Options) withDefaults() (Options, error) {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	defDur := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(n *int, v int) {
		if *n == 0 {
			*n = v
		}
	}
	def(&o.JobsStream, "APNS_JOBS")
	def(&o.JobsSubject, "apns.jobs")
	def(&o.Durable, "apns-worker")
	def(&o.EventsStream, "APNS_EVENTS")
	def(&o.EventsSubject, "apns.events")
	def(&o.Protocol, "unknown")
	defDur(&o.JobsDuplicates, 2*time.Minute)
	defDur(&o.EventsMaxAge, 7*24*time.Hour)
	defDur(&o.EventsDuplicates, 10*time.Minute)
	defDur(&o.AckWait, time.Minute)
	defDur(&o.DrainTimeout, 10*time.Second)
	defDur(&o.EventTimeout, 10*time.Second)
	defDur(&o.SetupTimeout, 10*time.Second)
	defDur(&o.eventRetryBase, 100*time.Millisecond)
	defDur(&o.CredentialsProbeInterval, 30*time.Second)
	defInt(&o.Replicas, 1)
	defInt(&o.MaxDeliver, 10)
	defInt(&o.MaxInFlight, 100_000)
	defInt(&o.PullMaxMessages, min(1000, o.MaxInFlight))
	defInt(&o.MaxAckPending, 4*(o.MaxInFlight+o.PullMaxMessages))
	if len(o.Backoff) == 0 {
		o.Backoff = defaultBackoff
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.EventsMaxAge > 0 && o.EventsDuplicates > o.EventsMaxAge {
		o.EventsDuplicates = o.EventsMaxAge
	}

	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidOption}, args...)...))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"JobsDuplicates", o.JobsDuplicates},
		{"EventsDuplicates", o.EventsDuplicates}, {"AckWait", o.AckWait},
		{"DrainTimeout", o.DrainTimeout}, {"EventTimeout", o.EventTimeout},
		{"SetupTimeout", o.SetupTimeout},
		{"CredentialsProbeInterval", o.CredentialsProbeInterval},
	} {
		if d.v < 0 {
			bad("%s %s < 0", d.name, d.v)
		}
	}
	if o.CredentialsProbeInterval > 0 && o.CredentialsProbeInterval < 10*time.Millisecond {
		bad("CredentialsProbeInterval %s < 10ms", o.CredentialsProbeInterval)
	}
	if o.AckWait < time.Second {
		bad("AckWait %s < 1s", o.AckWait)
	}
	for _, n := range []struct {
		name string
		v    int
	}{
		{"Replicas", o.Replicas}, {"MaxDeliver", o.MaxDeliver}, {"MaxInFlight", o.MaxInFlight},
		{"PullMaxMessages", o.PullMaxMessages}, {"MaxAckPending", o.MaxAckPending},
	} {
		if n.v < 1 {
			bad("%s %d < 1", n.name, n.v)
		}
	}
	if o.MaxPayload < 0 {
		bad("MaxPayload %d < 0", o.MaxPayload)
	}
	for i, d := range o.Backoff {
		if d <= 0 {
			bad("Backoff[%d] %s <= 0", i, d)
		}
	}
	if o.JobsSubject == o.EventsSubject ||
		strings.HasPrefix(o.EventsSubject, o.JobsSubject+".") ||
		strings.HasPrefix(o.JobsSubject, o.EventsSubject+".") {
		bad("EventsSubject %q overlaps JobsSubject %q", o.EventsSubject, o.JobsSubject)
	}
	for _, s := range []struct{ name, v string }{
		{"JobsSubject", o.JobsSubject}, {"EventsSubject", o.EventsSubject},
	} {
		if strings.ContainsAny(s.v, "*> \t") || strings.HasPrefix(s.v, ".") || strings.HasSuffix(s.v, ".") {
			bad("%s %q must be a literal subject", s.name, s.v)
		}
	}
	return o, errors.Join(errs...)
}

// backoff returns the NakWithDelay delay after attempt n (1-based).
func (o *Options) backoff(n uint64) time.Duration {
	i := int(min(n, uint64(len(o.Backoff)))) - 1
	return o.Backoff[max(i, 0)]
}

// retryHorizon is the least time MaxDeliver failed attempts take: the
// back-off delays after the first MaxDeliver-1 of them.
func (o *Options) retryHorizon() time.Duration {
	var d time.Duration
	for n := 1; n < o.MaxDeliver; n++ {
		d += o.backoff(uint64(n))
	}
	return d
}

func (o *Options) subject(kind string) string { return o.EventsSubject + "." + kind }
