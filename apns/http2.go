package apns

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
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
		if first <= 0 || max < first {
			return fmt.Errorf("%w: retry backoff %v..%v", ErrInvalidOption, first, max)
		}
		o.h2.backoffMin, o.h2.backoffMax = first, max
		return nil
	}
}

// HTTP2Engine sends notifications with Apple's HTTP/2 provider API over a
// pool of connections (WithConns), each driven frame by frame on x/net's
// framer and hpack encoder, without net/http: one writer and one reader
// goroutine per connection, requests handed out from one queue, outcomes
// reported from the readers.
//
// Each connection honours the server's SETTINGS (max concurrent streams,
// which may drop to 1 at any time, windows, frame and table sizes),
// sends PING when idle (WithPingInterval) and is replaced when it fails or
// after GOAWAY. Answers map to outcomes through one table (reasons.go):
//
//   - 200: delivered, with the apns-id APNs returned;
//   - 400, 404, 405, 410, 413 and 403 Forbidden: a *RejectionError
//     (BadToken for BadDeviceToken, Unregistered, ExpiredToken; 410 carries
//     Apple's timestamp);
//   - 403 certificate and provider-token reasons: failed with
//     ErrCredentials; Send and every later outcome fail with it too, and
//     Stats().CredentialsErr is set, but for one notification let through
//     every minute to probe the credentials: a 200 clears the refusal;
//   - a TLS alert refusing the client certificate: the same, probed by
//     redialling with back-off (up to 30s); a completed handshake clears it;
//   - 403 ExpiredProviderToken: a new token is minted (at most once, never
//     within TokenMinInterval of the last) and the notification sent again;
//   - 429, 500, 503, 400 IdleTimeout, RST_STREAM, timeouts (WithRequestTimeout)
//     and lost connections: sent again after a back-off (WithRetryBackoff),
//     up to WithMaxRetries times, then failed wrapping ErrRetriesExhausted
//     and the cause (a *StatusError, ErrRequestTimeout, ErrConnLost).
//
// Streams refused without being processed (REFUSED_STREAM, above a GOAWAY's
// last stream id) are sent again at once, on another connection, without
// using up retries.
type HTTP2Engine struct {
	o         options
	addr      string // host:port to dial
	authority string // :authority
	tlsConf   *tls.Config
	tokens    *tokenSource // nil with certificate auth

	queue chan *request   // accepted, waiting for a stream; cap maxInFlight
	sem   chan struct{}   // one slot per accepted notification
	reqs  sync.Pool       // *request
	stop  chan struct{}   // closed: connections shut down
	ctx   context.Context // cancelled with stop; bounds dials
	halt  context.CancelFunc
	wg    sync.WaitGroup

	inFlight  atomic.Int64 // in Send or accepted without outcome
	closing   atomic.Bool
	closingCh chan struct{}
	drained   chan struct{} // closed when closing and inFlight reaches 0
	drainOnce sync.Once
	stopOnce  sync.Once

	mu      sync.Mutex // guards aborted, timers, closingCh
	aborted atomic.Bool
	timers  map[*request]*time.Timer // retries waiting for their back-off

	credErr    atomic.Pointer[error]
	credTLS    atomic.Pointer[error] // credErr, when a TLS alert set it
	credProbe  atomic.Int64          // period of re-probes of 403-refused credentials (ns)
	probeAt    atomic.Int64          // unix ns: when the next re-probe may go
	connected  atomic.Int32
	reconnects atomic.Uint64

	tick time.Duration // connection housekeeping period
}

var _ Engine = (*HTTP2Engine)(nil)

