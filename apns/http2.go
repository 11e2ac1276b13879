package apns

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetpush/apns-worker/apns/internal/h2conn"
)

// APNs provider API hosts (port 443; Apple also listens on 2197, which a
// base URL such as "https://api.push.apple.com:2197" selects).
const (
	HostProduction = "https://api.push.apple.com"
	HostSandbox    = "https://api.sandbox.push.apple.com"
)

// http2Options are the HTTP/2 engine's own settings.
type http2Options struct {
	topic        string
	pushType     PushType
	timeout      time.Duration
	pingInterval time.Duration
	proxy        *url.URL
	maxStreams   uint32
	backoffMin   time.Duration
	backoffMax   time.Duration
	dialTimeout  time.Duration
}

func defaultHTTP2Options() http2Options {
	return http2Options{
		timeout:      15 * time.Second,
		pingInterval: time.Minute,
		maxStreams:   1000,
		backoffMin:   100 * time.Millisecond,
		backoffMax:   5 * time.Second,
		dialTimeout:  10 * time.Second,
	}
}

// WithTopic sets the apns-topic sent when a notification has none (with
// token auth a topic is required; with certificate auth APNs defaults to
// the certificate's topic).
func WithTopic(topic string) Option {
	return func(o *options) error {
		o.onlyFor(http2Family, "WithTopic")
		if !printable(topic) {
			return fmt.Errorf("%w: topic %q", ErrInvalidOption, topic)
		}
		o.h2.topic = topic
		return nil
	}
}

// WithPushType sets the apns-push-type sent when a notification has none
// (default: none sent; APNs assumes alert).
func WithPushType(p PushType) Option {
	return func(o *options) error {
		o.onlyFor(http2Family, "WithPushType")
		if p == "" || !p.Valid() {
			return fmt.Errorf("%w: push type %q", ErrInvalidOption, p)
		}
		o.h2.pushType = p
		return nil
	}
}

// WithRequestTimeout bounds the wait for APNs' answer once a notification
// is written (default 15s); a timeout is a temporary failure, retried.
func WithRequestTimeout(d time.Duration) Option {
	return func(o *options) error {
		o.onlyFor(http2Family, "WithRequestTimeout")
		if d <= 0 {
			return fmt.Errorf("%w: request timeout %v", ErrInvalidOption, d)
		}
		o.h2.timeout = d
		return nil
	}
}

// WithPingInterval sets after how long without a frame from APNs a
// connection is probed with a PING (default 1 minute); a PING unanswered
// within the request timeout closes the connection.
func WithPingInterval(d time.Duration) Option {
	return func(o *options) error {
		o.onlyFor(http2Family, "WithPingInterval")
		if d <= 0 {
			return fmt.Errorf("%w: ping interval %v", ErrInvalidOption, d)
		}
		o.h2.pingInterval = d
		return nil
	}
}

// WithProxy connects through an HTTP proxy with CONNECT, e.g.
// "http://user:pass@proxy:3128" (user info is sent as basic
// Proxy-Authorization).
func WithProxy(proxyURL string) Option {
	return func(o *options) error {
		o.onlyFor(http2Family, "WithProxy")
		u, err := url.Parse(proxyURL)
		if err != nil || u.Scheme != "http" || u.Host == "" {
			return fmt.Errorf("%w: proxy %q: want http://host:port", ErrInvalidOption, proxyURL)
		}
		o.h2.proxy = u
		return nil
	}
}

// WithMaxConcurrentStreams caps the requests in flight on one connection
// (default 1000); the server's SETTINGS_MAX_CONCURRENT_STREAMS, when lower,
// wins.
func WithMaxConcurrentStreams(n int) Option {
	return func(o *options) error {
		o.onlyFor(http2Engine, "WithMaxConcurrentStreams")
		if n < 1 || n > 1<<20 {
			return fmt.Errorf("%w: max concurrent streams %d", ErrInvalidOption, n)
		}
		o.h2.maxStreams = uint32(n)
		return nil
	}
}

// WithRetryBackoff sets the delay before the first retry of a temporary
// failure and the cap of its doubling (default 100ms, 5s); reconnections
// back off the same way.
func WithRetryBackoff(first, max time.Duration) Option {
	return func(o *options) error {
		o.onlyFor(http2Family, "WithRetryBackoff")
		if first <= 0 || max < first {
			return fmt.Errorf("%w: retry backoff %v..%v", ErrInvalidOption, first, max)
		}
		o.h2.backoffMin, o.h2.backoffMax = first, max
		return nil
	}
}

