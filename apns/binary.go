package apns

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Apple's legacy binary gateways. Apple stopped accepting the binary
// protocol in March 2021; any compatible gateway's host:port works too.
const (
	GatewayProduction = "gateway.push.apple.com:2195"
	GatewaySandbox    = "gateway.sandbox.push.apple.com:2195"
)

// MaxPayloadLegacy is the payload limit of old binary gateways, from the
// time of commands 0 and 1; see WithMaxPayload.
const MaxPayloadLegacy = 256

// Binary engine defaults and tuning.
const (
	binDefaultWindow      = 5 * time.Second
	binDefaultIdle        = 5 * time.Minute
	binDefaultDial        = 10 * time.Second
	binDefaultMaxInFlight = 1 << 16
	binBackoffMin         = 100 * time.Millisecond
	binBackoffMax         = 30 * time.Second

	// Small write buffers keep the pipeline short: everything written
	// after a bad notification, up to the gateway reading it, is discarded
	// by APNs and sent again, and must be read within the window.
	binWriteBuffer = 4 << 10         // bufio, and the largest TLS record we write
	binSendBuffer  = 8 << 10         // SO_SNDBUF (the kernel doubles it)
	binMaxBatch    = 32              // frames taken from the queue between checks
	binReadGrace   = 1 * time.Second // after a failed write, wait this long for an error response
)

// binaryOptions are the binary engine's own settings.
type binaryOptions struct {
	assumeDelivered time.Duration
	idleTimeout     time.Duration
	dialTimeout     time.Duration
	maxPayload      int
	backoffMin      time.Duration
	backoffMax      time.Duration
	confirmAfter    time.Duration // 0: no confirm markers
}

// WithAssumeDelivered sets how long the binary engine waits, after writing a
// notification, for an error response before it reports the notification
// delivered (default 5s). Apple may report a dropped connection only after
// hundreds more writes, so keep it in seconds against real gateways. The
// engine's throughput is at most the max-in-flight count divided by it.
func WithAssumeDelivered(d time.Duration) Option {
	return func(o *options) error {
		o.onlyFor(binaryEngine, "WithAssumeDelivered")
		if d <= 0 {
			return fmt.Errorf("%w: assume-delivered window %v <= 0", ErrInvalidOption, d)
		}
		o.binary.assumeDelivered = d
		return nil
	}
}

// WithConfirmMarkers makes the binary engine confirm what it wrote instead
// of waiting out the assumed-delivered window: once the oldest notification
// in flight on a connection has waited after (0: at once), the connection
// stops taking notifications and writes a known-bad frame (no token, no
// payload), as the Java client Pushy did against Apple. The gateway answers
// it with an error response naming it and closes; it processes frames in
// order, so every notification before it is delivered, seconds early. The
// engine then dials a fresh connection. Default off: the plain window.
//
// A gateway that ignores the marker (no answer within the window) or closes
// without an error response turns markers off for the engine's life (the
// second case resends what was in flight, as any silent close does). While
// Close drains, markers go out as soon as a connection has nothing to
// write, so Close does not wait for the window either.
func WithConfirmMarkers(after time.Duration) Option {
	return func(o *options) error {
		o.onlyFor(binaryEngine, "WithConfirmMarkers")
		if after < 0 {
			return fmt.Errorf("%w: confirm-marker delay %v < 0", ErrInvalidOption, after)
		}
		o.binary.confirmAfter = max(after, time.Nanosecond)
		return nil
	}
}

// WithIdleTimeout sets how long a binary-gateway connection may stay unused
// before the engine closes it and dials a fresh one for the next
// notification (default 5m): long-idle connections to APNs go stale.
func WithIdleTimeout(d time.Duration) Option {
	return func(o *options) error {
		o.onlyFor(binaryEngine, "WithIdleTimeout")
		if d <= 0 {
			return fmt.Errorf("%w: idle timeout %v <= 0", ErrInvalidOption, d)
		}
		o.binary.idleTimeout = d
		return nil
	}
}

// WithDialTimeout bounds connecting to APNs (TCP, proxy and TLS handshake;
// default 10s); the binary engine also bounds each write with it.
func WithDialTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: dial timeout %v <= 0", ErrInvalidOption, d)
		}
		o.binary.dialTimeout, o.h2.dialTimeout = d, d
		return nil
	}
}

// WithMaxPayload sets the binary engine's payload limit in bytes (default
// 2048; MaxPayloadLegacy, 256, for old gateways; at most 65535).
func WithMaxPayload(n int) Option {
	return func(o *options) error {
		o.onlyFor(binaryEngine, "WithMaxPayload")
		if n < 1 || n > math.MaxUint16 {
			return fmt.Errorf("%w: max payload %d not in 1..65535", ErrInvalidOption, n)
		}
		o.binary.maxPayload = n
		return nil
	}
}