// NewHTTP2Engine starts an engine for the provider API at baseURL
// (HostProduction, HostSandbox, or a test server's URL) with the given
// credentials. Connections are dialled in the background; Send queues
// until one is up.
func NewHTTP2Engine(baseURL string, auth Auth, opts ...Option) (*HTTP2Engine, error) {
	o := defaultOptions()
	o.h2 = defaultHTTP2Options()
	if err := applyOptions(&o, opts); err != nil {
		return nil, err
	}
	if err := auth.validate(); err != nil {
		return nil, err
	}
	u, err := url.Parse(baseURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("%w: base URL %q: want https://host[:port]", ErrInvalidOption, baseURL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	if o.maxInFlight == 0 {
		o.maxInFlight = o.conns * int(min(o.h2.maxStreams, 1000))
	}
	e := &HTTP2Engine{
		o:         o,
		addr:      addr,
		authority: u.Host,
		tlsConf: &tls.Config{
			ServerName: u.Hostname(),
			RootCAs:    o.rootCAs,
			MinVersion: tls.VersionTLS12,
			NextProtos: []string{"h2"},
		},
		queue:     make(chan *request, o.maxInFlight),
		sem:       make(chan struct{}, o.maxInFlight),
		stop:      make(chan struct{}),
		closingCh: make(chan struct{}),
		drained:   make(chan struct{}),
		timers:    make(map[*request]*time.Timer),
	}
	if auth.cert != nil {
		if e.tlsConf, err = ClientTLSConfig(addr, *auth.cert, o.rootCAs); err != nil {
			return nil, err
		}
		e.tlsConf.NextProtos = []string{"h2"}
	} else {
		e.tokens = newTokenSource(auth, o.now)
		if _, err := e.tokens.token(); err != nil {
			return nil, err
		}
	}
	e.tick = min(o.h2.timeout, o.h2.pingInterval) / 4
	e.tick = max(min(e.tick, time.Second), 5*time.Millisecond)
	e.reqs.New = func() any { return new(request) }
	e.credProbe.Store(int64(credProbeInterval))
	e.ctx, e.halt = context.WithCancel(context.Background())
	for range o.conns {
		e.wg.Add(1)
		go e.runConn()
	}
	return e, nil
}

// Send validates n and queues it, blocking while MaxInFlight notifications
// await their outcome. Beyond the Engine contract it fails, with an error
// wrapping ErrCredentials, once APNs has refused the credentials.
func (e *HTTP2Engine) Send(ctx context.Context, n *Notification, ref any) error {
	if n == nil {
		return fmt.Errorf("%w: nil notification", ErrInvalidNotification)
	}
	if err := n.Validate(HTTP2Limits); err != nil {
		return err
	}
	if e.tokens != nil && n.Topic == "" && e.o.h2.topic == "" {
		return fmt.Errorf("%w: no topic, and no default topic (WithTopic)", ErrInvalidTopic)
	}
	probe := false
	if err := e.credentialsErr(); err != nil {
		if !e.claimProbe() {
			return err
		}
		probe = true // let one through: the credentials may be fixed
	}
	e.inFlight.Add(1)
	if e.closing.Load() {
		e.doneOne()
		return ErrClosed
	}
	select {
	case e.sem <- struct{}{}:
	default:
		select {
		case e.sem <- struct{}{}:
		case <-ctx.Done():
			e.doneOne()
			return ctx.Err()
		case <-e.closingCh:
			e.doneOne()
			return ErrClosed
		}
	}
	r := e.reqs.Get().(*request)
	r.n, r.ref, r.accepted, r.probe = n, ref, e.o.now(), probe
	e.queue <- r // never blocks: every queued request holds a sem slot
	return nil
}

// Close stops intake, waits until every accepted notification has its
// outcome or ctx ends, then fails the rest with ErrClosed and closes the
// connections. It returns ctx's error if it had to fail some.
func (e *HTTP2Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	if !e.closing.Load() {
		e.closing.Store(true)
		close(e.closingCh)
	}
	e.mu.Unlock()
	if e.inFlight.Load() == 0 {
		e.drainOnce.Do(func() { close(e.drained) })
	}
	var err error
	select {
	case <-e.drained:
	case <-ctx.Done():
		err = ctx.Err()
		e.abort()
	}
	e.stopOnce.Do(func() {
		e.halt()
		close(e.stop)
	})
	e.wg.Wait()
	// After an abort: fail what is still queued (a Send racing Close, a
	// retry whose timer fired) until nothing is left.
	for {
		select {
		case <-e.drained:
			return err
		case r := <-e.queue:
			e.complete(r, ErrClosed)
		}
	}
}

// Stats is a snapshot for health checks and metrics.
func (e *HTTP2Engine) Stats() Stats {
	s := Stats{
		Conns:      e.o.conns,
		Connected:  int(e.connected.Load()),
		InFlight:   len(e.sem),
		Reconnects: e.reconnects.Load(),
	}
	if p := e.credErr.Load(); p != nil {
		s.CredentialsErr = *p
	}
	return s
}

// abort fails the retries waiting for their back-off; connections fail
// their streams once stopped, since aborted is set.
func (e *HTTP2Engine) abort() {
	e.mu.Lock()
	e.aborted.Store(true)
	waiting := make([]*request, 0, len(e.timers))
	for r, t := range e.timers {
		t.Stop()
		waiting = append(waiting, r)
	}
	clear(e.timers)
	e.mu.Unlock()
	for _, r := range waiting {
		e.complete(r, ErrClosed)
	}
}

func (e *HTTP2Engine) doneOne() {
	if e.inFlight.Add(-1) == 0 && e.closing.Load() {
		e.drainOnce.Do(func() { close(e.drained) })
	}
}

func (e *HTTP2Engine) credentialsErr() error {
	if p := e.credErr.Load(); p != nil {
		return *p
	}
	return nil
}

// credErrFor is credentialsErr for r: nil for the request let through to
// probe refused credentials.
func (e *HTTP2Engine) credErrFor(r *request) error {
	if r.probe {
		return nil
	}
	return e.credentialsErr()
}

// credProbeInterval is how often, while APNs refuses the credentials with
// a 403, one notification is let through to see whether they work again.
const credProbeInterval = time.Minute

// claimProbe reports whether the caller may send one request despite
// credentials refused with a 403 (TLS refusals are probed by redialling).
func (e *HTTP2Engine) claimProbe() bool {
	p := e.credErr.Load()
	if p == nil || p == e.credTLS.Load() {
		return false
	}
	at, now := e.probeAt.Load(), time.Now().UnixNano()
	return now >= at && e.probeAt.CompareAndSwap(at, now+e.credProbe.Load())
}

// setCredentialsErr records that APNs refused the credentials (with a
// 403), stops intake but for a probe every credProbeInterval, and fails
// what is queued. It returns the error outcomes carry.
func (e *HTTP2Engine) setCredentialsErr(err error) error {
	e.probeAt.Store(time.Now().UnixNano() + e.credProbe.Load())
	return e.setCredErr(err, false)
}

func (e *HTTP2Engine) setCredErr(err error, viaTLS bool) error {
	if p := &err; e.credErr.CompareAndSwap(nil, p) {
		if viaTLS {
			e.credTLS.Store(p)
		}
		e.o.log.LogAttrs(context.Background(), slog.LevelError,
			"apns credentials refused: intake stopped until the configuration is fixed",
			slog.String("error", err.Error()))
	}
	err = e.credentialsErr()
	e.failQueued(err)
	return err
}

// credentialsAccepted clears a refusal once APNs took the credentials
// again: a TLS handshake completed (for a TLS refusal only) or a 200.
func (e *HTTP2Engine) credentialsAccepted(anyRefusal bool) {
	p := e.credErr.Load()
	if p == nil || !anyRefusal && p != e.credTLS.Load() {
		return
	}
	if e.credErr.CompareAndSwap(p, nil) {
		e.o.log.LogAttrs(context.Background(), slog.LevelInfo, "apns credentials accepted again: intake resumed")
	}
}

func (e *HTTP2Engine) failQueued(err error) {
	for {
		select {
		case r := <-e.queue:
			e.complete(r, err)
		default:
			return
		}
	}
}

// complete reports r's outcome and recycles it. The caller owns r.
func (e *HTTP2Engine) complete(r *request, err error) {
	e.o.outcome(Outcome{
		Ref:          r.ref,
		Notification: r.n,
		Err:          err,
		APNsID:       r.apnsID,
		Attempts:     r.attempts,
		Accepted:     r.accepted,
	})
	body := r.body[:0]
	*r = request{body: body}
	e.reqs.Put(r)
	<-e.sem
	e.doneOne()
}

// retry sends r again after a temporary failure. counted failures use up
// the retry budget and back off; uncounted ones (the notification was
// provably not processed: refused stream, GOAWAY, token refresh) are
// queued at once, a bounded number of times.
func (e *HTTP2Engine) retry(r *request, cause error, counted bool) {
	if !counted {
		r.requeues++
		counted = r.requeues > maxRequeues
	}
	var delay time.Duration
	if counted {
		r.retries++
		if r.retries > e.o.maxRetries {
			e.o.log.LogAttrs(context.Background(), slog.LevelWarn, "notification failed: retries exhausted",
				slog.Any("token", r.n.Token), slog.Int("attempts", r.attempts), slog.String("cause", cause.Error()))
			e.complete(r, fmt.Errorf("%w after %d attempts: %w", ErrRetriesExhausted, r.attempts, cause))
			return
		}
		delay = e.backoff(r.retries)
	}
	if err := e.credErrFor(r); err != nil {
		e.complete(r, err)
		return
	}
	e.mu.Lock()
	if e.aborted.Load() {
		e.mu.Unlock()
		e.complete(r, ErrClosed)
		return
	}
	if delay == 0 {
		e.mu.Unlock()
		e.queue <- r
		return
	}
	e.timers[r] = time.AfterFunc(delay, func() {
		e.mu.Lock()
		_, mine := e.timers[r]
		delete(e.timers, r)
		e.mu.Unlock()
		if !mine {
			return // abort took it
		}
		if err := e.credErrFor(r); err != nil {
			e.complete(r, err)
			return
		}
		e.queue <- r
	})
	e.mu.Unlock()
}

const maxRequeues = 8

// A connection that ends within minConnLife, or without answering any of
// the streams it opened, counts as a failed connection attempt and backs
// off; one that opened no stream (idle) and lived minConnLife, or lived
// idleConnLife, backs off only as a first failure.
const (
	minConnLife  = time.Second
	idleConnLife = time.Minute
)

// backoff is the delay before retry n (1-based): doubling from the
// minimum, capped, with ±25% jitter.
func (e *HTTP2Engine) backoff(n int) time.Duration {
	return backoff(n, e.o.h2.backoffMin, e.o.h2.backoffMax)
}

func backoff(n int, first, limit time.Duration) time.Duration {
	d := first
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return d - d/4 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// credRedialMax caps the back-off of redials after a TLS refusal.
const credRedialMax = 30 * time.Second

// request is one accepted notification on its way through the engine.
type request struct {
	n        *Notification
	ref      any
	accepted time.Time
	attempts int
	retries  int  // counted temporary failures
	requeues int  // uncounted resends
	probe    bool // let through to probe refused credentials
	tok      *providerToken

	// Stream state, guarded by the owning conn's mu while in its streams.
	id       uint32
	deadline int64 // unix nanoseconds
	sent     int   // payload bytes written
	window   int64 // stream send window
	recv     int64 // response bytes not yet granted back
	status   int
	apnsID   string
	body     []byte
}

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
			e.credentialsAccepted(false) // the handshake passed: a TLS refusal is over
			start := time.Now()
			e.connected.Add(1)
			err = c.serve()
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
			idle := c.nextID == 1 // no stream opened; serve is over, no race
			switch {
			case c.answered > 0 && lived >= minConnLife:
				failures = 0
				if c.clean {
					continue // GOAWAY drained or stream ids used up: redial now
				}
			case c.answered > 0 || lived >= idleConnLife || idle && lived >= minConnLife:
				failures = 0 // some use, or an idle life: back off a little
			}
		}
		if e.ctx.Err() != nil {
			return
		}
		failures++
		delay := e.backoff(failures)
		if CertificateRefused(err) {
			// Redial, slowly: the certificate may be renewed, or the
			// refusal a passing fault of APNs.
			e.setCredErr(fmt.Errorf("%w: TLS: %w", ErrCredentials, err), true)
			delay = backoff(failures, e.o.h2.backoffMin, max(e.o.h2.backoffMax, credRedialMax))
		} else if err := e.credentialsErr(); err != nil {
			e.failQueued(err)
		}
		e.o.log.LogAttrs(context.Background(), slog.LevelWarn, "apns connection failed",
			slog.String("addr", e.addr), slog.Int("failures", failures), slog.String("error", errString(err)))
		t := time.NewTimer(delay)
		select {
		case <-e.stop:
			t.Stop()
			return
		case <-t.C:
		}
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
func (e *HTTP2Engine) dial() (*conn, error) {
	ctx, cancel := context.WithTimeout(e.ctx, e.o.h2.dialTimeout)
	defer cancel()
	var d net.Dialer
	var nc net.Conn
	var err error
	if p := e.o.h2.proxy; p != nil {
		nc, err = dialProxy(ctx, &d, p, e.addr)
	} else {
		nc, err = d.DialContext(ctx, "tcp", e.addr)
	}
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
	c := newConn(e, tc)
	if err := c.handshake(ctx); err != nil {
		tc.Close()
		return nil, err
	}
	return c, nil
}

// dialProxy opens a tunnel to addr with HTTP CONNECT.
func dialProxy(ctx context.Context, d *net.Dialer, p *url.URL, addr string) (net.Conn, error) {
	nc, err := d.DialContext(ctx, "tcp", p.Host)
	if err != nil {
		return nil, fmt.Errorf("apns: proxy: %w", err)
	}
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

// Connection-level HTTP/2 parameters of the client.
const (
	initialWindow  = 65535   // RFC 9113 default, for both directions
	recvConnWindow = 1 << 20 // what the client grants for responses
	maxFrameLen    = 16384   // the minimum every peer accepts
	maxBatchBytes  = 64 << 10
)

// conn is one HTTP/2 connection: the writer (serve's goroutine) is the only
// one to write frames; the reader only reads, and asks the writer for the
// frames it needs (acks, window updates) through mu and wake.
type conn struct {
	e    *HTTP2Engine
	nc   net.Conn
	fr   *http2.Framer
	wbuf frameBuf // frames for the next write, writer-owned
	henc *hpack.Encoder
	hbuf bytes.Buffer
	path []byte // scratch for :path and apns-expiration
	hdec *hpack.Decoder

	wake       chan struct{} // cap 1: the reader queued work for the writer
	readerDone chan struct{}
	readErr    error // set before readerDone closes
	clean      bool  // ended by GOAWAY or id exhaustion, not a failure
	answered   int   // streams answered by the server; reader-owned

	mu         sync.Mutex
	streams    map[uint32]*request
	nextID     uint32
	maxStreams uint32 // min(server's limit, our cap)
	initWindow int64  // server's SETTINGS_INITIAL_WINDOW_SIZE
	connWindow int64  // what we may still send on the connection
	maxFrame   int    // server's SETTINGS_MAX_FRAME_SIZE
	goaway     bool
	dead       error    // set by the reader on failure
	blocked    []uint32 // streams whose payload waits for window, in order
	// control frames the writer owes
	settingsAcks int
	tableSize    uint32 // the server's SETTINGS_HEADER_TABLE_SIZE, if tableSet
	tableSet     bool   // apply tableSize to the encoder before the ack
	pingAcks     [][8]byte
	connWU       uint32
	streamWU     []windowUpdate
	// response decoding, reader-owned
	recvConn int64
	hdrID    uint32
	hdrEnd   bool
	hdrStat  int
	hdrAPNs  string
	// liveness, writer-owned apart from lastRead
	lastRead    atomic.Int64
	pingSent    int64 // unix ns of the outstanding PING, 0 if none
	pingTimeout int64 // ns the outstanding PING may take
	probing     bool  // a stream timed out: no new stream until a frame arrives (mu)
}

type windowUpdate struct{ id, n uint32 }

// frameBuf collects frames in memory; the writer writes it out in one go.
type frameBuf struct{ b []byte }

func (f *frameBuf) Write(p []byte) (int, error) {
	f.b = append(f.b, p...)
	return len(p), nil
}

func newConn(e *HTTP2Engine, nc net.Conn) *conn {
	c := &conn{
		e:          e,
		nc:         nc,
		wake:       make(chan struct{}, 1),
		readerDone: make(chan struct{}),
		streams:    make(map[uint32]*request),
		nextID:     1,
		maxStreams: e.o.h2.maxStreams,
		initWindow: initialWindow,
		connWindow: initialWindow,
		maxFrame:   maxFrameLen,
		path:       make([]byte, 0, 16+2*MaxTokenLen),
	}
	c.wbuf.b = make([]byte, 0, maxBatchBytes+2*maxFrameLen)
	c.fr = http2.NewFramer(&c.wbuf, bufio.NewReaderSize(nc, 32<<10))
	c.fr.SetReuseFrames()
	c.fr.SetMaxReadFrameSize(maxFrameLen)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.hdec = hpack.NewDecoder(4096, c.onField)
	c.hdec.SetMaxStringLength(16 << 10)
	return c
}

// handshake sends the client preface and waits for the server's SETTINGS,
// so the first requests already honour its limits.
func (c *conn) handshake(ctx context.Context) error {
	c.wbuf.b = append(c.wbuf.b, http2.ClientPreface...)
	_ = c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: recvConnWindow},
	)
	_ = c.fr.WriteWindowUpdate(0, recvConnWindow-initialWindow)
	dl, _ := ctx.Deadline()
	_ = c.nc.SetDeadline(dl)
	defer c.nc.SetDeadline(time.Time{})
	if err := c.flush(); err != nil {
		return err
	}
	f, err := c.fr.ReadFrame()
	if err != nil {
		return fmt.Errorf("apns: reading server preface: %w", err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		return fmt.Errorf("apns: server preface is %v, not SETTINGS", f.Header().Type)
	}
	if err := c.onSettings(sf); err != nil {
		return err
	}
	c.lastRead.Store(time.Now().UnixNano())
	return nil
}

// serve runs the connection until it fails, drains after GOAWAY, or the
// engine stops; then it hands every unfinished request back to the engine.
func (c *conn) serve() error {
	go c.readLoop()
	err := c.writeLoop()
	if err == nil && !c.clean {
		// The engine is stopping: say goodbye, best effort.
		_ = c.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		_ = c.nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_ = c.flush()
	}
	c.nc.Close()
	<-c.readerDone
	if err == nil {
		err = c.readErr
	}
	c.mu.Lock()
	left := make([]*request, 0, len(c.streams))
	for id, r := range c.streams {
		left = append(left, r)
		delete(c.streams, id)
	}
	c.blocked = nil
	c.clean = c.clean || c.goaway // the server said goodbye, then closed
	c.mu.Unlock()
	cause := fmt.Errorf("%w: %s", ErrConnLost, errString(err))
	for _, r := range left {
		if c.e.aborted.Load() {
			c.e.complete(r, ErrClosed)
		} else {
			c.e.retry(r, cause, true)
		}
	}
	return err
}

func (c *conn) flush() error {
	if len(c.wbuf.b) == 0 {
		return nil
	}
	_, err := c.nc.Write(c.wbuf.b)
	c.wbuf.b = c.wbuf.b[:0]
	return err
}

func (c *conn) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *conn) writeLoop() error {
	tick := time.NewTicker(c.e.tick)
	defer tick.Stop()
	timeout := int64(c.e.o.h2.timeout)
	for {
		c.mu.Lock()
		if c.probing && c.pingSent != 0 && c.lastRead.Load() > c.pingSent {
			c.probing = false // the connection is alive
		}
		c.writeControlLocked()
		c.resumeBlockedLocked()
		can := c.canOpenLocked()
		dead, finished := c.dead, c.goaway && len(c.streams) == 0
		c.mu.Unlock()
		if dead != nil {
			return dead
		}
		if len(c.wbuf.b) > 0 {
			// The deadline frees a writer stuck on a peer that stopped reading.
			_ = c.nc.SetWriteDeadline(time.Now().Add(c.e.o.h2.timeout))
			if err := c.flush(); err != nil {
				return err
			}
		}
		if finished {
			c.clean = true
			return nil
		}
		var q chan *request
		if can {
			q = c.e.queue
		}
		select {
		case r := <-q:
			// Write what is queued, up to a batch, then flush once.
			now := time.Now().UnixNano()
			for c.writeRequest(r, now+timeout) && len(c.wbuf.b) < maxBatchBytes {
				var more bool
				select {
				case r, more = <-q:
				default:
				}
				if !more {
					break
				}
			}
		case <-c.wake:
		case <-tick.C:
			if err := c.housekeep(); err != nil {
				return err
			}
		case <-c.readerDone:
			return c.readErr
		case <-c.e.stop:
			return nil
		}
	}
}

// writeRequest frames r as a new stream; it reports whether another
// stream may be opened right away.
func (c *conn) writeRequest(r *request, deadline int64) bool {
	e := c.e
	if e.aborted.Load() {
		e.complete(r, ErrClosed)
		return true
	}
	if err := e.credErrFor(r); err != nil {
		e.complete(r, err)
		return true
	}
	if exp := r.n.Expiration; !exp.IsZero() && exp.Unix() > 0 && exp.Before(e.o.now()) {
		e.complete(r, fmt.Errorf("%w: expiration %s", ErrExpired, exp.UTC().Format(time.RFC3339)))
		return true
	}
	if e.tokens != nil {
		tok, err := e.tokens.token()
		if err != nil {
			e.complete(r, err)
			return true
		}
		r.tok = tok
	}
	c.mu.Lock()
	if !c.canOpenLocked() { // a GOAWAY or SETTINGS arrived meanwhile
		c.mu.Unlock()
		e.retry(r, ErrStreamRefused, false)
		return false
	}
	// Encoding changes the hpack table the server mirrors: only a header
	// block that is sure to be sent may be encoded.
	c.encodeHeaders(r)
	id := c.nextID
	c.nextID += 2
	r.id, r.deadline, r.sent, r.window, r.recv = id, deadline, 0, c.initWindow, 0
	r.status, r.apnsID, r.body = 0, "", r.body[:0]
	r.attempts++
	c.streams[id] = r
	c.writeHeadersLocked(id, c.hbuf.Bytes())
	if !c.writeDataLocked(r) {
		c.blocked = append(c.blocked, id)
	}
	can := c.canOpenLocked()
	c.mu.Unlock()
	return can
}

func hf(name, value string) hpack.HeaderField { return hpack.HeaderField{Name: name, Value: value} }

// Priorities and their header values, precomputed.
var priorityValues = [11]string{1: "1", 5: "5", 10: "10"}

// encodeHeaders hpack-encodes r's request headers into c.hbuf. Values
// unique to one notification (path, apns-id, expiration, collapse id) are
// sent never-indexed: they would only evict the shared ones (authorization,
// topic, push type) from the table.
func (c *conn) encodeHeaders(r *request) {
	n := r.n
	c.hbuf.Reset()
	enc := c.henc
	_ = enc.WriteField(hf(":method", "POST"))
	_ = enc.WriteField(hf(":scheme", "https"))
	_ = enc.WriteField(hf(":authority", c.e.authority))
	c.path = hex.AppendEncode(append(c.path[:0], "/3/device/"...), n.Token)
	_ = enc.WriteField(hpack.HeaderField{Name: ":path", Value: scratchString(c.path), Sensitive: true})
	if r.tok != nil {
		_ = enc.WriteField(hf("authorization", r.tok.bearer))
	}
	if t := n.Topic; t != "" {
		_ = enc.WriteField(hf("apns-topic", t))
	} else if t := c.e.o.h2.topic; t != "" {
		_ = enc.WriteField(hf("apns-topic", t))
	}
	if p := n.PushType; p != "" {
		_ = enc.WriteField(hf("apns-push-type", string(p)))
	} else if p := c.e.o.h2.pushType; p != "" {
		_ = enc.WriteField(hf("apns-push-type", string(p)))
	}
	if n.Priority != 0 {
		_ = enc.WriteField(hf("apns-priority", priorityValues[n.Priority]))
	}
	if !n.Expiration.IsZero() {
		c.path = strconv.AppendInt(c.path[:0], max(n.Expiration.Unix(), 0), 10)
		_ = enc.WriteField(hpack.HeaderField{Name: "apns-expiration", Value: scratchString(c.path), Sensitive: true})
	}
	if n.ID != "" {
		_ = enc.WriteField(hpack.HeaderField{Name: "apns-id", Value: n.ID, Sensitive: true})
	}
	if n.CollapseID != "" {
		_ = enc.WriteField(hpack.HeaderField{Name: "apns-collapse-id", Value: n.CollapseID, Sensitive: true})
	}
}

// scratchString views b as a string for one hpack WriteField of a
// Sensitive field, which the encoder neither indexes nor keeps.
func scratchString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

func (c *conn) writeHeadersLocked(id uint32, block []byte) {
	first := block[:min(len(block), c.maxFrame)]
	rest := block[len(first):]
	_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndHeaders: len(rest) == 0})
	for len(rest) > 0 {
		frag := rest[:min(len(rest), c.maxFrame)]
		rest = rest[len(frag):]
		_ = c.fr.WriteContinuation(id, len(rest) == 0, frag)
	}
}