// HTTP2Engine sends notifications with Apple's HTTP/2 provider API over a
// pool of connections (WithConns), each an h2conn.Conn driven frame by
// frame on x/net's framer and hpack, without net/http: one writer and one
// reader goroutine per connection, requests handed out from one queue,
// outcomes reported from the connections. One connection at a time takes
// from the queue, and hands on its turn when it is full, when requests
// wait as it writes, or once it has 64 streams open: moderate traffic
// stays on one connection (fewer, larger writes and reads), bursts and
// heavy traffic spread over the pool.
//
// Each connection honours the server's SETTINGS once validated (max
// concurrent streams, which may drop to 1 at any time, windows, frame and
// table sizes; an invalid one ends it with GOAWAY), sends PING when idle
// (WithPingInterval) and is replaced when it fails or after GOAWAY.
// Answers map to outcomes in one place (reasons.go):
//
//   - 200: delivered, with the apns-id APNs returned;
//   - Apple's JSON reason with 400, 404, 405, 410, 413 or 403 Forbidden: a
//     *RejectionError (BadToken for BadDeviceToken, Unregistered,
//     ExpiredToken; 410 carries Apple's timestamp);
//   - 403 certificate and provider-token reasons: failed with
//     ErrCredentials; Send and every later outcome fail with it too, and
//     Stats().CredentialsErr is set, but for one notification let through
//     every minute (on the WithClock clock) to probe the credentials: a 200
//     for a request written after the refusal clears it;
//   - a TLS alert refusing the client certificate: the same, probed by
//     redialling with back-off (up to 30s); a completed handshake clears it;
//   - 403 ExpiredProviderToken: a new token is minted (at most once, never
//     within TokenMinInterval of the last) and the notification sent again;
//   - 429, 500, 503, 400 IdleTimeout, RST_STREAM, a response header block
//     over 64 KiB, timeouts (WithRequestTimeout) and lost connections: sent
//     again after a back-off (WithRetryBackoff), up to WithMaxRetries times,
//     then failed wrapping ErrRetriesExhausted and the cause (a
//     *StatusError, ErrRequestTimeout, ErrConnLost);
//   - any other answer (no Apple JSON reason, a status Apple does not use
//     for it: a proxy's 502, an HTML 404): an engine fault, never a
//     rejection; retried like a 503 with a *StatusError matching
//     ErrNotAPNs, counted in Stats().Faults, logged at most once a second.
//
// Streams refused without being processed (REFUSED_STREAM, above a GOAWAY's
// last stream id) are sent again at once, on another connection, without
// using up retries.
type HTTP2Engine struct {
	c         *core
	o         options
	addr      string // host:port to dial
	authority string // :authority
	tlsConf   *tls.Config
	tokens    *tokenSource  // nil with certificate auth
	intake    chan struct{} // the connections' turn to take from the queue

	stop     chan struct{}   // closed: connections shut down
	stopOnce sync.Once       // closes stop
	ctx      context.Context // cancelled with stop; bounds dials
	halt     context.CancelFunc
	wg       sync.WaitGroup // runConn goroutines

	connected  atomic.Int32
	reconnects atomic.Uint64
}

var _ Engine = (*HTTP2Engine)(nil)

// NewHTTP2Engine starts an engine for the provider API at baseURL
// (HostProduction, HostSandbox, or a test server's URL) with the given
// credentials. Connections are dialled in the background; Send queues
// until one is up.
func NewHTTP2Engine(baseURL string, auth Auth, opts ...Option) (*HTTP2Engine, error) {
	e := &HTTP2Engine{stop: make(chan struct{}), intake: h2conn.NewIntake()}
	s, err := setupHTTP2(&e.o, http2Engine, baseURL, auth, opts)
	if err != nil {
		return nil, err
	}
	e.c, e.addr, e.authority, e.tlsConf, e.tokens = s.core, s.addr, s.u.Host, s.tlsConf, s.tokens
	e.c.withStreams()
	e.ctx, e.halt = context.WithCancel(context.Background())
	for range e.o.conns {
		e.wg.Add(1)
		go e.runConn()
	}
	return e, nil
}

// Send validates n and queues it, blocking while MaxInFlight notifications
// await their outcome. Beyond the Engine contract it fails, with an error
// wrapping ErrCredentials, while APNs refuses the credentials (but for one
// probe every 30 s).
func (e *HTTP2Engine) Send(ctx context.Context, n *Notification, ref any) error {
	return e.c.send(ctx, n, ref)
}

// Close stops intake, waits until every accepted notification has its
// outcome or ctx ends, then fails the rest with ErrClosed and closes the
// connections. It returns an error wrapping ctx's if it had to fail some.
func (e *HTTP2Engine) Close(ctx context.Context) error {
	return e.c.close(ctx, func() {
		e.stopOnce.Do(func() {
			e.halt()
			close(e.stop)
		})
		e.wg.Wait()
	})
}