// WithReconnectBackoff sets the binary engine's reconnect delays after a
// failed connection: exponential from min, capped at max, with jitter
// (defaults 100ms and 30s). A connection that worked is replaced at once.
func WithReconnectBackoff(min, max time.Duration) Option {
	return func(o *options) error {
		o.onlyFor(binaryEngine, "WithReconnectBackoff")
		if min <= 0 || max < min {
			return fmt.Errorf("%w: reconnect backoff %v..%v", ErrInvalidOption, min, max)
		}
		o.binary.backoffMin, o.binary.backoffMax = min, max
		return nil
	}
}

// BinaryEngine sends notifications over Apple's legacy binary protocol
// (command-2 frames) on a few long-lived TLS connections.
//
// APNs answers only bad notifications, with an error response naming one,
// and then closes the connection. So each connection keeps what it wrote in
// an in-flight queue, in identifier order:
//   - an error response rejects the notification it names (status 1 and
//     255 are temporary: it is sent again, up to the retry limit); those
//     written before it are delivered, those after it are sent again on a
//     fresh connection (they do not use up retries: APNs discarded them);
//   - status 10 (shutdown) names the last notification processed: those
//     after it are sent again; naming none (ID 0), it processed nothing:
//     the connection counts as failed (reconnect back-off), and each
//     notification is resent free a few times, then using up retries;
//   - a notification that saw no error response for the assumed-delivered
//     window is delivered;
//   - a connection that ends without an error response (silent close, read
//     or write error) leaves it unknown whether APNs processed what was in
//     flight: all of it is sent again, free a few times (the gateway or the
//     network ended the connection, seldom because of one notification),
//     then each using up one retry. This can deliver a notification twice.
//
// Identifiers count up from 1 on each connection and are never reused on
// it. Writes go through a buffer flushed when no more work is queued.
type BinaryEngine struct {
	c      *core
	addr   string
	tlsc   *tls.Config
	o      options
	b      binaryOptions
	limits Limits
	epoch  time.Time
	wg     sync.WaitGroup // connection workers

	connsMu sync.Mutex
	conns   map[net.Conn]struct{} // live connections, closed on abort

	connected  atomic.Int32
	reconnects atomic.Uint64
	markersOff atomic.Bool   // the gateway mishandled a confirm marker
	markers    atomic.Uint64 // confirm markers answered as expected

	// budget is how many notifications one connection carries before it
	// retires (0: no limit), learnt from silent closes; see retire.
	budget   atomic.Uint32
	drainers chan struct{} // one per retired connection waiting out its window
}

var _ Engine = (*BinaryEngine)(nil)

// binMaxIdleEnds bounds the free resends of a notification after
// connections that ended without a verdict on it: processing nothing
// (status 10 or 0 naming ID 0), or closing silently while it was in flight.
// Beyond it, each such resend uses up a retry, so that a gateway that
// always shuts down or closes at once fails notifications instead of
// keeping them forever (as the HTTP/2 engine's maxRequeues). Against a
// gateway that closes every N frames, through no fault of what is in
// flight, a notification fails only after 8+retries closes hit it; with
// closes counted from the first, 4 in a row had failed a few of 20 000.
const binMaxIdleEnds = 8

// NewBinaryEngine returns an engine that sends to the binary gateway at addr
// (GatewayProduction, GatewaySandbox or any host:port) with the client
// certificate cert. It connects lazily, on the first notification. The
// binary engine uses WithConns, WithMaxInFlight (default 65536),
// WithMaxRetries, WithOutcomeFunc, WithLogger, WithRootCAs, WithClock (for
// Outcome.Accepted and expiry), WithAssumeDelivered, WithIdleTimeout,
// WithDialTimeout, WithMaxPayload and WithReconnectBackoff.
func NewBinaryEngine(addr string, cert tls.Certificate, opts ...Option) (*BinaryEngine, error) {
	o := defaultOptions()
	o.binary = binaryOptions{
		assumeDelivered: binDefaultWindow,
		idleTimeout:     binDefaultIdle,
		dialTimeout:     binDefaultDial,
		maxPayload:      BinaryLimits.MaxPayload,
		backoffMin:      binBackoffMin,
		backoffMax:      binBackoffMax,
	}
	if err := applyOptions(&o, opts); err != nil {
		return nil, err
	}
	if err := o.checkFor(binaryEngine); err != nil {
		return nil, err
	}
	if o.maxInFlight == 0 {
		o.maxInFlight = binDefaultMaxInFlight
	}
	tlsc, err := ClientTLSConfig(addr, cert, o.rootCAs)
	if err != nil {
		return nil, err
	}
	tlsc.ClientSessionCache = tls.NewLRUClientSessionCache(2 * o.conns)
	// Every rejection costs a reconnect, and generating the post-quantum
	// hybrid key share (X25519MLKEM768, Go's default) took about 9% of the
	// CPU at 1% rejected tokens. Go ignores the order of CurvePreferences,
	// so the legacy protocol leaves the hybrid out; the HTTP/2 engine,
	// which reconnects rarely, keeps Go's defaults.
	tlsc.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384}
	e := &BinaryEngine{
		addr:   addr,
		tlsc:   tlsc,
		o:      o,
		b:      o.binary,
		limits: Limits{TokenLen: BinaryLimits.TokenLen, MaxPayload: o.binary.maxPayload, Binary: true},
		epoch:  time.Now(),
		conns:  make(map[net.Conn]struct{}),

		drainers: make(chan struct{}, binMaxDrainers*o.conns),
	}
	e.c = newCore(&e.o, addr, func(n *Notification) error { return n.Validate(e.limits) })
	// What follows a rejection on its connection was discarded unread by
	// the gateway: its resends are free, however many rejections precede.
	e.c.maxFree = math.MaxInt
	e.c.abortWires = e.closeConns
	e.wg.Add(o.conns)
	for i := 0; i < o.conns; i++ {
		go e.worker(i)
	}
	return e, nil
}

