// Package feedback reads Apple's legacy feedback service: the device tokens
// whose app is gone, with the time APNs found out.
//
// On each connection the service sends 38-byte tuples (4-byte big-endian
// UNIX seconds, 2-byte token length, 32-byte token) and closes; the list is
// cleared once read. [Client.Fetch] reads one such list; a [Poller] fetches
// on an interval and hands the bad tokens to a function.
//
// Apple retired the binary provider API, feedback included, in March 2021;
// this package serves the binary engine, compatible gateways and tests (see
// package apnstest's feedback server). It knows nothing of NATS.
package feedback

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/jetpush/apns-worker/apns"
)

// Apple's feedback services.
const (
	Production = "feedback.push.apple.com:2196"
	Sandbox    = "feedback.sandbox.push.apple.com:2196"
)

var (
	// ErrMalformed reports a response that is not a sequence of tuples: a
	// wrong token length, garbage, or (also wrapping io.ErrUnexpectedEOF)
	// a connection closed mid-tuple. Tokens read before it are returned
	// with it.
	ErrMalformed = errors.New("feedback: malformed response")
	// ErrTooMany reports a response longer than WithMaxTokens allows.
	ErrTooMany = errors.New("feedback: too many tuples")
	// ErrInvalidOption reports a bad constructor argument or option.
	ErrInvalidOption = errors.New("feedback: invalid option")
)

// Option configures a Client.
type Option func(*options) error

type options struct {
	rootCAs      *x509.CertPool
	dialTimeout  time.Duration
	readTimeout  time.Duration
	fetchTimeout time.Duration
	tokenLen     int
	maxTokens    int
	log          *slog.Logger
}

// WithRootCAs sets the CAs that verify the service's certificate (default:
// the system roots). Tests pass the apnstest server's pool.
func WithRootCAs(p *x509.CertPool) Option {
	return func(o *options) error {
		o.rootCAs = p
		return nil
	}
}

// WithDialTimeout bounds connecting, TLS handshake included (default 10s).
// A deadline on Fetch's context applies as well.
func WithDialTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: dial timeout %v <= 0", ErrInvalidOption, d)
		}
		o.dialTimeout = d
		return nil
	}
}

// WithReadTimeout bounds the wait for each read from the service (default
// 30s), so a stalled server cannot hold Fetch forever when its context has
// no deadline.
func WithReadTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: read timeout %v <= 0", ErrInvalidOption, d)
		}
		o.readTimeout = d
		return nil
	}
}

// WithFetchTimeout bounds a whole Fetch, connecting included (default
// 30s). Apple's service sends its tuples at once and closes; one that
// keeps the connection open, trickling bytes, would otherwise hold the
// tuples read so far (which it has forgotten) for as long as it likes.
// Fetch then returns them with context.DeadlineExceeded, and the next
// Fetch reads on where the service left off.
func WithFetchTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: fetch timeout %v <= 0", ErrInvalidOption, d)
		}
		o.fetchTimeout = d
		return nil
	}
}

// WithTokenLen sets the device-token length every tuple must have (default
// 32, as Apple sends); 0 accepts any length from 1 to apns.MaxTokenLen. A
// tuple of another length is skipped, and the tuples after it read: Fetch
// returns them with an error wrapping ErrMalformed that counts the skipped.
func WithTokenLen(n int) Option {
	return func(o *options) error {
		if n < 0 || n > apns.MaxTokenLen {
			return fmt.Errorf("%w: token length %d, want 0 to %d", ErrInvalidOption, n, apns.MaxTokenLen)
		}
		o.tokenLen = n
		return nil
	}
}

// WithMaxTokens bounds the tuples one Fetch reads (default 1 000 000), and
// so its memory; beyond it Fetch returns those read with ErrTooMany.
func WithMaxTokens(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("%w: max tokens %d < 1", ErrInvalidOption, n)
		}
		o.maxTokens = n
		return nil
	}
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalidOption)
		}
		o.log = l
		return nil
	}
}

// Client fetches bad tokens from one feedback service. It holds no
// connection between fetches and is safe for concurrent use.
type Client struct {
	addr string
	tls  *tls.Config
	o    options
}

