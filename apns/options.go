package apns

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/jetpush/apns-worker/internal/rawconn"
)

// Option configures an engine. The options of one engine (WithAssumeDelivered
// is the binary engine's, WithTopic the HTTP/2 engines') fail the
// constructor of another with ErrInvalidOption: none is ignored.
type Option func(*options) error

// engineKind is a set of engines, for the options that only some use.
type engineKind uint8

const (
	binaryEngine engineKind = 1 << iota
	http2Engine             // HTTP2Engine
	stdEngine               // StdEngine, the reference on x/net's Transport

	http2Family = http2Engine | stdEngine
)

func (k engineKind) String() string {
	switch k {
	case binaryEngine:
		return "binary"
	case http2Engine:
		return "HTTP/2"
	case stdEngine:
		return "std"
	}
	return fmt.Sprintf("engineKind(%d)", uint8(k))
}

// engineOnly is an option that only some engines take.
type engineOnly struct {
	name    string
	engines engineKind
}

// options holds the settings shared by both engines; each engine keeps its
// own in a sub-struct defined beside it.
type options struct {
	outcome     OutcomeFunc
	log         *slog.Logger
	rootCAs     *x509.CertPool
	conns       int
	maxInFlight int
	maxRetries  int
	now         func() time.Time
	// runtimeSockets: the connections read and write through the net
	// package's system calls, not direct ones (WithDirectSocketCalls).
	runtimeSockets bool

	binary binaryOptions // binary.go
	h2     http2Options  // http2.go

	only []engineOnly // the engine-specific options given
}

// only notes that the option name is for these engines alone.
func (o *options) onlyFor(engines engineKind, name string) {
	o.only = append(o.only, engineOnly{name, engines})
}

// checkFor fails if an option for other engines than this one was given.
func (o *options) checkFor(engine engineKind) error {
	for _, u := range o.only {
		if u.engines&engine == 0 {
			return fmt.Errorf("%w: %s is not an option of the %s engine", ErrInvalidOption, u.name, engine)
		}
	}
	return nil
}

func defaultOptions() options {
	return options{
		outcome:     func(Outcome) {},
		log:         slog.New(slog.DiscardHandler),
		conns:       4,
		maxInFlight: 0, // engine default
		maxRetries:  3,
		now:         time.Now,
	}
}

func applyOptions(o *options, opts []Option) error {
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return err
		}
	}
	return nil
}

// WithOutcomeFunc sets where outcomes go (default: discarded).
func WithOutcomeFunc(f OutcomeFunc) Option {
	return func(o *options) error {
		if f == nil {
			return fmt.Errorf("%w: nil OutcomeFunc", ErrInvalidOption)
		}
		o.outcome = f
		return nil
	}
}

// WithLogger sets the engine's logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalidOption)
		}
		o.log = l
		return nil
	}
}

// WithRootCAs sets the CAs that verify APNs' server certificate (default:
// the system roots). Tests pass the apnstest server's pool.
func WithRootCAs(p *x509.CertPool) Option {
	return func(o *options) error {
		o.rootCAs = p
		return nil
	}
}

// WithConns sets the number of connections to APNs (default 4).
func WithConns(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("%w: conns %d < 1", ErrInvalidOption, n)
		}
		o.conns = n
		return nil
	}
}

// WithMaxInFlight bounds how many accepted notifications may wait for their
// outcome at once; Send blocks beyond it.
func WithMaxInFlight(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("%w: max in flight %d < 1", ErrInvalidOption, n)
		}
		o.maxInFlight = n
		return nil
	}
}

// WithMaxRetries sets how many times a notification is sent again after a
// temporary error before its outcome is failed (default 3).
func WithMaxRetries(n int) Option {
	return func(o *options) error {
		if n < 0 {
			return fmt.Errorf("%w: max retries %d < 0", ErrInvalidOption, n)
		}
		o.maxRetries = n
		return nil
	}
}

// WithClock sets the engine's clock (tests).
func WithClock(now func() time.Time) Option {
	return func(o *options) error {
		if now == nil {
			return fmt.Errorf("%w: nil clock", ErrInvalidOption)
		}
		o.now = now
		return nil
	}
}

// WithDirectSocketCalls chooses how the engines read and write their
// connections to APNs: with direct system calls on the non-blocking socket
// (on, the default; Linux only, see package internal/rawconn), which spare
// the Go scheduler's thread wake-ups at moderate rates, or (off) through
// the net package as any Go program. The two behave alike; off is a way
// back should a platform misbehave.
func WithDirectSocketCalls(on bool) Option {
	return func(o *options) error {
		o.runtimeSockets = !on
		return nil
	}
}

// socketConn is c as the engine's options want it: with direct socket
// calls unless WithDirectSocketCalls(false).
func (o *options) socketConn(c net.Conn) net.Conn {
	if o.runtimeSockets {
		return c
	}
	return rawconn.Wrap(c)
}