// Send validates n against the binary limits and queues it, blocking while
// the engine has its maximum in flight. It fails only for an invalid n
// (wrapping ErrInvalidNotification), a done ctx, ErrClosed, or a refused
// client certificate (wrapping ErrCredentials; one Send every minute is let
// through to probe it). Every n it accepts gets exactly one Outcome,
// carrying ref. The engine owns n until then.
func (e *BinaryEngine) Send(ctx context.Context, n *Notification, ref any) error {
	return e.c.send(ctx, n, ref)
}

// Close stops intake, lets the connections send what is queued and wait
// out the assumed-delivered window, and returns nil once every accepted
// notification has its outcome. If ctx ends first, it closes the
// connections, reports the rest as failed with ErrClosed, and returns an
// error wrapping ctx's. It is safe to call more than once and concurrently.
func (e *BinaryEngine) Close(ctx context.Context) error {
	return e.c.close(ctx, e.wg.Wait)
}

// Stats returns a snapshot of the engine's state.
func (e *BinaryEngine) Stats() Stats {
	s := Stats{
		Conns:      e.o.conns,
		Connected:  int(e.connected.Load()),
		Reconnects: e.reconnects.Load(),

		ConfirmMarkers: e.markers.Load(),
		MarkersOff:     e.markersOff.Load(),
	}
	e.c.stats(&s)
	return s
}

// closeConns closes every live connection: Close gave up.
func (e *BinaryEngine) closeConns() {
	e.connsMu.Lock()
	for c := range e.conns {
		_ = c.Close()
	}
	e.connsMu.Unlock()
}

func (e *BinaryEngine) mono() time.Duration { return time.Since(e.epoch) }

// reconnectDelay is the wait before connection attempt number fails+1.
func (e *BinaryEngine) reconnectDelay(fails int) time.Duration {
	return Backoff{Min: e.b.backoffMin, Max: e.b.backoffMax}.Delay(fails)
}

// binMaxFrameLen is the largest frame the engine writes with this payload limit.
func binMaxFrameLen(maxPayload int) int {
	return FrameLen(&Notification{Token: make(Token, BinaryLimits.TokenLen), Payload: make([]byte, maxPayload), Expiration: ExpireNow})
}

// worker runs connection slot i: it dials when there is work, runs a
// session until the connection ends, and dials again.
func (e *BinaryEngine) worker(i int) {
	defer e.wg.Done()
	var (
		s     = e.newSession()
		fails int // connection attempts in a row that achieved nothing
		dials int
	)
	log := e.o.log.With(slog.Int("conn", i))
	for {
		if fails > 0 {
			t := time.NewTimer(e.reconnectDelay(fails))
			select {
			case <-t.C:
			case <-e.c.drained:
				t.Stop()
				return
			case <-e.c.aborted:
				t.Stop()
				return
			}
		}
		var first *delivery
		select {
		case first = <-e.c.queue:
		case <-e.c.drained:
			return
		case <-e.c.aborted:
			return
		}
		conn, err := e.dial()
		if err != nil {
			fails++
			if e.c.isAborted() {
				e.c.retry(first, nil, false)
				continue
			}
			e.c.setLastErr(err)
			if CertificateRefused(err) {
				e.refused(first, err, log)
				continue
			}
			log.LogAttrs(e.c.ctx, slog.LevelWarn, "binary gateway dial failed",
				slog.String("addr", e.addr), slog.Int("fails", fails), slog.Any("err", err))
			e.c.retry(first, nil, false)
			continue
		}
		if dials++; dials > 1 {
			e.reconnects.Add(1)
		}
		e.connected.Add(1)
		s.reset(conn, log)
		ok := s.run(first)
		if s.retiring {
			e.retire(s)
			s, fails = e.newSession(), 0
			continue
		}
		e.ended(s)
		if ok {
			fails = 0
		} else {
			fails++
		}
	}
}

