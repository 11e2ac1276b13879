package apns

import (
	"bufio"
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
// pool of connections (WithConns), each an h2conn.Conn driven frame by
// frame on x/net's framer and hpack, without net/http: one writer and one
// reader goroutine per connection, requests handed out from one queue,
// outcomes reported from the connections.
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
	o         options
	addr      string // host:port to dial
	authority string // :authority
	tlsConf   *tls.Config
	tokens    *tokenSource // nil with certificate auth

	queue chan h2conn.Request // *request accepted, waiting for a stream; cap maxInFlight
	sem   chan struct{}       // one slot per accepted notification
	reqs  sync.Pool           // *request
	stop  chan struct{}       // closed: connections shut down
	ctx   context.Context     // cancelled with stop; bounds dials
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

	credErr   atomic.Pointer[error]
	credTLS   atomic.Pointer[error] // credErr, when a TLS alert set it
	credProbe atomic.Int64          // period of re-probes of 403-refused credentials (ns)
	probeAt   atomic.Int64          // unix ns on o.now's clock: when the next re-probe may go
	// gateGen counts the closings of the credentials gate; each request
	// is stamped with it when written, and only a 200 for one written
	// since the last closing, or sent with a newer token than gateTok (the
	// one refused), opens the gate. gateMu orders closing and opening.
	gateMu     sync.Mutex
	gateGen    atomic.Uint64
	gateTok    *providerToken // gateMu
	connected  atomic.Int32
	reconnects atomic.Uint64

	faults     faultCounts
	faultLogAt atomic.Int64 // unix ns of the last fault logged
	faultQuiet atomic.Int64 // faults not logged since
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
		queue:     make(chan h2conn.Request, o.maxInFlight),
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
			e.complete(r.(*request), ErrClosed)
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
		Faults:     e.faults.snapshot(),
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
	at, now := e.probeAt.Load(), e.o.now().UnixNano()
	return now >= at && e.probeAt.CompareAndSwap(at, now+e.credProbe.Load())
}

// setCredentialsErr records that APNs refused the credentials (with a
// 403), stops intake but for a probe every credProbeInterval, and fails
// what is queued. It returns the error outcomes carry.
// tok is the provider token APNs refused (nil with certificate auth).
func (e *HTTP2Engine) setCredentialsErr(err error, tok *providerToken) error {
	e.probeAt.Store(e.o.now().UnixNano() + e.credProbe.Load())
	return e.setCredErr(err, false, tok)
}

func (e *HTTP2Engine) setCredErr(err error, viaTLS bool, tok *providerToken) error {
	e.gateMu.Lock()
	if p := &err; e.credErr.CompareAndSwap(nil, p) {
		e.gateGen.Add(1) // what was stamped before cannot open it
		e.gateTok = tok
		if viaTLS {
			e.credTLS.Store(p)
		}
		e.o.log.LogAttrs(context.Background(), slog.LevelError,
			"apns credentials refused: intake stopped until the configuration is fixed",
			slog.String("error", err.Error()))
	}
	e.gateMu.Unlock()
	err = e.credentialsErr()
	e.failQueued(err)
	return err
}

// succeededAfterRefusal opens the gate for r, answered 200 while the
// credentials stood refused, if r proves they work again: it was written
// after the gate closed (a probe), or sent with a newer provider token than
// the one refused. A 200 for a request written before says nothing of them.
func (e *HTTP2Engine) succeededAfterRefusal(r *request) {
	e.gateMu.Lock()
	defer e.gateMu.Unlock()
	newerToken := r.tok != nil && e.gateTok != nil && r.tok.iat.After(e.gateTok.iat)
	if r.gen == e.gateGen.Load() || newerToken {
		e.openGateLocked(true)
	}
}

// credentialsAccepted clears a TLS refusal once a TLS handshake completed.
func (e *HTTP2Engine) credentialsAccepted() {
	if e.credErr.Load() == nil {
		return
	}
	e.gateMu.Lock()
	e.openGateLocked(false)
	e.gateMu.Unlock()
}

