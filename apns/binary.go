package apns

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
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
//     flight: all of it is sent again, each using up one retry. This can
//     deliver a notification twice.
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
// connections that ended processing nothing (status 10 or 0 naming ID 0):
// beyond it, each such resend uses up a retry, so that a gateway that
// always shuts down at once fails notifications instead of keeping them
// forever (as the HTTP/2 engine's maxRequeues).
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
	binMinBudget   = 32 // the fewest notifications a connection carries
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
	d := tls.Dialer{Config: e.tlsc}
	c, err := d.DialContext(ctx, "tcp", e.addr)
	if err != nil {
		return nil, fmt.Errorf("apns: connect to %s: %w", e.addr, err)
	}
	tc := c.(*tls.Conn)
	raw := tc.NetConn()
	if tcp, ok := raw.(*net.TCPConn); ok {
		// Keep little in the kernel: what sits there unread by the
		// gateway is late for the assumed-delivered window and is sent
		// again after an error response.
		_ = tcp.SetWriteBuffer(binSendBuffer)
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

type binReadResult struct {
	resp ErrorResponse
	err  error
}

// binSession is one connection's life: writing, the in-flight queue, and the
// end. A worker reuses its session (and buffers) across connections.
type binSession struct {
	e    *BinaryEngine
	log  *slog.Logger
	conn *tls.Conn
	w    *bufio.Writer

	ring   []*delivery // in flight: ring[start:], identifiers headID, headID+1, …
	start  int
	headID uint32
	nextID uint32

	readc      chan binReadResult
	unflushed  int // newest in-flight items still in the buffer, not flushed
	lastWrite  time.Duration
	deadlineAt time.Duration // when the write deadline was last set
	confirmed  bool          // some outcome came from this connection
	timer      *time.Timer
	marker     delivery // the confirm marker, in flight when marking
	marking    bool     // a marker is in flight: write nothing more

	retiring     bool // reached the budget with work in flight: to retire
	retired      bool // waiting out the window, replaced by a fresh connection
	lostSilently bool // the connection closed silently with work in flight
}

func (s *binSession) reset(c *tls.Conn, log *slog.Logger) {
	s.conn, s.log = c, log
	s.w.Reset(c)
	clear(s.ring)
	s.ring, s.start = s.ring[:0], 0
	s.headID, s.nextID = 1, 1
	s.unflushed = 0
	s.readc = make(chan binReadResult, 1)
	s.lastWrite = s.e.mono()
	s.deadlineAt = -time.Hour
	s.confirmed = false
	s.marking = false
	s.retiring, s.retired, s.lostSilently = false, false, false
	if s.timer == nil {
		s.timer = time.NewTimer(time.Hour)
	}
	s.timer.Stop()
}

func (s *binSession) inflight() int { return len(s.ring) - s.start }

// full reports whether the connection carried its budget of notifications
// (the budget in force now: a silent close elsewhere lowers it at once), or
// used up its identifiers.
func (s *binSession) full() bool {
	if b := s.e.budget.Load(); b > 0 && s.nextID > b {
		return true
	}
	return s.nextID == math.MaxUint32 // never reuse an identifier
}

// read waits for the error response (or the end of the connection).
func (s *binSession) read() {
	r, err := ReadErrorResponse(s.conn)
	s.readc <- binReadResult{r, err}
}

// run writes first and whatever else is queued until the connection ends.
// It returns whether the connection achieved anything (an outcome or an
// error response), so that a failing gateway is retried with backoff.
func (s *binSession) run(first *delivery) bool {
	e := s.e
	go s.read()
	return s.loop(s.write(first, e.mono(), e.o.now()))
}

// loop is run's body, after the first write (err its error); a retired
// session runs it again in its own goroutine, writing nothing more.
func (s *binSession) loop(err error) bool {
	e := s.e
	var now time.Duration
	for err == nil {
		// An error response that came meanwhile settles the in-flight
		// queue before anything is assumed delivered.
		select {
		case r := <-s.readc:
			return s.end(r, nil)
		default:
		}
		now = e.mono()
		s.expire(now)
		if s.markDue(now, s.full()) {
			if err = s.writeMarker(now); err != nil {
				break
			}
		}
		canWrite := !s.marking && !s.retired && !s.full()
		n := 0
		if canWrite {
			wall := e.o.now()
			for ; n < binMaxBatch && !s.full(); n++ {
				var it *delivery
				select {
				case it = <-e.c.queue:
				default:
				}
				if it == nil {
					break
				}
				if err = s.write(it, now, wall); err != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		select {
		case r := <-s.readc:
			return s.end(r, nil)
		default:
		}
		if n == binMaxBatch {
			continue // more may be queued
		}
		if s.w.Buffered() > 0 {
			if err = s.flush(now); err != nil {
				break
			}
			now = e.mono()
		}
		s.stampFlushed()
		if s.markDue(now, e.c.isClosing() || s.full()) { // nothing queued: confirm what is in flight
			if err = s.writeMarker(now); err != nil {
				break
			}
		}
		canWrite = canWrite && !s.marking && !s.full()
		if !canWrite && !s.marking && !s.retired && s.inflight() > 0 {
			s.retiring = true // the budget is spent: a fresh connection takes over
			return true
		}
		// Nothing queued: wait for work, the error response, the next
		// expiry or marker, or the idle timeout.
		var wake time.Duration
		if s.inflight() > 0 {
			oldest := s.ring[s.start].written
			wake = oldest + e.b.assumeDelivered - now
			if s.canMark() {
				wake = min(wake, oldest+e.b.confirmAfter-now)
			}
		} else {
			if !canWrite || now-s.lastWrite >= e.b.idleTimeout {
				return s.close()
			}
			wake = s.lastWrite + e.b.idleTimeout - now
		}
		s.timer.Reset(wake)
		queue := e.c.queue
		if !canWrite {
			queue = nil
		}
		var closing chan struct{} // Close marks what waits here at once
		if s.inflight() > 0 && s.canMark() && !e.c.isClosing() {
			closing = e.c.closing
		}
		select {
		case it := <-queue:
			err = s.write(it, e.mono(), e.o.now())
		case r := <-s.readc:
			s.timer.Stop()
			return s.end(r, nil)
		case <-closing:
		case <-s.timer.C:
		case <-e.c.drained: // closing, nothing pending: in flight is empty
			s.timer.Stop()
			return s.close()
		case <-e.c.aborted:
			s.timer.Stop()
			return s.fail(e.c.closedErr())
		}
		s.timer.Stop()
	}
	// A write failed. The gateway may have answered with an error response
	// and closed, as APNs does: the reader reports it or the end.
	_ = s.conn.SetReadDeadline(time.Now().Add(binReadGrace))
	select {
	case r := <-s.readc:
		return s.end(r, err)
	case <-e.c.aborted:
		return s.fail(e.c.closedErr())
	}
}

// canMark reports whether this session may write a confirm marker: markers
// are on, none is in flight here, and an identifier is left for one.
func (s *binSession) canMark() bool {
	return s.e.b.confirmAfter > 0 && !s.e.markersOff.Load() && !s.marking && s.nextID < math.MaxUint32
}

// markDue reports whether to write a confirm marker now: one can be
// written, and the oldest notification in flight was flushed confirmAfter
// ago, or at all when atOnce (Close drains and nothing is queued).
func (s *binSession) markDue(now time.Duration, atOnce bool) bool {
	if s.inflight() == 0 || !s.canMark() {
		return false
	}
	oldest := s.ring[s.start].written
	if oldest == binNotFlushed {
		return false
	}
	return atOnce || now-oldest >= s.e.b.confirmAfter
}

// writeMarker writes and flushes the confirm marker: a frame with an empty
// token and an empty payload, which the gateway answers with an error
// response naming it (status 2, missing device token).
func (s *binSession) writeMarker(now time.Duration) error {
	buf := appendFrame(s.w.AvailableBuffer(), s.nextID, nil, nil, 0, false, uint8(PriorityImmediate))
	if _, err := s.w.Write(buf); err != nil {
		return err
	}
	s.marker = delivery{deliveryState: deliveryState{marker: true}}
	s.push(&s.marker, now)
	s.marking = true
	return s.flush(now)
}

// markerFailed turns confirm markers off for the engine: the gateway did
// not answer one as APNs did.
func (s *binSession) markerFailed(how string) {
	s.marking = false
	if s.e.c.isAborted() {
		return // Close gave up and closed the connection: no evidence
	}
	if s.e.markersOff.CompareAndSwap(false, true) {
		s.log.LogAttrs(s.e.c.ctx, slog.LevelWarn, "binary gateway "+how+" a confirm marker; confirm markers off, back to the assumed-delivered window",
			slog.String("addr", s.e.addr))
	}
}

// write encodes it into the buffer and puts it in flight.
func (s *binSession) write(it *delivery, now time.Duration, wall time.Time) error {
	n := it.n
	if err := expired(n, wall); err != nil {
		s.e.c.finish(it, err)
		return nil
	}
	if l := FrameLen(n); s.w.Available() < l {
		if err := s.flush(now); err != nil {
			s.push(it, now) // nothing of it was written, but keep it in order
			return err
		}
	}
	buf := AppendFrame(s.w.AvailableBuffer(), s.nextID, n)
	_, err := s.w.Write(buf)
	s.push(it, now)
	return err
}

func (s *binSession) push(it *delivery, now time.Duration) {
	if !it.marker {
		s.e.c.written(it)
	}
	it.written = binNotFlushed
	s.ring = append(s.ring, it)
	s.unflushed++
	s.nextID++
	s.lastWrite = now
}

// binNotFlushed is the written time of an item still in the buffer: the
// assumed-delivered window starts only once its frame left the process.
const binNotFlushed = time.Duration(math.MaxInt64)

// flush writes the buffer out and starts the window of what it held.
func (s *binSession) flush(now time.Duration) error {
	s.refreshDeadline(now)
	if err := s.w.Flush(); err != nil {
		return err
	}
	s.stampFlushed()
	return nil
}

// stampFlushed starts the assumed-delivered window, now, of the items
// whose frames were flushed (a flush may have blocked for long under
// backpressure: the window must not run while the bytes wait here).
func (s *binSession) stampFlushed() {
	if s.unflushed == 0 || s.w.Buffered() > 0 {
		return
	}
	t := s.e.mono()
	for _, it := range s.ring[len(s.ring)-s.unflushed:] {
		it.written = t
	}
	s.unflushed = 0
}

// refreshDeadline keeps a write deadline of dialTimeout ahead, renewing it
// at most every second.
func (s *binSession) refreshDeadline(now time.Duration) {
	if now-s.deadlineAt < time.Second {
		return
	}
	s.deadlineAt = now
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.e.b.dialTimeout))
}

// pop takes the oldest in-flight item.
func (s *binSession) pop() *delivery {
	it := s.ring[s.start]
	s.ring[s.start] = nil
	s.start++
	s.headID++
	s.unflushed = min(s.unflushed, len(s.ring)-s.start)
	switch {
	case s.start == len(s.ring):
		s.ring, s.start = s.ring[:0], 0
	case s.start >= 1024 && 2*s.start >= len(s.ring):
		k := copy(s.ring, s.ring[s.start:])
		clear(s.ring[k:])
		s.ring, s.start = s.ring[:k], 0
	}
	return it
}

// expire reports delivered what stayed unanswered for the window, waking
// the dispatcher once for them all.
func (s *binSession) expire(now time.Duration) {
	c := s.e.c
	for s.inflight() > 0 && now-s.ring[s.start].written >= s.e.b.assumeDelivered {
		it := s.pop()
		if it.marker {
			s.markerFailed("did not answer")
			continue
		}
		s.confirm()
		c.finishHeld(it, nil)
	}
	c.flushOutcomes()
}

// confirm notes that the gateway took part in an outcome on this
// connection (it accepted the client certificate; the core reopens its
// credentials gate on the delivered outcomes), so the connection did not fail.
func (s *binSession) confirm() { s.confirmed = true }

// close ends a session with nothing in flight.
func (s *binSession) close() bool {
	_ = s.conn.NetConn().Close()
	<-s.readc
	return true
}

// fail ends the session because Close gave up: everything in flight fails.
func (s *binSession) fail(cause error) bool {
	_ = s.conn.NetConn().Close()
	<-s.readc
	for s.inflight() > 0 {
		if it := s.pop(); !it.marker {
			s.e.c.failClosed(it)
		}
	}
	return true
}

// end handles the end of the connection: the reader's result r, and the
// write error that ended it first, if any.
func (s *binSession) end(r binReadResult, writeErr error) bool {
	e := s.e
	_ = s.conn.NetConn().Close()
	if r.err == nil {
		s.onErrorResponse(r.resp)
		// A connection on which nothing was processed (a shutdown naming
		// ID 0 before any outcome) achieved nothing: back off.
		return s.confirmed
	}
	cause := r.err
	if writeErr != nil && !errors.Is(r.err, writeErr) {
		cause = fmt.Errorf("%w (after write error: %v)", r.err, writeErr)
	}
	cause = fmt.Errorf("apns: connection to %s lost: %w", e.addr, cause)
	e.c.setLastErr(cause)
	if CertificateRefused(r.err) {
		s.log.LogAttrs(e.c.ctx, slog.LevelError, "binary gateway refused the client certificate",
			slog.String("addr", e.addr), slog.Any("err", r.err))
		cerr := e.c.closeGate(fmt.Errorf("%w: %w", ErrCredentials, r.err), true, nil) // queued first, as in refused
		for s.inflight() > 0 {
			e.c.finish(s.pop(), cerr)
		}
		return false
	}
	if s.marking {
		s.markerFailed("closed the connection without an error response after")
	}
	if s.inflight() > 0 {
		s.lostSilently = true
		e.shrinkBudget(s.nextID-1, s.log)
		s.log.LogAttrs(e.c.ctx, slog.LevelWarn, "binary gateway connection lost; resending in flight",
			slog.Int("in_flight", s.inflight()), slog.Any("err", cause))
	}
	for s.inflight() > 0 {
		e.c.retry(s.pop(), cause, true)
	}
	return s.confirmed
}

// onErrorResponse settles the in-flight queue after APNs named one
// notification: status 10 names the last good one, others the bad one.
func (s *binSession) onErrorResponse(r ErrorResponse) {
	e := s.e
	k := int64(r.ID) - int64(s.headID) // index of the named one in flight
	if s.marking && k == int64(s.inflight())-1 {
		// The confirm marker: the gateway processed everything before it.
		s.confirm()
		for ; k > 0; k-- {
			e.c.finish(s.pop(), nil)
		}
		s.pop()
		s.marking = false
		e.markers.Add(1)
		return
	}
	if s.marking && (r.ID == 0 || k >= int64(s.inflight())) && !(r.Status == StatusShutdown || r.Status == StatusNoErrors) {
		s.markerFailed("answered with an unknown identifier")
	}
	// Status 10 (and 0, NoErrors: nothing was wrong) names the last
	// notification processed; ID 0 names none. What follows is resent at
	// no cost to its retries: the gateway went away, it refused nothing.
	lastGood := r.Status == StatusShutdown || r.Status == StatusNoErrors
	switch {
	case r.ID == 0 && lastGood:
		// Nothing processed: no outcome, so no confirm() (the certificate
		// may yet be refused), and the resend is free only a few times.
		s.log.LogAttrs(e.c.ctx, slog.LevelInfo, "binary gateway ended the connection before processing any in flight",
			slog.String("status", r.Status.String()), slog.Int("in_flight", s.inflight()))
		cause := fmt.Errorf("apns: gateway answered %s before processing any notification", r.Status)
		e.c.setLastErr(cause)
		for s.inflight() > 0 {
			it := s.pop()
			if it.idleEnds++; it.idleEnds > binMaxIdleEnds {
				e.c.retry(it, cause, true)
			} else {
				e.c.retry(it, nil, false)
			}
		}
		return
	case r.ID != 0 && k < 0:
		// Named one already reported delivered (window too short for this
		// gateway); all in flight came after it and were discarded.
		s.log.LogAttrs(e.c.ctx, slog.LevelWarn, "error response for a notification already assumed delivered",
			slog.Uint64("id", uint64(r.ID)), slog.String("status", r.Status.String()))
		s.resendAll(nil)
		return
	case r.ID == 0 || k >= int64(s.inflight()):
		cause := fmt.Errorf("apns: gateway answered %s for unknown notification %d", r.Status, r.ID)
		s.log.LogAttrs(e.c.ctx, slog.LevelWarn, "error response for an unknown notification",
			slog.Uint64("id", uint64(r.ID)), slog.String("status", r.Status.String()))
		e.c.setLastErr(cause)
		s.resendAll(cause)
		return
	}
	s.confirm() // the named one is in flight: an outcome
	for ; k > 0; k-- {
		e.c.finish(s.pop(), nil)
	}
	it := s.pop()
	switch {
	case lastGood:
		e.c.finish(it, nil)
	case r.Status.Temporary():
		e.c.retry(it, fmt.Errorf("apns: gateway answered %s", r.Status), true)
	default:
		rej := &RejectionError{ID: r.ID, Status: r.Status, Reason: r.Status.String()}
		if e.o.log.Enabled(e.c.ctx, slog.LevelDebug) {
			s.log.LogAttrs(e.c.ctx, slog.LevelDebug, "notification rejected",
				slog.Uint64("id", uint64(r.ID)), slog.String("reason", rej.Reason), slog.Any("token", it.n.Token))
		}
		e.c.finish(it, rej)
	}
	s.resendAll(nil)
}

// resendAll sends everything in flight again: at no cost to retries
// without a cause (the gateway discarded it unread), else using one up.
func (s *binSession) resendAll(cause error) {
	for s.inflight() > 0 {
		s.e.c.retry(s.pop(), cause, cause != nil)
	}
}