func (e *BinaryEngine) newSession() *binSession {
	return &binSession{e: e, w: bufio.NewWriterSize(nil, max(binWriteBuffer, binMaxFrameLen(e.b.maxPayload)))}
}

// Silent closes and the connection budget.
//
// A gateway that closes a connection without an error response leaves it
// unknown what it processed of what was in flight, so all of that is sent
// again; with the assumed-delivered window in seconds, that can be every
// notification written on the connection. A gateway (or a load balancer in
// front of it) that does so every N frames would then have the engine
// resend without bound. So a silent close that lost notifications sets a
// budget of half the frames the connection carried: from then on each
// connection takes at most that many notifications, then retires. It
// confirms what it holds with a marker (WithConfirmMarkers) or waits out
// the window on its own, while a fresh connection takes its place. Each
// connection that retires cleanly raises the budget by an eighth, so that
// a one-off loss does not cap the engine for ever.
const (
	binMinBudget   = 1  // the fewest notifications a connection carries
	binMaxDrainers = 64 // retired connections waiting out their window, per connection slot
)

// retire lets s, a connection that reached the budget, wait out the window
// in a goroutine of its own (or in the worker, when too many already do).
func (e *BinaryEngine) retire(s *binSession) {
	s.retiring, s.retired = false, true
	select {
	case e.drainers <- struct{}{}:
	default:
		s.loop(nil)
		e.ended(s)
		return
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		s.loop(nil)
		e.ended(s)
		<-e.drainers
	}()
}

// ended accounts for a session whose connection is over.
func (e *BinaryEngine) ended(s *binSession) {
	e.connected.Add(-1)
	e.untrack(s.conn)
	if s.full() && !s.lostSilently {
		for { // retired cleanly: raise the budget
			b := e.budget.Load()
			if b == 0 || e.budget.CompareAndSwap(b, min(b+b/8+1, math.MaxUint32-1)) {
				break
			}
		}
	}
}

// shrinkBudget lowers the budget after a silent close of a connection that
// carried written frames.
func (e *BinaryEngine) shrinkBudget(written uint32, log *slog.Logger) {
	nb := max(written/2, binMinBudget)
	for {
		b := e.budget.Load()
		if b != 0 && b <= nb {
			return
		}
		if e.budget.CompareAndSwap(b, nb) {
			level := slog.LevelDebug
			if b == 0 {
				level = slog.LevelWarn
			}
			log.LogAttrs(e.c.ctx, level, "binary gateway closes connections silently; connections now retire early",
				slog.String("addr", e.addr), slog.Uint64("closed_after", uint64(written)), slog.Uint64("budget", uint64(nb)))
			return
		}
	}
}

// refused fails first and everything queued: APNs refused the certificate.
func (e *BinaryEngine) refused(first *delivery, err error, log *slog.Logger) {
	log.LogAttrs(e.c.ctx, slog.LevelError, "binary gateway refused the client certificate",
		slog.String("addr", e.addr), slog.Any("err", err))
	// What is queued first: a Send that follows first's outcome must not
	// be failed by this refusal.
	cerr := e.c.closeGate(fmt.Errorf("%w: %w", ErrCredentials, err), true, nil)
	if first != nil {
		e.c.finish(first, cerr)
	}
}

func (e *BinaryEngine) dial() (*tls.Conn, error) {
	ctx, cancel := context.WithTimeout(e.c.ctx, e.b.dialTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", e.addr)
	if err != nil {
		return nil, fmt.Errorf("apns: connect to %s: %w", e.addr, err)
	}
	if tcp, ok := raw.(*net.TCPConn); ok {
		// Keep little in the kernel: what sits there unread by the
		// gateway is late for the assumed-delivered window and is sent
		// again after an error response.
		_ = tcp.SetWriteBuffer(binSendBuffer)
	}
	tc := tls.Client(e.c.o.socketConn(raw), e.tlsc) // e.tlsc names the server (ClientTLSConfig)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("apns: connect to %s: %w", e.addr, err)
	}
	e.connsMu.Lock()
	defer e.connsMu.Unlock()
	if e.c.isAborted() {
		_ = raw.Close()
		return nil, ErrClosed
	}
	e.conns[raw] = struct{}{}
	return tc, nil
}

func (e *BinaryEngine) untrack(c *tls.Conn) {
	e.connsMu.Lock()
	delete(e.conns, c.NetConn())
	e.connsMu.Unlock()
}
