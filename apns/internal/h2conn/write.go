package h2conn

import (
	"fmt"
	"strconv"
	"time"

	"golang.org/x/net/http2"
)

// The writer: one goroutine puts requests, control frames and DATA on the
// wire, coalescing what is ready into one write, and keeps the connection
// alive (PING) and within its deadlines.

// flush writes out what the writer buffered, in one write.
func (c *Conn[R]) flush() error {
	if len(c.wbuf.b) == 0 {
		return nil
	}
	_, err := c.nc.Write(c.wbuf.b)
	c.wbuf.b = c.wbuf.b[:0]
	return err
}

// poke wakes the writer; it never blocks.
func (c *Conn[R]) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// writeLoop is the writer's goroutine until the connection ends or stop:
// it takes requests from the queue (with the intake token, if shared),
// writes what is ready in one flush, and keeps house at each tick.
func (c *Conn[R]) writeLoop(stop <-chan struct{}) error {
	tick := time.NewTicker(c.tick)
	defer tick.Stop()
	timeout := int64(c.cfg.RequestTimeout)
	held := false    // Config.Intake's token
	fresh := false   // held, and no request taken since it was acquired
	sharing := false // the turn began below intakeShare streams: its batches stop there
	release := func() {
		if held {
			held = false
			c.cfg.Intake <- struct{}{} // never blocks: the one token was ours
		}
	}
	defer release()
	for {
		c.mu.Lock()
		if c.probing && c.pingSent != 0 && c.lastRead.Load() > c.pingSent {
			c.probing = false // the connection is alive
		}
		c.writeControlLocked()
		c.resumeBlockedLocked()
		can := c.canOpenLocked()
		shareTaken := len(c.streams) >= intakeShare
		dead, finished, code := c.dead, c.goaway && len(c.streams) == 0, c.goawayCode
		c.mu.Unlock()
		if !can || len(c.wbuf.b) > 0 && len(c.cfg.Queue) > 0 || shareTaken && !fresh {
			// Full, requests wait while this one writes, or it has its
			// share of streams open: another connection takes what comes.
			// (If none does, this one takes the token back, and a batch
			// with it, before it offers it again.)
			release()
		}
		if dead != nil {
			c.goodbye(dead)
			return dead
		}
		if len(c.wbuf.b) > 0 {
			// The deadline frees a writer stuck on a peer that stopped reading.
			_ = c.nc.SetWriteDeadline(time.Now().Add(c.cfg.RequestTimeout))
			if err := c.flush(); err != nil {
				return err
			}
		}
		if finished {
			if c.clean = code == http2.ErrCodeNo; c.clean {
				return nil
			}
			return &ConnError{Code: code, Reason: "drained after GOAWAY", Remote: true}
		}
		var q <-chan R
		var intake chan struct{}
		switch {
		case !can:
		case c.cfg.Intake == nil || held:
			q = c.cfg.Queue
		default:
			intake = c.cfg.Intake
		}
		select {
		case <-intake:
			held, fresh, sharing = true, true, !shareTaken
		case r := <-q:
			fresh = false
			// Write what is queued, up to a batch, then flush once.
			deadline := time.Now().UnixNano() + timeout
			for c.writeRequest(r, deadline, held && sharing) && len(c.wbuf.b) < maxBatchBytes {
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
			c.mu.Lock()
			dead := c.dead
			c.mu.Unlock()
			c.goodbye(dead)
			return c.readErr
		case <-stop:
			return nil
		}
	}
}

// writeRequest frames r as a new stream; it reports whether to take
// another request right away: a stream may be opened, and, if share, this
// connection has fewer than intakeShare streams open.
func (c *Conn[R]) writeRequest(r R, deadline int64, share bool) bool {
	if !c.cfg.Owner.Prepare(r) {
		return true
	}
	c.mu.Lock()
	if !c.canOpenLocked() { // a GOAWAY or SETTINGS arrived meanwhile
		c.mu.Unlock()
		c.cfg.Owner.Done(r, ErrRefused)
		return false
	}
	// Encoding changes the hpack table the peer mirrors: only a header
	// block that is sure to be sent may be encoded.
	c.hbuf.Reset()
	c.he.begin()
	c.cfg.Owner.EncodeHeaders(r, &c.he)
	s := r.H2Stream()
	id := c.nextID
	c.nextID += 2
	c.lastOpened.Store(id)
	s.id, s.deadline, s.sent, s.window, s.recv = id, deadline, 0, c.initWindow, 0
	s.Status, s.keep, s.Body, s.clen, s.got = 0, [maxKeep]string{}, s.Body[:0], -1, 0
	c.streams[id] = r
	c.writeHeadersLocked(id, c.hbuf.Bytes(), len(s.Payload) == 0)
	if !c.writeDataLocked(s) {
		c.blocked = append(c.blocked, id)
	}
	can := c.canOpenLocked() && (!share || len(c.streams) < intakeShare)
	c.mu.Unlock()
	return can
}

func (c *Conn[R]) writeHeadersLocked(id uint32, block []byte, endStream bool) {
	first := block[:min(len(block), c.maxFrame)]
	rest := block[len(first):]
	_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first,
		EndHeaders: len(rest) == 0, EndStream: endStream})
	for len(rest) > 0 {
		frag := rest[:min(len(rest), c.maxFrame)]
		rest = rest[len(frag):]
		_ = c.fr.WriteContinuation(id, len(rest) == 0, frag)
	}
}

