package apnstest

import (
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2/hpack"

	"github.com/jetpush/apns-worker/apns"
)

// Answers of the HTTP2Server: a finished request checked and answered,
// now, after the configured latency, or held while flow control blocks it.

// finish checks a fully read request and answers it, now or after the
// configured latency, unless a fault leaves it unanswered.
func (c *h2conn) finish(st *h2stream) {
	st.ended = true
	status, reason := c.check(st)
	if id, ok := st.get(h2hID); ok && apns.IsUUID(id) {
		st.apnsID = id
	} else {
		st.apnsID = c.newUUID()
	}
	var ans *HTTP2Answer
	if status == 0 {
		r, act := c.s.decide(c, st)
		switch act {
		case h2refuse:
			st.reset, st.rstCode = true, h2errRefusedStream
		case h2close:
			c.silentClose = true
			return
		case h2stall:
			c.stalled = true
			return
		}
		status, reason, ans = r.status, r.reason, r.ans
		st.accepted = act == h2answer && status == 200 && (ans == nil || ans.Taken)
	} else {
		c.s.mu.Lock()
		c.s.statuses[status]++
		c.s.mu.Unlock()
	}
	st.status = status
	switch {
	case ans != nil:
		st.reset, st.rstCode = ans.Reset, uint32(ans.ResetCode)
		st.ctype, st.padding, st.immediate, st.fields = ans.ContentType, ans.Padding, ans.Immediate, ans.Fields
		st.out = ans.Body // shared by every stream it answers: memory stays bounded
	case status != 200:
		st.ctype = "application/json"
		st.respBody = append(st.respBody[:0], `{"reason":"`...)
		st.respBody = append(st.respBody, reason...)
		st.respBody = append(st.respBody, '"')
		if status == 410 {
			st.respBody = append(st.respBody, `,"timestamp":`...)
			st.respBody = strconv.AppendInt(st.respBody, c.s.now().UnixMilli(), 10)
		}
		st.respBody = append(st.respBody, '}')
		st.out = st.respBody
	}
	if lat := time.Duration(c.s.latency.Load()); lat > 0 && !st.immediate {
		st.due = time.Now().Add(lat)
		c.delayed = append(c.delayed, st)
		if len(c.delayed) == 1 { // else the delayer's timer is set for the head
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
		return
	}
	c.respond(st)
}

// respond writes st's answer: a reset, or HEADERS and, window permitting,
// DATA.
func (c *h2conn) respond(st *h2stream) {
	if st.done || c.stalled {
		return
	}
	if st.reset {
		c.writeRST(st.id, st.rstCode)
		c.closeStream(st)
		return
	}
	c.hbuf.Reset()
	_ = c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: h2StatusText(st.status)})
	_ = c.henc.WriteField(hpack.HeaderField{Name: "apns-id", Value: st.apnsID, Sensitive: true})
	if st.ctype != "" {
		_ = c.henc.WriteField(hpack.HeaderField{Name: "content-type", Value: st.ctype})
	}
	for _, f := range st.fields {
		_ = c.henc.WriteField(f)
	}
	if st.padding > 0 {
		_ = c.henc.WriteField(hpack.HeaderField{Name: "x-padding", Value: strings.Repeat("x", st.padding), Sensitive: true})
	}
	flags := byte(0)
	if len(st.out) == 0 {
		flags |= h2flagEndStream
	}
	c.writeHeaderBlock(st.id, flags, c.hbuf.Bytes())
	if len(st.out) == 0 {
		c.closeStream(st)
		return
	}
	if !c.sendBody(st) {
		c.blocked = append(c.blocked, st)
	}
}

// writeHeaderBlock writes a header block as HEADERS and, when it is larger
// than a frame, CONTINUATION frames.
func (c *h2conn) writeHeaderBlock(sid uint32, flags byte, b []byte) {
	typ := byte(h2fHeaders)
	for {
		n := min(len(b), h2maxFrame)
		f := flags
		if n == len(b) {
			f |= h2flagEndHeaders
		}
		c.writeFrame(typ, f, sid, b[:n])
		if b = b[n:]; len(b) == 0 {
			return
		}
		typ, flags = h2fContinuation, 0
	}
}

// sendBody writes what the flow-control windows allow of st's response
// body, in frames of at most h2maxFrame bytes; it reports whether all of
// it is written.
func (c *h2conn) sendBody(st *h2stream) bool {
	for st.sent < len(st.out) {
		n := int64(len(st.out) - st.sent)
		n = min(n, h2maxFrame, c.connSendWindow, st.sendWindow)
		if n <= 0 {
			return false
		}
		c.connSendWindow -= n
		st.sendWindow -= n
		var flags byte
		if st.sent+int(n) == len(st.out) {
			flags = h2flagEndStream
		}
		c.writeFrame(h2fData, flags, st.id, st.out[st.sent:st.sent+int(n)])
		st.sent += int(n)
	}
	c.closeStream(st)
	return true
}

func (c *h2conn) sendBlocked() {
	if len(c.blocked) == 0 {
		return
	}
	keep := c.blocked[:0]
	for _, st := range c.blocked {
		if !st.done && !c.sendBody(st) {
			keep = append(keep, st)
		}
	}
	clear(c.blocked[len(keep):])
	c.blocked = keep
}

// delayer answers delayed responses when they are due, in the order they
// were read (the queue is in due order while the latency stays the same; a
// response queued after a latency cut waits for those before it).
func (c *h2conn) delayer() {
	defer c.s.wg.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-c.wake:
		case <-t.C:
		}
		c.mu.Lock()
		now := time.Now()
		i := 0
		for ; i < len(c.delayed); i++ {
			st := c.delayed[i]
			if st.done {
				continue
			}
			if st.due.After(now) {
				break
			}
			c.respond(st)
		}
		clear(c.delayed[:i])
		c.delayed = c.delayed[i:]
		var next time.Time
		if len(c.delayed) > 0 {
			next = c.delayed[0].due
		}
		c.flush()
		c.mu.Unlock()
		if !next.IsZero() {
			t.Reset(time.Until(next))
		}
	}
}