// Stats is a snapshot for health checks and metrics.
func (e *HTTP2Engine) Stats() Stats {
	s := Stats{
		Conns:      e.o.conns,
		Connected:  int(e.connected.Load()),
		Reconnects: e.reconnects.Load(),
	}
	e.c.stats(&s)
	return s
}

// A connection that ends within minConnLife, or without answering any of
// the streams it opened, counts as a failed connection attempt and backs
// off; one that opened no stream (idle) and lived minConnLife, or lived
// idleConnLife, backs off only as a first failure.
const (
	minConnLife  = time.Second
	idleConnLife = time.Minute
)

// credRedialMax caps the back-off of redials after a TLS refusal.
const credRedialMax = 30 * time.Second

// runConn keeps one pool slot connected until the engine stops.
func (e *HTTP2Engine) runConn() {
	defer e.wg.Done()
	failures := 0
	for {
		select {
		case <-e.stop:
			return
		default:
		}
		c, err := e.dial()
		if err == nil {
			e.c.gate.reconnected() // the handshake passed: a TLS refusal is over
			start := time.Now()
			e.connected.Add(1)
			err = c.Serve(e.ctx)
			e.connected.Add(-1)
			e.reconnects.Add(1)
			if e.ctx.Err() != nil {
				return
			}
			// Only a connection that did some work resets the back-off: a
			// server that ends every connection at once (GOAWAY right
			// after SETTINGS, a close) must not get a handshake storm.
			// One that lived but was never used (a load balancer closing
			// idle connections) did not fail either.
			lived := time.Since(start)
			idle := c.Opened() == 0
			switch {
			case c.Answered() > 0 && lived >= minConnLife:
				failures = 0
				if c.Clean() {
					continue // GOAWAY drained or stream ids used up: redial now
				}
			case c.Answered() > 0 || lived >= idleConnLife || idle && lived >= minConnLife:
				failures = 0 // some use, or an idle life: back off a little
			}
			if c.Clean() {
				// A graceful drain is no failure: h2conn logged the GOAWAY.
				if !e.wait(e.c.retryBackoff.Delay(failures + 1)) {
					return
				}
				failures++
				continue
			}
		}
		if e.ctx.Err() != nil {
			return
		}
		failures++
		delay := e.c.retryBackoff.Delay(failures)
		if CertificateRefused(err) {
			// Redial, slowly: the certificate may be renewed, or the
			// refusal a passing fault of APNs.
			e.c.closeGate(fmt.Errorf("%w: TLS: %w", ErrCredentials, err), false, nil)
			delay = Backoff{Min: e.o.h2.backoffMin, Max: max(e.o.h2.backoffMax, credRedialMax)}.Delay(failures)
		} else if err := e.c.gate.refusal(); err != nil {
			e.c.failQueued(err)
		}
		e.o.log.LogAttrs(context.Background(), slog.LevelWarn, "apns connection failed",
			slog.String("addr", e.addr), slog.Int("failures", failures), slog.String("error", errString(err)))
		if !e.wait(delay) {
			return
		}
	}
}

// wait sleeps for d; it reports false if the engine stopped meanwhile.
func (e *HTTP2Engine) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-e.stop:
		return false
	case <-t.C:
		return true
	}
}

func errString(err error) string {
	if err == nil {
		return "closed"
	}
	return err.Error()
}

// dial connects (through the proxy, if any), handshakes TLS with ALPN h2,
// exchanges the connection prefaces and returns a conn ready to serve.
func (e *HTTP2Engine) dial() (*h2conn.Conn[*delivery], error) {
	ctx, cancel := context.WithTimeout(e.ctx, e.o.h2.dialTimeout)
	defer cancel()
	nc, err := dialTCP(ctx, e.addr, e.o.h2.proxy, e.o.socketConn)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(nc, e.tlsConf)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		nc.Close()
		return nil, fmt.Errorf("apns: %s did not negotiate h2 (ALPN %q)", e.addr, p)
	}
	return h2conn.Handshake(ctx, tc, h2conn.Config[*delivery]{
		Queue:             e.c.queue,
		Owner:             h2Owner{e},
		MaxStreams:        e.o.h2.maxStreams,
		RequestTimeout:    e.o.h2.timeout,
		PingInterval:      e.o.h2.pingInterval,
		MaxHeaderListSize: maxHeaderListSize,
		MaxBody:           maxAnswerBody,
		KeepHeaders:       []string{apnsIDHeader: "apns-id"},
		Logger:            e.o.log,
		Intake:            e.intake,
	})
}