// writeDataLocked writes as much of r's payload as the flow-control
// windows allow; a remainder puts r on the blocked list.
func (c *conn) writeDataLocked(r *request) bool {
	p := r.n.Payload
	for r.sent < len(p) {
		n := int64(min(len(p)-r.sent, c.maxFrame))
		n = min(n, c.connWindow, r.window)
		if n <= 0 {
			return false
		}
		end := r.sent + int(n)
		_ = c.fr.WriteData(r.id, end == len(p), p[r.sent:end])
		r.sent = end
		c.connWindow -= n
		r.window -= n
	}
	return true
}

func (c *conn) resumeBlockedLocked() {
	for len(c.blocked) > 0 {
		if r := c.streams[c.blocked[0]]; r != nil && !c.writeDataLocked(r) {
			return // still blocked; streams go in order
		}
		c.blocked = c.blocked[1:]
	}
	c.blocked = c.blocked[:0:0]
}

func (c *conn) canOpenLocked() bool {
	return c.dead == nil && !c.goaway && !c.probing && uint32(len(c.streams)) < c.maxStreams &&
		c.connWindow > 0 && len(c.blocked) == 0 && c.nextID < 1<<31-1
}

func (c *conn) writeControlLocked() {
	if c.tableSet {
		c.henc.SetMaxDynamicTableSizeLimit(c.tableSize)
		c.tableSet = false
	}
	for ; c.settingsAcks > 0; c.settingsAcks-- {
		_ = c.fr.WriteSettingsAck()
	}
	for _, d := range c.pingAcks {
		_ = c.fr.WritePing(true, d)
	}
	c.pingAcks = c.pingAcks[:0]
	if c.connWU > 0 {
		_ = c.fr.WriteWindowUpdate(0, c.connWU)
		c.connWU = 0
	}
	for _, w := range c.streamWU {
		_ = c.fr.WriteWindowUpdate(w.id, w.n)
	}
	c.streamWU = c.streamWU[:0]
	if c.nextID >= 1<<31-1 && !c.goaway {
		c.goaway = true // stream ids used up: drain and reconnect
	}
}