// NewClient returns a client for the service at addr ("host:port", e.g.
// Production or Sandbox) using the provider certificate cert, as loaded by
// apns.LoadCertificate. It does not connect.
func NewClient(addr string, cert tls.Certificate, opts ...Option) (*Client, error) {
	o := options{
		dialTimeout:  10 * time.Second,
		readTimeout:  30 * time.Second,
		fetchTimeout: 30 * time.Second,
		tokenLen:     32,
		maxTokens:    1_000_000,
		log:          slog.New(slog.DiscardHandler),
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	conf, err := apns.ClientTLSConfig(addr, cert, o.rootCAs)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	return &Client{addr: addr, tls: conf, o: o}, nil
}

// Addr returns the service address the client connects to.
func (c *Client) Addr() string { return c.addr }

// Fetch connects, reads tuples until the service closes the connection and
// returns them in order; the service forgets what it sent.
//
// On an error Fetch still returns the tokens read before it: the service
// will not send them again. Errors wrap ErrMalformed (plus
// io.ErrUnexpectedEOF when the connection closed mid-tuple), ErrTooMany,
// apns.ErrCredentials when the service refused the client certificate, the
// context's error when ctx ended (it closes the connection),
// context.DeadlineExceeded after WithFetchTimeout, or the network error.
func (c *Client) Fetch(ctx context.Context) ([]BadToken, error) {
	toks, err := c.fetch(ctx)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
			err = fmt.Errorf("%w (%w)", ctxErr, err)
		}
		err = fmt.Errorf("feedback: fetch from %s: %w", c.addr, err)
		c.o.log.LogAttrs(ctx, slog.LevelDebug, "feedback fetch failed",
			slog.String("addr", c.addr), slog.Int("tokens", len(toks)), slog.Any("error", err))
		return toks, err
	}
	c.o.log.LogAttrs(ctx, slog.LevelDebug, "feedback fetched",
		slog.String("addr", c.addr), slog.Int("tokens", len(toks)))
	return toks, nil
}

func (c *Client) fetch(ctx context.Context) ([]BadToken, error) {
	ctx, cancelFetch := context.WithTimeout(ctx, c.o.fetchTimeout)
	defer cancelFetch()
	dctx, cancel := context.WithTimeout(ctx, c.o.dialTimeout)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(dctx, "tcp", c.addr)
	if err != nil {
		if dctx.Err() != nil && ctx.Err() == nil {
			return nil, fmt.Errorf("no connection within the dial timeout (%v): %w", c.o.dialTimeout, err)
		}
		return nil, err
	}
	defer raw.Close()
	// Cancelling ctx closes the connection, ending any read or handshake.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()

	conn := tls.Client(raw, c.tls)
	if err := conn.HandshakeContext(dctx); err != nil {
		if dctx.Err() != nil && ctx.Err() == nil {
			return nil, fmt.Errorf("tls handshake: no answer within the dial timeout (%v): %w", c.o.dialTimeout, err)
		}
		return nil, c.credentials(fmt.Errorf("tls handshake: %w", err))
	}
	r := bufio.NewReaderSize(&deadlineReader{conn: conn, ctx: ctx, idle: c.o.readTimeout}, 4096)
	toks, err := readAll(r, c.o.tokenLen, c.o.maxTokens)
	if cerr := ctx.Err(); err != nil && cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w (%w)", cerr, err) // the connection closed by the fetch timeout, or by ctx
	}
	return toks, c.credentials(err)
}

// credentials marks a refused client certificate (with TLS 1.3 it shows on
// the first read) as apns.ErrCredentials.
func (c *Client) credentials(err error) error {
	if err != nil && apns.CertificateRefused(err) {
		return fmt.Errorf("%w: %w", apns.ErrCredentials, err)
	}
	return err
}

// deadlineReader sets the read deadline before each read: the earlier of
// now+idle and ctx's deadline.
type deadlineReader struct {
	conn net.Conn
	ctx  context.Context
	idle time.Duration
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	dl := time.Now().Add(d.idle)
	ctxDL, byCtx := d.ctx.Deadline()
	if byCtx = byCtx && ctxDL.Before(dl); byCtx {
		dl = ctxDL
	}
	if err := d.conn.SetReadDeadline(dl); err != nil {
		return 0, err
	}
	n, err := d.conn.Read(p)
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		return n, err
	}
	if byCtx {
		return n, fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	return n, fmt.Errorf("no data for %v: %w", d.idle, err)
}
