package apnstest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2/hpack"
)

// One connection of the HTTP2Server: its goroutine reads frames, decodes
// each request's headers, checks and answers it (delayed answers go through
// a second goroutine).

// Header indexes of the request headers the server checks.
const (
	h2hAuth = iota
	h2hPushType
	h2hTopic
	h2hPriority
	h2hExpiration
	h2hCollapseID
	h2hID
	h2hCount
)

func h2HeaderIndex(name string) int {
	switch name {
	case "authorization":
		return h2hAuth
	case "apns-push-type":
		return h2hPushType
	case "apns-topic":
		return h2hTopic
	case "apns-priority":
		return h2hPriority
	case "apns-expiration":
		return h2hExpiration
	case "apns-collapse-id":
		return h2hCollapseID
	case "apns-id":
		return h2hID
	}
	return -1
}

type h2stream struct {
	id         uint32
	method     string
	path       string
	token      string // lowercase hex, once the path checked out
	vals       [h2hCount]string
	has        uint32 // bit i: vals[i] present
	dup        bool
	sawRegular bool
	malformed  bool
	other      []string          // names of other regular headers, for duplicates
	header     map[string]string // recorded headers (HTTP2Record)
	body       []byte
	bodyLen    int
	unrefunded uint32 // DATA bytes not yet given back with a stream WINDOW_UPDATE
	sendWindow int64
	recvWindow int64 // what the client may still send on this stream
	ended      bool  // request fully read
	done       bool  // answered or reset
	due        time.Time

	// response
	reset     bool   // answer with RST_STREAM rstCode
	rstCode   uint32 // with reset
	status    int
	apnsID    string
	ctype     string              // content-type, if any
	padding   int                 // bytes of x-padding header
	fields    []hpack.HeaderField // HTTP2Answer.Fields
	immediate bool                // skips the latency queue
	accepted  bool                // counted as accepted (the server's own 200)
	respBody  []byte              // owned buffer for the server's own error bodies
	out       []byte              // the body to send: respBody, or an injected answer's (shared, read-only)
	sent      int                 // bytes of out written
}

func (st *h2stream) get(i int) (string, bool) { return st.vals[i], st.has&(1<<i) != 0 }

type h2conn struct {
	s   *HTTP2Server
	id  int
	raw net.Conn  // the TCP connection
	nc  *tls.Conn // over raw
	br  *bufio.Reader
	bw  *bufio.Writer

	done chan struct{} // closed when serve returns
	wake chan struct{} // pokes the delayer

	// Reader only.
	rbuf      []byte
	dec       *hpack.Decoder
	cur       *h2stream // the stream the decoder emits into
	scratch   h2stream
	contID    uint32 // stream of an unfinished header block (awaiting CONTINUATION)
	contFlags byte
	contBuf   []byte

	mu             sync.Mutex // guards the fields below and all writes
	ready          bool       // preface read, SETTINGS sent
	writeClosed    bool
	henc           *hpack.Encoder
	hbuf           bytes.Buffer
	wbuf           [32]byte
	fhdr           [9]byte
	streams        map[uint32]*h2stream
	maxStreams     uint32   // acknowledged limit
	pendingMax     []uint32 // limits sent, not yet acknowledged
	peerWindow     int64    // peer's SETTINGS_INITIAL_WINDOW_SIZE
	connSendWindow int64
	recvUnacked    uint32 // DATA bytes not yet given back with a connection WINDOW_UPDATE
	connWindow     int64  // the connection receive window we advertise
	connRecv       int64  // what the client may still send on the connection
	lastStream     uint32
	goAwaySent     bool
	goAwayLast     uint32
	nreq           int
	maxOpen        int
	acked          bool // the client acknowledged our first SETTINGS
	certOK         bool
	jwt            string // last verified token on this connection
	jwtIat         time.Time
	blocked        []*h2stream // headers sent, body waiting for window
	delayed        []*h2stream
	rnd            *mrand.PCG
	free           []*h2stream
	silentClose    bool // a fault: close the TCP connection now, no GOAWAY
	abort          bool // a fault's GOAWAY with an error code was sent: close now
	stalled        bool // a fault: read and discard everything, answer nothing
}

func newH2Conn(s *HTTP2Server, nc net.Conn, id int) *h2conn {
	c := &h2conn{
		s: s, id: id, raw: nc, nc: tls.Server(nc, s.tlsConf),
		done:           make(chan struct{}),
		wake:           make(chan struct{}, 1),
		streams:        map[uint32]*h2stream{},
		maxStreams:     math.MaxUint32,
		peerWindow:     65535,
		connSendWindow: 65535,
	}
	var seed [16]byte
	_, _ = rand.Read(seed[:])
	c.rnd = mrand.NewPCG(binary.BigEndian.Uint64(seed[:8]), binary.BigEndian.Uint64(seed[8:]))
	return c
}