// housekeep times out requests and probes an idle connection with PING.
func (c *conn) housekeep() error {
	now := time.Now().UnixNano()
	var expired []*request
	c.mu.Lock()
	for id, r := range c.streams {
		if r.deadline <= now {
			expired = append(expired, r)
			delete(c.streams, id)
			_ = c.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
	}
	// A timed-out stream may mean a connection that died silently: probe
	// it with a PING at once, and open no stream on it until answered.
	if len(expired) > 0 {
		c.probing = true
	}
	c.mu.Unlock()
	for _, r := range expired {
		c.e.retry(r, ErrRequestTimeout, true)
	}
	if c.pingSent != 0 {
		if c.lastRead.Load() > c.pingSent {
			c.pingSent = 0
			c.mu.Lock()
			c.probing = len(expired) > 0
			c.mu.Unlock()
		} else if now-c.pingSent > c.pingTimeout {
			return fmt.Errorf("apns: PING unanswered for %v", time.Duration(c.pingTimeout))
		}
	}
	switch {
	case len(expired) > 0 && c.pingSent == 0:
		c.ping(min(c.e.o.h2.timeout, probeTimeout))
	case len(expired) > 0:
		c.pingTimeout = min(c.pingTimeout, int64(min(c.e.o.h2.timeout, probeTimeout)))
	case c.pingSent == 0 && now-c.lastRead.Load() > int64(c.e.o.h2.pingInterval):
		c.ping(c.e.o.h2.timeout)
	}
	if len(expired) > 0 {
		c.poke() // stream slots freed
	}
	return nil
}

// probeTimeout bounds the wait for the PING sent after a request timed out.
const probeTimeout = 2 * time.Second

// ping queues a PING that must be answered within timeout.
func (c *conn) ping(timeout time.Duration) {
	now := time.Now().UnixNano()
	var data [8]byte
	copy(data[:], strconv.FormatInt(now, 36))
	_ = c.fr.WritePing(false, data)
	c.pingSent, c.pingTimeout = now, int64(timeout)
}

func (c *conn) readLoop() {
	defer close(c.readerDone)
	err := c.read()
	c.mu.Lock()
	c.dead = err
	c.mu.Unlock()
	c.readErr = err
}

func (c *conn) read() error {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return err
		}
		c.lastRead.Store(time.Now().UnixNano())
		switch f := f.(type) {
		case *http2.HeadersFrame:
			c.hdrID, c.hdrEnd, c.hdrStat, c.hdrAPNs = f.StreamID, f.StreamEnded(), 0, ""
			err = c.onHeaderBlock(f.HeaderBlockFragment(), f.HeadersEnded())
		case *http2.ContinuationFrame:
			err = c.onHeaderBlock(f.HeaderBlockFragment(), f.HeadersEnded())
		case *http2.DataFrame:
			c.onData(f)
		case *http2.RSTStreamFrame:
			c.onReset(f)
		case *http2.SettingsFrame:
			if !f.IsAck() {
				err = c.onSettings(f)
			}
		case *http2.WindowUpdateFrame:
			err = c.onWindowUpdate(f)
		case *http2.PingFrame:
			if f.IsAck() {
				c.poke() // a probed connection may open streams again
			} else {
				c.mu.Lock()
				c.pingAcks = append(c.pingAcks, f.Data)
				c.mu.Unlock()
				c.poke()
			}
		case *http2.GoAwayFrame:
			c.onGoAway(f)
		case *http2.PushPromiseFrame:
			err = errors.New("apns: PUSH_PROMISE though push is disabled")
		}
		if err != nil {
			return err
		}
	}
}

