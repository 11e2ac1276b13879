package apns

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"
)

// One binary connection (a session): it writes frames from the core's
// queue, keeps what is in flight in a ring until the window assumes it
// delivered or an error response settles it, marks, and ends.

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

	ring    []binFlight // in flight: ring[start:], identifiers headID, headID+1, …
	expired []*delivery // expire's run, reported at once
	start   int
	headID  uint32
	nextID  uint32

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
		// Whether Close had begun before the queue is polled below: only
		// then does an empty queue mean nothing is left to write.
		draining := e.c.isClosing()
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
		if s.markDue(now, draining || s.full()) { // nothing queued: confirm what is in flight
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
			oldest := s.ring[s.start].flushed
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
		if s.inflight() > 0 && s.canMark() && !draining {
			closing = e.c.closing // closed already if Close began since: poll again
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
	oldest := s.ring[s.start].flushed
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
	s.ring = append(s.ring, binFlight{it, binNotFlushed})
	s.unflushed++
	s.nextID++
	s.lastWrite = now
}

// binFlight is a notification in flight on a session. The ring keeps when
// its frame was flushed, so that expire finds what the window assumed
// delivered from the ring alone, reading it in order, without touching the
// deliveries (scattered in memory, and read again by the dispatcher).
type binFlight struct {
	d       *delivery
	flushed time.Duration // when its frame left the process (binNotFlushed before)
}

// binNotFlushed is the flushed time of an item still in the buffer: the
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
	for i := len(s.ring) - s.unflushed; i < len(s.ring); i++ {
		s.ring[i].flushed = t
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
	it := s.ring[s.start].d
	s.ring[s.start] = binFlight{}
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

// expire reports delivered what stayed unanswered for the window, at once
// and without reading the deliveries: the dispatcher does.
func (s *binSession) expire(now time.Duration) {
	for s.inflight() > 0 && now-s.ring[s.start].flushed >= s.e.b.assumeDelivered {
		it := s.pop()
		if it == &s.marker {
			s.markerFailed("did not answer")
			continue
		}
		s.confirm()
		s.expired = append(s.expired, it)
	}
	if len(s.expired) > 0 {
		s.e.c.finishDelivered(s.expired)
		clear(s.expired)
		s.expired = s.expired[:0]
	}
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
		// The gateway or the network ends a connection on whatever is in
		// flight, seldom because of it (APNs answers a bad notification):
		// the first few such ends are free, as those that processed nothing.
		it := s.pop()
		it.idleEnds++
		e.c.retry(it, cause, it.idleEnds > binMaxIdleEnds)
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