// maxHeaderListSize is the response header list size the engine
// advertises: a larger one fails that request only, retried.
const maxHeaderListSize = 64 << 10

// parseBaseURL checks an engine's https://host[:port] base URL and returns
// it with the host:port to dial.
func parseBaseURL(baseURL string) (*url.URL, string, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, "", fmt.Errorf("%w: base URL %q: want https://host[:port]", ErrInvalidOption, baseURL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	return u, addr, nil
}

// http2Credentials returns the TLS configuration (with ALPN h2 and, with
// certificate auth, the client certificate) and, with token auth, the
// provider-token source of an HTTP/2 engine.
func http2Credentials(u *url.URL, addr string, auth Auth, o *options) (*tls.Config, *tokenSource, error) {
	if auth.cert != nil {
		conf, err := ClientTLSConfig(addr, *auth.cert, o.rootCAs)
		if err != nil {
			return nil, nil, err
		}
		conf.NextProtos = []string{"h2"}
		return conf, nil, nil
	}
	tokens := newTokenSource(auth, o.now)
	if _, err := tokens.token(); err != nil {
		return nil, nil, err
	}
	conf := &tls.Config{ServerName: u.Hostname(), RootCAs: o.rootCAs, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
	return conf, tokens, nil
}

// dialTCP connects to addr, through an HTTP proxy's tunnel when proxy is
// set; socket makes the connection the engine's options want
// (options.socketConn).
func dialTCP(ctx context.Context, addr string, proxy *url.URL, socket func(net.Conn) net.Conn) (net.Conn, error) {
	var d net.Dialer
	if proxy != nil {
		return dialProxy(ctx, &d, proxy, addr, socket)
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return socket(nc), nil
}

// dialProxy opens a tunnel to addr with HTTP CONNECT.
func dialProxy(ctx context.Context, d *net.Dialer, p *url.URL, addr string, socket func(net.Conn) net.Conn) (net.Conn, error) {
	nc, err := d.DialContext(ctx, "tcp", p.Host)
	if err != nil {
		return nil, fmt.Errorf("apns: proxy: %w", err)
	}
	nc = socket(nc)
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	req := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	if u := p.User; u != nil {
		pw, _ := u.Password()
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pw)) + "\r\n"
	}
	if _, err := nc.Write([]byte(req + "\r\n")); err != nil {
		nc.Close()
		return nil, fmt.Errorf("apns: proxy: %w", err)
	}
	// Read the answer byte by byte up to its end, so that no byte of the
	// tunnelled stream is left in a buffer.
	br := bufio.NewReaderSize(&oneByteReader{nc}, 16)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("apns: proxy: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		nc.Close()
		return nil, fmt.Errorf("apns: proxy CONNECT %s: %s", addr, resp.Status)
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, nil
}

type oneByteReader struct{ r net.Conn }

func (o *oneByteReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.r.Read(p)
}

// h2Owner is the engine as its connections' owner: it prepares and
// encodes requests and turns their ends into outcomes.
type h2Owner struct{ e *HTTP2Engine }

var _ h2conn.Owner[*delivery] = h2Owner{}

// Prepare is called by a connection's writer before d gets a stream.
func (o h2Owner) Prepare(d *delivery) bool {
	if !o.e.c.prepare(d, o.e.tokens) {
		return false
	}
	d.stream.Payload = d.n.Payload
	return true
}

// EncodeHeaders stamps the write of d and writes its request headers.
func (o h2Owner) EncodeHeaders(d *delivery, h *h2conn.HeaderEncoder) {
	o.e.c.written(d)
	h.Scratch = describe(d, &o.e.o.h2, o.e.authority, h, h.Scratch)
}

// Done turns the end of d's stream into an outcome, or a retry.
func (o h2Owner) Done(d *delivery, err error) {
	c := o.e.c
	switch {
	case err == nil:
		d.stream.Payload = nil // its stream is over: a pooled delivery holds no message
		c.answered(d, d.stream.Status, d.stream.Body, d.stream.Header(apnsIDHeader), o.e.tokens)
	case c.isAborted() && errors.Is(err, h2conn.ErrConnLost):
		c.failClosed(d)
	case errors.Is(err, h2conn.ErrRefused):
		c.retry(d, ErrStreamRefused, false)
	case errors.Is(err, h2conn.ErrTimeout):
		c.retry(d, ErrRequestTimeout, true)
	default: // the connection lost, a stream reset by APNs, or its answer unreadable
		c.retry(d, fmt.Errorf("%w: %w", ErrConnLost, err), true)
	}
}

// apnsIDHeader is the index of apns-id in the connections' KeepHeaders.
const apnsIDHeader = 0