// onField is the hpack decoder's emit function.
func (c *conn) onField(f hpack.HeaderField) {
	switch f.Name {
	case ":status":
		c.hdrStat, _ = strconv.Atoi(f.Value)
	case "apns-id":
		c.hdrAPNs = f.Value
	}
}

func (c *conn) onHeaderBlock(frag []byte, end bool) error {
	if _, err := c.hdec.Write(frag); err != nil {
		return fmt.Errorf("apns: hpack: %w", err)
	}
	if !end {
		return nil
	}
	if err := c.hdec.Close(); err != nil {
		return fmt.Errorf("apns: hpack: %w", err)
	}
	if c.hdrStat >= 100 && c.hdrStat < 200 {
		return nil // informational
	}
	c.mu.Lock()
	r := c.streams[c.hdrID]
	if r == nil {
		c.mu.Unlock()
		return nil // timed out meanwhile
	}
	if r.status == 0 {
		r.status, r.apnsID = c.hdrStat, c.hdrAPNs
	}
	if !c.hdrEnd {
		c.mu.Unlock()
		return nil
	}
	c.endStreamLocked(r)
	c.mu.Unlock()
	c.finish(r)
	return nil
}

// endStreamLocked removes a stream answered in full (or reset).
func (c *conn) endStreamLocked(r *request) {
	delete(c.streams, r.id)
	if uint32(len(c.streams)) == c.maxStreams-1 || c.goaway && len(c.streams) == 0 {
		c.poke() // a slot opened, or the drain is over
	}
}