func (c *h2conn) serve() {
	defer func() {
		c.raw.Close()
		close(c.done)
		c.s.removeConn(c)
		c.s.wg.Done()
	}()
	tc := c.nc
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		return
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != "h2" {
		return
	}
	c.certOK = len(cs.VerifiedChains) > 0
	c.br = bufio.NewReaderSize(tc, 32<<10)
	c.bw = bufio.NewWriterSize(tc, 32<<10)
	var pre [len(h2ClientPreface)]byte
	if _, err := io.ReadFull(c.br, pre[:]); err != nil || string(pre[:]) != h2ClientPreface {
		return
	}
	_ = tc.SetDeadline(time.Time{})
	c.rbuf = make([]byte, 9+h2maxFrame)
	c.dec = hpack.NewDecoder(4096, c.emit)
	c.dec.SetMaxStringLength(h2maxHeaderBuf)
	c.henc = hpack.NewEncoder(&c.hbuf)

	c.mu.Lock()
	lim := c.s.maxStreams.Load()
	c.writeSettings(
		h2setMaxConcurrentStreams, lim,
		h2setInitialWindowSize, c.s.window,
		h2setMaxHeaderListSize, h2maxHeaderBuf,
	)
	c.pendingMax = append(c.pendingMax, lim)
	c.connWindow = int64(max(h2connWindow, c.s.window))
	c.connRecv = c.connWindow
	c.writeWindowUpdate(0, uint32(c.connWindow-65535))
	c.settingsFaults(0)
	c.ready = true
	c.flush()
	c.mu.Unlock()

	for {
		typ, flags, sid, p, err := c.readFrame()
		if err != nil {
			var ce h2connErr
			if errors.As(err, &ce) {
				c.mu.Lock()
				c.connError(uint32(ce))
				c.mu.Unlock()
				c.linger()
			}
			return
		}
		c.mu.Lock()
		if !c.writeClosed && !c.stalled {
			err = c.handle(typ, flags, sid, p)
		}
		if c.silentClose {
			c.flush() // what was answered leaves; the rest is lost
			c.mu.Unlock()
			return
		}
		if c.abort {
			c.flush()
			c.mu.Unlock()
			c.linger()
			return
		}
		if err == nil && c.br.Buffered() == 0 {
			c.flush()
		}
		if ce, ok := err.(h2connErr); ok {
			c.connError(uint32(ce))
		}
		c.mu.Unlock()
		if err != nil {
			c.linger()
			return
		}
	}
}

// linger closes the write side after a connection error and reads what
// the client still sends for up to a second before the connection closes:
// closing with unread data would reset the connection and could destroy
// the GOAWAY before the client reads it.
func (c *h2conn) linger() {
	c.mu.Lock()
	if !c.writeClosed {
		c.writeClosed = true
		_ = c.nc.CloseWrite()
	}
	c.mu.Unlock()
	_ = c.nc.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, c.br)
}