// openGateLocked clears a refusal (a TLS one only, unless anyRefusal).
func (e *HTTP2Engine) openGateLocked(anyRefusal bool) {
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
			e.complete(r.(*request), err)
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
		APNsID:       r.Header(apnsIDHeader),
		Attempts:     r.attempts,
		Accepted:     r.accepted,
	})
	body := r.Body[:0]
	*r = request{}
	r.Body = body
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
	retries  int    // counted temporary failures
	requeues int    // uncounted resends
	probe    bool   // let through to probe refused credentials
	gen      uint64 // gateGen when last written
	tok      *providerToken

	h2conn.Stream // owned by a connection while in flight
}

func (r *request) H2Stream() *h2conn.Stream { return &r.Stream }

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
			e.credentialsAccepted() // the handshake passed: a TLS refusal is over
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
				if !e.wait(e.backoff(failures + 1)) {
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
		delay := e.backoff(failures)
		if CertificateRefused(err) {
			// Redial, slowly: the certificate may be renewed, or the
			// refusal a passing fault of APNs.
			e.setCredErr(fmt.Errorf("%w: TLS: %w", ErrCredentials, err), true, nil)
			delay = backoff(failures, e.o.h2.backoffMin, max(e.o.h2.backoffMax, credRedialMax))
		} else if err := e.credentialsErr(); err != nil {
			e.failQueued(err)
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
func (e *HTTP2Engine) dial() (*h2conn.Conn, error) {
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
	return h2conn.Handshake(ctx, tc, h2conn.Config{
		Queue:             e.queue,
		Owner:             h2Owner{e},
		MaxStreams:        e.o.h2.maxStreams,
		RequestTimeout:    e.o.h2.timeout,
		PingInterval:      e.o.h2.pingInterval,
		MaxHeaderListSize: maxHeaderListSize,
		MaxBody:           maxResponseBody,
		KeepHeaders:       []string{apnsIDHeader: "apns-id"},
		Logger:            e.o.log,
	})
}

// Limits of what the engine reads of one answer: the header list size it
// advertises (a larger one fails that request only, retried) and the
// error body kept for its reason.
const (
	maxHeaderListSize = 64 << 10
	maxResponseBody   = 64 << 10
)

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

// h2Owner is the engine as its connections' owner: it prepares and
// encodes requests and turns their ends into outcomes.
type h2Owner struct{ e *HTTP2Engine }

var _ h2conn.Owner = h2Owner{}

// Prepare is called by a connection's writer before r gets a stream: it
// fails r if it may no longer go, gets its provider token, and stamps it
// with the credentials gate's generation.
func (o h2Owner) Prepare(req h2conn.Request) bool {
	e, r := o.e, req.(*request)
	if e.aborted.Load() {
		e.complete(r, ErrClosed)
		return false
	}
	if err := e.credErrFor(r); err != nil {
		e.complete(r, err)
		return false
	}
	if exp := r.n.Expiration; !exp.IsZero() && exp.Unix() > 0 && exp.Before(e.o.now()) {
		e.complete(r, fmt.Errorf("%w: expiration %s", ErrExpired, exp.UTC().Format(time.RFC3339)))
		return false
	}
	if e.tokens != nil {
		tok, err := e.tokens.token()
		if err != nil {
			e.complete(r, err)
			return false
		}
		r.tok = tok
	}
	r.gen = e.gateGen.Load()
	r.Payload = r.n.Payload
	return true
}

// Priorities and their header values, precomputed.
var priorityValues = [11]string{1: "1", 5: "5", 10: "10"}

// EncodeHeaders writes r's request headers. Values unique to one
// notification (path, apns-id, expiration, collapse id) are sent
// never-indexed: they would only evict the shared ones (authorization,
// topic, push type) from the table.
func (o h2Owner) EncodeHeaders(req h2conn.Request, h *h2conn.HeaderEncoder) {
	e, r := o.e, req.(*request)
	n := r.n
	r.attempts++
	h.Field(":method", "POST")
	h.Field(":scheme", "https")
	h.Field(":authority", e.authority)
	h.Scratch = hex.AppendEncode(append(h.Scratch[:0], "/3/device/"...), n.Token)
	h.UniqueBytes(":path", h.Scratch)
	if r.tok != nil {
		h.Field("authorization", r.tok.bearer)
	}
	if t := n.Topic; t != "" {
		h.Field("apns-topic", t)
	} else if t := e.o.h2.topic; t != "" {
		h.Field("apns-topic", t)
	}
	if p := n.PushType; p != "" {
		h.Field("apns-push-type", string(p))
	} else if p := e.o.h2.pushType; p != "" {
		h.Field("apns-push-type", string(p))
	}
	if n.Priority != 0 {
		h.Field("apns-priority", priorityValues[n.Priority])
	}
	if !n.Expiration.IsZero() {
		h.Scratch = strconv.AppendInt(h.Scratch[:0], max(n.Expiration.Unix(), 0), 10)
		h.UniqueBytes("apns-expiration", h.Scratch)
	}
	if n.ID != "" {
		h.Unique("apns-id", n.ID)
	}
	if n.CollapseID != "" {
		h.Unique("apns-collapse-id", n.CollapseID)
	}
}

// Done turns the end of r's stream into an outcome, or a retry.
func (o h2Owner) Done(req h2conn.Request, err error) {
	e, r := o.e, req.(*request)
	switch {
	case err == nil:
		e.finish(r)
	case e.aborted.Load() && errors.Is(err, h2conn.ErrConnLost):
		e.complete(r, ErrClosed)
	case errors.Is(err, h2conn.ErrRefused):
		e.retry(r, ErrStreamRefused, false)
	case errors.Is(err, h2conn.ErrTimeout):
		e.retry(r, ErrRequestTimeout, true)
	case errors.Is(err, h2conn.ErrConnLost):
		e.retry(r, fmt.Errorf("%w: %w", ErrConnLost, err), true)
	default: // a stream error: reset by APNs, or its answer unreadable
		e.retry(r, fmt.Errorf("%w: %w", ErrConnLost, err), true)
	}
}

// apnsIDHeader is the index of apns-id in the connections' KeepHeaders.
const apnsIDHeader = 0

// finish turns a complete response into an outcome, or a retry: the one
// place where an answer becomes a verdict (reasons.go says which).
func (e *HTTP2Engine) finish(r *request) {
	if r.Status == http.StatusOK {
		if e.credErr.Load() != nil {
			e.succeededAfterRefusal(r)
		}
		e.complete(r, nil)
		return
	}
	class, reason, ts := verdict(r.Status, r.Body)
	switch class {
	case classDelivered:
		e.complete(r, nil)
	case classRejected:
		if ctx := context.Background(); e.o.log.Enabled(ctx, slog.LevelDebug) {
			e.o.log.LogAttrs(ctx, slog.LevelDebug, "notification rejected",
				slog.Int("status", r.Status), slog.String("reason", reason), slog.Any("token", r.n.Token))
		}
		e.complete(r, &RejectionError{HTTPStatus: r.Status, Reason: reason, Timestamp: ts})
	case classCredentials:
		e.complete(r, e.setCredentialsErr(fmt.Errorf("%w: APNs answered %d %s", ErrCredentials, r.Status, reason), r.tok))
	case classRefreshToken:
		if e.tokens == nil {
			e.complete(r, e.setCredentialsErr(fmt.Errorf("%w: APNs answered %d %s to certificate auth", ErrCredentials, r.Status, reason), nil))
			return
		}
		if err := e.tokens.expired(r.tok); err != nil {
			e.complete(r, e.setCredentialsErr(err, r.tok))
			return
		}
		e.retry(r, &StatusError{HTTPStatus: r.Status, Reason: reason}, false)
	case classFault:
		e.retry(r, e.fault(r.Status, reason, r.Body), true)
	default:
		e.retry(r, &StatusError{HTTPStatus: r.Status, Reason: reason}, true)
	}
}

// faultLogEvery bounds the WARN lines for answers that are not APNs': at
// most one per period, counting those left out.
const faultLogEvery = time.Second

// fault counts and logs an answer that is not APNs' verdict and returns
// the cause its retry carries.
func (e *HTTP2Engine) fault(status int, reason string, body []byte) error {
	e.faults.add(status)
	err := &StatusError{HTTPStatus: status, Reason: reason, NotAPNs: true, Body: bodyPrefix(body)}
	now, last := time.Now().UnixNano(), e.faultLogAt.Load()
	if now-last < int64(faultLogEvery) || !e.faultLogAt.CompareAndSwap(last, now) {
		e.faultQuiet.Add(1)
		return err
	}
	e.o.log.LogAttrs(context.Background(), slog.LevelWarn, "apns answer is not an apns verdict: retrying",
		slog.String("addr", e.addr), slog.Int("status", status), slog.String("body", err.Body),
		slog.Int64("not_logged_since", e.faultQuiet.Swap(0)))
	return err
}