func (c *conn) onData(f *http2.DataFrame) {
	c.mu.Lock()
	c.recvConn += int64(f.Length)
	if c.recvConn >= recvConnWindow/2 {
		c.connWU += uint32(c.recvConn)
		c.recvConn = 0
		c.poke()
	}
	r := c.streams[f.StreamID]
	if r == nil {
		c.mu.Unlock()
		return
	}
	if d := f.Data(); len(r.body) < 8<<10 {
		r.body = append(r.body, d[:min(len(d), 8<<10-len(r.body))]...)
	}
	if !f.StreamEnded() {
		if r.recv += int64(f.Length); r.recv >= recvConnWindow/2 {
			c.streamWU = append(c.streamWU, windowUpdate{r.id, uint32(r.recv)})
			r.recv = 0
			c.poke()
		}
		c.mu.Unlock()
		return
	}
	c.endStreamLocked(r)
	c.mu.Unlock()
	c.finish(r)
}

func (c *conn) onReset(f *http2.RSTStreamFrame) {
	c.mu.Lock()
	r := c.streams[f.StreamID]
	if r == nil {
		c.mu.Unlock()
		return
	}
	c.endStreamLocked(r)
	c.mu.Unlock()
	if f.ErrCode == http2.ErrCodeRefusedStream {
		c.e.retry(r, ErrStreamRefused, false)
		return
	}
	c.e.retry(r, fmt.Errorf("%w: RST_STREAM %v", ErrConnLost, f.ErrCode), true)
}