// handle processes one frame; an h2connErr ends the connection.
func (c *h2conn) handle(typ, flags byte, sid uint32, p []byte) error {
	if c.contID != 0 && typ != h2fContinuation {
		return h2connErr(h2errProtocol)
	}
	switch typ {
	case h2fData:
		if sid == 0 {
			return h2connErr(h2errProtocol)
		}
		n := uint32(len(p))
		if flags&h2flagPadded != 0 {
			if len(p) == 0 || int(p[0]) >= len(p) {
				return h2connErr(h2errProtocol)
			}
			p = p[1 : len(p)-int(p[0])]
		}
		return c.onData(sid, p, n, flags&h2flagEndStream != 0)
	case h2fHeaders:
		if sid == 0 {
			return h2connErr(h2errProtocol)
		}
		if flags&h2flagPadded != 0 {
			if len(p) == 0 || int(p[0]) >= len(p) {
				return h2connErr(h2errProtocol)
			}
			p = p[1 : len(p)-int(p[0])]
		}
		if flags&h2flagPriority != 0 {
			if len(p) < 5 {
				return h2connErr(h2errProtocol)
			}
			p = p[5:]
		}
		if flags&h2flagEndHeaders == 0 {
			c.contID, c.contFlags = sid, flags
			c.contBuf = append(c.contBuf[:0], p...)
			return nil
		}
		return c.onHeaders(sid, flags, p)
	case h2fContinuation:
		if c.contID == 0 || sid != c.contID {
			return h2connErr(h2errProtocol)
		}
		if len(c.contBuf)+len(p) > h2maxHeaderBuf {
			return h2connErr(h2errProtocol)
		}
		c.contBuf = append(c.contBuf, p...)
		if flags&h2flagEndHeaders != 0 {
			c.contID = 0
			return c.onHeaders(sid, c.contFlags, c.contBuf)
		}
	case h2fPriority:
	case h2fRSTStream:
		if sid == 0 || len(p) != 4 {
			return h2connErr(h2errProtocol)
		}
		if st := c.streams[sid]; st != nil {
			c.closeStream(st)
		}
	case h2fSettings:
		if sid != 0 || len(p)%6 != 0 {
			return h2connErr(h2errProtocol)
		}
		if flags&h2flagAck != 0 {
			c.acked = true
			if len(c.pendingMax) > 0 {
				c.maxStreams = c.pendingMax[0]
				c.pendingMax = c.pendingMax[1:]
			}
			return nil
		}
		for ; len(p) >= 6; p = p[6:] {
			id, v := binary.BigEndian.Uint16(p), binary.BigEndian.Uint32(p[2:])
			switch id {
			case h2setInitialWindowSize:
				if v > math.MaxInt32 {
					return h2connErr(h2errFlowControl)
				}
				d := int64(v) - c.peerWindow
				c.peerWindow = int64(v)
				for _, st := range c.streams {
					st.sendWindow += d
				}
			case h2setHeaderTableSize:
				c.henc.SetMaxDynamicTableSizeLimit(v)
			}
		}
		c.writeFrame(h2fSettings, h2flagAck, 0, nil)
		c.sendBlocked()
	case h2fPushPromise:
		return h2connErr(h2errProtocol)
	case h2fPing:
		if sid != 0 || len(p) != 8 {
			return h2connErr(h2errProtocol)
		}
		if flags&h2flagAck == 0 {
			c.writeFrame(h2fPing, h2flagAck, 0, p)
		}
	case h2fGoAway:
		if len(p) >= 8 {
			c.s.noteClientGoAway(binary.BigEndian.Uint32(p[4:]))
		}
		// The client is leaving: answer what is open, then close.
		c.sendGoAway(c.lastStream)
		c.maybeShutdown()
	case h2fWindowUpdate:
		if len(p) != 4 {
			return h2connErr(h2errProtocol)
		}
		incr := int64(binary.BigEndian.Uint32(p) & 0x7fffffff)
		if sid == 0 {
			c.connSendWindow += incr
		} else if st := c.streams[sid]; st != nil {
			st.sendWindow += incr
		}
		c.sendBlocked()
	}
	return nil
}

// emit receives the decoded header fields of the current header block.
func (c *h2conn) emit(hf hpack.HeaderField) {
	st := c.cur
	if st == nil {
		return
	}
	if strings.HasPrefix(hf.Name, ":") {
		if st.sawRegular {
			st.malformed = true
		}
		switch hf.Name {
		case ":method":
			st.dup = st.dup || st.method != ""
			st.method = hf.Value
		case ":path":
			st.dup = st.dup || st.path != ""
			st.path = hf.Value
		case ":scheme", ":authority":
		default:
			st.malformed = true
		}
		return
	}
	st.sawRegular = true
	if i := h2HeaderIndex(hf.Name); i >= 0 {
		if st.has&(1<<i) != 0 {
			st.dup = true
		}
		st.has |= 1 << i
		st.vals[i] = hf.Value
	} else {
		for _, o := range st.other {
			if o == hf.Name {
				st.dup = true
			}
		}
		st.other = append(st.other, hf.Name)
	}
	if c.s.record {
		if st.header == nil {
			st.header = map[string]string{}
		}
		st.header[hf.Name] = hf.Value
	}
}

// decode runs a header block through the HPACK decoder into st.
func (c *h2conn) decode(st *h2stream, block []byte) error {
	c.cur = st
	defer func() { c.cur = nil }()
	if _, err := c.dec.Write(block); err != nil {
		return h2connErr(h2errCompression)
	}
	if err := c.dec.Close(); err != nil {
		return h2connErr(h2errCompression)
	}
	return nil
}