// writeDataLocked writes as much of s's payload as the flow-control
// windows allow; it reports whether all of it is written.
func (c *Conn[R]) writeDataLocked(s *Stream) bool {
	p := s.Payload
	for s.sent < len(p) {
		n := int64(min(len(p)-s.sent, c.maxFrame))
		n = min(n, c.connWindow, s.window)
		if n <= 0 {
			return false
		}
		end := s.sent + int(n)
		_ = c.fr.WriteData(s.id, end == len(p), p[s.sent:end])
		s.sent = end
		c.connWindow -= n
		s.window -= n
	}
	return true
}

func (c *Conn[R]) resumeBlockedLocked() {
	for len(c.blocked) > 0 {
		if r, ok := c.streams[c.blocked[0]]; ok && !c.writeDataLocked(r.H2Stream()) {
			return // still blocked; streams go in order
		}
		c.blocked = c.blocked[1:]
	}
	c.blocked = c.blocked[:0:0]
}

func (c *Conn[R]) canOpenLocked() bool {
	return c.dead == nil && !c.goaway && !c.probing && uint32(len(c.streams)) < c.maxStreams &&
		c.connWindow > 0 && len(c.blocked) == 0 && c.nextID < maxWindow
}

func (c *Conn[R]) writeControlLocked() {
	if c.tableSet {
		c.henc.SetMaxDynamicTableSizeLimit(c.tableSize)
		c.he.tableChanged()
		c.tableSet = false
	}
	for ; c.settingsAcks > 0; c.settingsAcks-- {
		_ = c.fr.WriteSettingsAck()
	}
	for _, d := range c.pingAcks {
		_ = c.fr.WritePing(true, d)
	}
	c.pingAcks = c.pingAcks[:0]
	for _, rs := range c.resets {
		_ = c.fr.WriteRSTStream(rs.id, http2.ErrCode(rs.n))
	}
	c.resets = c.resets[:0]
	if c.connWU > 0 {
		_ = c.fr.WriteWindowUpdate(0, c.connWU)
		c.connWU = 0
	}
	for _, w := range c.streamWU {
		_ = c.fr.WriteWindowUpdate(w.id, w.n)
	}
	c.streamWU = c.streamWU[:0]
	if c.nextID >= maxWindow && !c.goaway {
		c.goaway = true // stream ids used up: drain and reconnect
	}
}

// housekeep times out requests and probes an idle connection with PING.
func (c *Conn[R]) housekeep() error {
	now := time.Now().UnixNano()
	var expired []R
	c.mu.Lock()
	for id, r := range c.streams {
		if r.H2Stream().deadline <= now {
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
		c.cfg.Owner.Done(r, ErrTimeout)
	}
	if c.pingSent != 0 {
		if c.lastRead.Load() > c.pingSent {
			c.pingSent = 0
			c.mu.Lock()
			c.probing = len(expired) > 0
			c.mu.Unlock()
		} else if now-c.pingSent > c.pingTimeout {
			return fmt.Errorf("h2conn: PING unanswered for %v", time.Duration(c.pingTimeout))
		}
	}
	switch {
	case len(expired) > 0 && c.pingSent == 0:
		c.ping(min(c.cfg.RequestTimeout, probeTimeout))
	case len(expired) > 0:
		c.pingTimeout = min(c.pingTimeout, int64(min(c.cfg.RequestTimeout, probeTimeout)))
	case c.pingSent == 0 && now-c.lastRead.Load() > int64(c.cfg.PingInterval):
		c.ping(c.cfg.RequestTimeout)
	}
	if len(expired) > 0 {
		c.poke() // stream slots freed
	}
	return nil
}

// ping queues a PING that must be answered within timeout.
func (c *Conn[R]) ping(timeout time.Duration) {
	now := time.Now().UnixNano()
	var data [8]byte
	copy(data[:], strconv.FormatInt(now, 36))
	_ = c.fr.WritePing(false, data)
	c.pingSent, c.pingTimeout = now, int64(timeout)
}