func (c *conn) onSettings(f *http2.SettingsFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		switch s.ID {
		case http2.SettingMaxConcurrentStreams:
			old := c.maxStreams
			c.maxStreams = min(s.Val, c.e.o.h2.maxStreams)
			if c.maxStreams != old {
				c.e.o.log.LogAttrs(context.Background(), slog.LevelDebug, "apns stream limit changed",
					slog.Uint64("from", uint64(old)), slog.Uint64("to", uint64(c.maxStreams)))
			}
		case http2.SettingInitialWindowSize:
			if s.Val > 1<<31-1 {
				return http2.ConnectionError(http2.ErrCodeFlowControl)
			}
			delta := int64(s.Val) - c.initWindow
			c.initWindow = int64(s.Val)
			for _, r := range c.streams {
				r.window += delta
			}
		case http2.SettingMaxFrameSize:
			c.maxFrame = int(min(s.Val, 1<<20))
		case http2.SettingHeaderTableSize:
			c.tableSize, c.tableSet = s.Val, true
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.settingsAcks++
	c.poke()
	return nil
}

func (c *conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		c.connWindow += int64(f.Increment)
		if c.connWindow > 1<<31-1 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
	} else if r := c.streams[f.StreamID]; r != nil {
		r.window += int64(f.Increment)
	}
	c.poke()
	return nil
}