func (c *h2conn) onHeaders(id uint32, flags byte, block []byte) error {
	end := flags&h2flagEndStream != 0
	if st := c.streams[id]; st != nil { // trailers
		c.scratch = h2stream{}
		if err := c.decode(&c.scratch, block); err != nil {
			return err
		}
		if !end || st.ended {
			c.streamError(id, h2errProtocol)
			return nil
		}
		c.finish(st)
		return nil
	}
	if id%2 == 0 || id <= c.lastStream {
		return h2connErr(h2errProtocol)
	}
	c.lastStream = id
	st := c.newStream(id)
	if err := c.decode(st, block); err != nil {
		return err
	}
	switch {
	case c.goAwaySent && id > c.goAwayLast:
		// Ignored: the client retries it on another connection.
		c.recycle(st)
		return nil
	case uint32(len(c.streams)) >= c.maxStreams:
		c.s.noteLimitExceeded()
		c.writeRST(id, h2errRefusedStream)
		c.recycle(st)
		return nil
	case st.malformed || st.method == "" || st.path == "":
		c.writeRST(id, h2errProtocol)
		c.recycle(st)
		return nil
	}
	c.streams[id] = st
	if n := len(c.streams); n > c.maxOpen && c.acked {
		c.maxOpen = n
		c.s.noteOpen(n)
	}
	c.nreq++
	if n := c.s.goAwayAfter.Load(); n > 0 && int64(c.nreq) >= n && !c.goAwaySent {
		c.sendGoAway(id)
	}
	c.requestFaults(id)
	if end && !st.done {
		c.finish(st)
	}
	return nil
}

func (c *h2conn) newStream(id uint32) *h2stream {
	var st *h2stream
	if n := len(c.free); n > 0 {
		st = c.free[n-1]
		c.free = c.free[:n-1]
		body, resp, other := st.body[:0], st.respBody[:0], st.other[:0]
		*st = h2stream{body: body, respBody: resp, other: other}
	} else {
		st = &h2stream{}
	}
	st.id = id
	st.sendWindow = c.peerWindow
	st.recvWindow = int64(c.s.window)
	if !c.acked { // the client may not know our window yet: it may use 65535
		st.recvWindow = max(st.recvWindow, 65535)
	}
	return st
}

// onData takes a DATA frame: n is its flow-controlled length (with
// padding), d its data. A client that overruns a window gets a
// FLOW_CONTROL_ERROR: RST_STREAM for a stream window, GOAWAY for the
// connection window.
func (c *h2conn) onData(sid uint32, d []byte, n uint32, end bool) error {
	if n > 0 {
		if c.connRecv -= int64(n); c.connRecv < 0 {
			return h2connErr(h2errFlowControl)
		}
		c.recvUnacked += n
		if int64(c.recvUnacked) >= c.connWindow/4 {
			c.writeWindowUpdate(0, c.recvUnacked)
			c.connRecv += int64(c.recvUnacked)
			c.recvUnacked = 0
		}
	}
	st := c.streams[sid]
	if st == nil || st.ended {
		if sid > c.lastStream || st != nil {
			c.streamError(sid, h2errStreamClosed)
		}
		// else: a stream ignored after GOAWAY, refused or reset: drop.
		return nil
	}
	if st.recvWindow -= int64(n); st.recvWindow < 0 && c.acked {
		c.streamError(sid, h2errFlowControl)
		return nil
	}
	st.bodyLen += len(d)
	if room := h2maxBody - len(st.body); room > 0 {
		st.body = append(st.body, d[:min(room, len(d))]...)
	}
	if end {
		c.finish(st)
		return nil
	}
	st.unrefunded += n
	if st.unrefunded >= c.s.window/2 {
		c.writeWindowUpdate(st.id, st.unrefunded)
		st.recvWindow += int64(st.unrefunded)
		st.unrefunded = 0
	}
	return nil
}

func (c *h2conn) sendGoAway(last uint32) {
	if c.goAwaySent {
		return
	}
	c.goAwaySent, c.goAwayLast = true, last
	c.writeGoAway(last, h2errNo, `{"reason":"Shutdown"}`)
}

// maybeShutdown ends a connection that sent GOAWAY once nothing is open:
// it closes the write side (TLS close_notify) and gives the client a
// second to close its side, so no unread data turns into a reset that
// would destroy our last responses.
func (c *h2conn) maybeShutdown() {
	if !c.goAwaySent || len(c.streams) > 0 || c.writeClosed {
		return
	}
	c.flush()
	c.writeClosed = true
	_ = c.nc.CloseWrite()
	_ = c.nc.SetReadDeadline(time.Now().Add(time.Second))
}

func (c *h2conn) closeStream(st *h2stream) {
	if st.done {
		return
	}
	st.done = true
	delete(c.streams, st.id)
	if !st.ended || len(c.delayed) == 0 && len(c.blocked) == 0 {
		c.recycle(st)
	} // else the delayed or blocked queue may still hold it: let GC take it
	c.maybeShutdown()
}

func (c *h2conn) recycle(st *h2stream) {
	if len(c.free) < 64 {
		st.header = nil
		c.free = append(c.free, st)
	}
}