// onGoAway stops new streams; those above the last stream id were not
// processed and go back to the queue for another connection, those below
// finish here.
func (c *conn) onGoAway(f *http2.GoAwayFrame) {
	var refused []*request
	c.mu.Lock()
	c.goaway = true
	for id, r := range c.streams {
		if id > f.LastStreamID {
			refused = append(refused, r)
			delete(c.streams, id)
		}
	}
	c.mu.Unlock()
	c.e.o.log.LogAttrs(context.Background(), slog.LevelInfo, "apns GOAWAY",
		slog.Uint64("last_stream_id", uint64(f.LastStreamID)), slog.String("code", f.ErrCode.String()),
		slog.String("debug", string(f.DebugData())), slog.Int("requeued", len(refused)))
	for _, r := range refused {
		c.e.retry(r, ErrStreamRefused, false)
	}
	c.poke()
}

// finish turns a complete response into an outcome, or a retry.
func (c *conn) finish(r *request) {
	e := c.e
	c.answered++
	if r.status == http.StatusOK {
		if e.credErr.Load() != nil {
			e.credentialsAccepted(true)
		}
		e.complete(r, nil)
		return
	}
	reason, ts := parseResponse(r.body)
	switch classify(r.status, reason) {
	case classDelivered:
		e.complete(r, nil)
	case classRejected:
		if ctx := context.Background(); e.o.log.Enabled(ctx, slog.LevelDebug) {
			e.o.log.LogAttrs(ctx, slog.LevelDebug, "notification rejected",
				slog.Int("status", r.status), slog.String("reason", reason), slog.Any("token", r.n.Token))
		}
		e.complete(r, &RejectionError{HTTPStatus: r.status, Reason: reason, Timestamp: ts})
	case classCredentials:
		e.complete(r, e.setCredentialsErr(fmt.Errorf("%w: APNs answered %d %s", ErrCredentials, r.status, reason)))
	case classRefreshToken:
		if e.tokens == nil {
			e.complete(r, e.setCredentialsErr(fmt.Errorf("%w: APNs answered %d %s to certificate auth", ErrCredentials, r.status, reason)))
			return
		}
		if err := e.tokens.expired(r.tok); err != nil {
			e.complete(r, e.setCredentialsErr(err))
			return
		}
		e.retry(r, &StatusError{HTTPStatus: r.status, Reason: reason}, false)
	default:
		e.retry(r, &StatusError{HTTPStatus: r.status, Reason: reason}, true)
	}
}
