package h2conn

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Defaults of Config's limits.
const (
	DefaultMaxStreams        = 1000
	DefaultRequestTimeout    = 15 * time.Second
	DefaultPingInterval      = time.Minute
	DefaultMaxHeaderListSize = 64 << 10
	DefaultMaxBody           = 64 << 10
)

// Connection-level HTTP/2 parameters.
const (
	initialWindow = 65535   // RFC 9113 default, for both directions
	recvWindow    = 1 << 20 // what the client grants for responses, per stream and connection
	minFrameSize  = 16384   // the least every peer accepts (and what we read)
	maxFrameSize  = 1<<24 - 1
	maxWriteFrame = 1 << 20 // frames we write stay below this, whatever the peer allows
	maxWindow     = 1<<31 - 1
	maxBatchBytes = 64 << 10
	maxOwedFrames = 1024 // PING and SETTINGS acks owed before the peer is flooding
	probeTimeout  = 2 * time.Second
	maxKeep       = 4  // Config.KeepHeaders
	intakeShare   = 64 // streams open at which an Intake holder hands on its turn
)

// Errors a request's end is reported with (Owner.Done).
var (
	// ErrRefused: the peer did not process the stream (REFUSED_STREAM,
	// above its GOAWAY's last stream id, or no stream could be opened
	// after Prepare); sending it again is safe.
	ErrRefused = errors.New("h2conn: stream refused, not processed")
	// ErrTimeout: no complete response within Config.RequestTimeout; the
	// stream was reset.
	ErrTimeout = errors.New("h2conn: no response within the request timeout")
	// ErrConnLost is wrapped by the error of requests in flight when the
	// connection ended.
	ErrConnLost = errors.New("h2conn: connection lost")
	// ErrHeaderListTooLarge is the cause of the StreamError of a stream
	// whose response header block exceeded Config.MaxHeaderListSize.
	ErrHeaderListTooLarge = errors.New("h2conn: response header list too large")
	// ErrMalformed is the cause of the StreamError of a stream whose
	// response broke HTTP/2's rules (no or bad :status, DATA before
	// HEADERS).
	ErrMalformed = errors.New("h2conn: malformed response")
)

// StreamError fails one stream: the peer reset it (Remote), or this side
// did (oversized or malformed response, window overflow).
type StreamError struct {
	StreamID uint32
	Code     http2.ErrCode
	Remote   bool
	Cause    error // for local ones
}

func (e *StreamError) Error() string {
	if e.Remote {
		return fmt.Sprintf("h2conn: stream %d reset by peer: %v", e.StreamID, e.Code)
	}
	return fmt.Sprintf("h2conn: stream %d reset: %v: %v", e.StreamID, e.Code, e.Cause)
}

func (e *StreamError) Unwrap() error { return e.Cause }

// ConnError is a connection error: this side's (answered with GOAWAY and
// Code) or the peer's GOAWAY with an error code (Remote).
type ConnError struct {
	Code   http2.ErrCode
	Reason string
	Remote bool
}

func (e *ConnError) Error() string {
	if e.Remote {
		return fmt.Sprintf("h2conn: peer GOAWAY %v: %s", e.Code, e.Reason)
	}
	return fmt.Sprintf("h2conn: connection error %v: %s", e.Code, e.Reason)
}

func connErr(code http2.ErrCode, format string, args ...any) *ConnError {
	return &ConnError{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// Stream is the connection's state of one request; the owner embeds one in
// each of its requests and reads the response from it once Done reports
// success.
type Stream struct {
	// Payload is the request body; the owner sets it (in Prepare at the
	// latest). Empty sends the HEADERS with END_STREAM.
	Payload []byte
	// Status is the response's :status.
	Status int
	// Body holds the response body, its first Config.MaxBody bytes; the
	// rest is read and discarded. Its capacity is kept for the next use.
	Body []byte

	keep     [maxKeep]string
	id       uint32
	deadline int64 // unix ns
	sent     int   // payload bytes written
	window   int64 // send window
	recv     int64 // received, not yet granted back
}

// Header returns the response's value of Config.KeepHeaders[i].
func (s *Stream) Header(i int) string { return s.keep[i] }

// Request is the owner's request: it embeds a Stream.
type Request interface {
	H2Stream() *Stream
}

// Owner is the connection's user. Its methods run on the connection's
// goroutines and must not block.
type Owner[R Request] interface {
	// Prepare is called by the writer with a request taken from the
	// queue, before a stream is opened for it. It returns false when the
	// owner finished the request itself (it is then not the connection's).
	Prepare(r R) bool
	// EncodeHeaders writes r's header fields, pseudo-headers first. It is
	// called once for each stream opened for r.
	EncodeHeaders(r R, h *HeaderEncoder)
	// Done hands r back: err is nil with a complete response in r's
	// Stream; otherwise ErrRefused, ErrTimeout, a *StreamError, or an error
	// wrapping ErrConnLost.
	Done(r R, err error)
}

// Config sets up a connection.
type Config[R Request] struct {
	// Queue is where the writer takes requests while it may open streams;
	// several connections may share one.
	Queue <-chan R
	Owner Owner[R]
	// MaxStreams caps concurrent streams; the peer's
	// SETTINGS_MAX_CONCURRENT_STREAMS, when lower, wins.
	MaxStreams     uint32
	RequestTimeout time.Duration // from the write of a request to its full response
	// PingInterval: after this long without a frame from the peer, a PING
	// is sent; unanswered within RequestTimeout, the connection ends.
	PingInterval time.Duration
	// MaxHeaderListSize is advertised (SETTINGS_MAX_HEADER_LIST_SIZE); a
	// larger response header block fails its stream only.
	MaxHeaderListSize uint32
	// MaxBody is how much of each response body is kept in Stream.Body.
	MaxBody int
	// KeepHeaders names response headers (lower case, at most 4) whose
	// values Stream.Header returns.
	KeepHeaders []string
	Logger      *slog.Logger
	// Intake, when several connections share Queue, is their turn to take
	// from it: one token (NewIntake) passed among them. Only its holder
	// takes requests. It hands the token on when it cannot open streams
	// (its stream limit reached, a GOAWAY, a probe after a timeout), when
	// requests wait in the queue as it writes, after each batch while it
	// has intakeShare streams open or more (a burst is not staked on one
	// connection: a peer that drops it would fail it all; a turn that
	// begins below the share stops its batch there), and when it ends.
	// Moderate traffic thus stays on one connection, in fewer and larger
	// writes answered in fewer reads (the channel would otherwise hand
	// each request to another idle connection in turn), and heavy traffic
	// spreads over all. Nil: each connection takes from Queue whenever it
	// can open a stream.
	Intake chan struct{}
}

// NewIntake returns the token of Config.Intake for connections sharing a
// queue.
func NewIntake() chan struct{} {
	t := make(chan struct{}, 1)
	t <- struct{}{}
	return t
}

func (cfg *Config[R]) setDefaults() error {
	if cfg.Queue == nil || cfg.Owner == nil {
		return errors.New("h2conn: Config needs a Queue and an Owner")
	}
	if len(cfg.KeepHeaders) > maxKeep {
		return fmt.Errorf("h2conn: at most %d KeepHeaders", maxKeep)
	}
	if cfg.MaxStreams == 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.MaxHeaderListSize == 0 {
		cfg.MaxHeaderListSize = DefaultMaxHeaderListSize
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Conn is one HTTP/2 client connection. The writer (Serve's goroutine) is
// the only one to write frames; the reader asks it for the frames it owes
// (acks, window updates, resets) through mu and wake.
type Conn[R Request] struct {
	cfg  Config[R]
	nc   net.Conn
	fr   *http2.Framer
	wbuf frameBuf // frames for the next write, writer-owned
	henc *hpack.Encoder
	hbuf bytes.Buffer
	he   HeaderEncoder
	hdec *hpack.Decoder
	tick time.Duration

	wake       chan struct{} // cap 1: the reader queued work for the writer
	readerDone chan struct{}
	readErr    error // set before readerDone closes
	clean      bool  // ended by a NO_ERROR GOAWAY or id exhaustion
	answered   int   // streams answered in full; reader-owned

	mu         sync.Mutex
	streams    map[uint32]R
	nextID     uint32
	lastOpened atomic.Uint32 // nextID-2, for the reader without mu
	maxStreams uint32        // min(peer's limit, ours)
	initWindow int64         // peer's SETTINGS_INITIAL_WINDOW_SIZE
	connWindow int64         // what we may still send on the connection
	maxFrame   int           // peer's SETTINGS_MAX_FRAME_SIZE, capped
	goaway     bool          // no new streams: peer's GOAWAY or ids used up
	goawayCode http2.ErrCode
	dead       error    // set by the reader on failure
	blocked    []uint32 // streams whose payload waits for window, in order
	// control frames the writer owes
	settingsAcks int
	tableSize    uint32 // the peer's SETTINGS_HEADER_TABLE_SIZE, if tableSet
	tableSet     bool
	pingAcks     [][8]byte
	connWU       uint32
	streamWU     []windowUpdate
	resets       []windowUpdate // stream id and error code
	// response decoding, reader-owned
	recvConn int64
	hdr      headerBlock
	// liveness, writer-owned apart from lastRead
	lastRead    atomic.Int64
	pingSent    int64 // unix ns of the outstanding PING, 0 if none
	pingTimeout int64 // ns the outstanding PING may take
	probing     bool  // a stream timed out: no new stream until a frame arrives (mu)
}

type windowUpdate struct{ id, n uint32 }

// headerBlock is the response header block being decoded.
type headerBlock struct {
	id     uint32
	end    bool // END_STREAM on its HEADERS
	status int
	keep   [maxKeep]string
	size   uint32 // decoded header list size (RFC 9113 §6.5.2)
	raw    int    // encoded bytes
	tooBig bool
}

// frameBuf collects frames in memory; the writer writes it out in one go.
type frameBuf struct{ b []byte }

func (f *frameBuf) Write(p []byte) (int, error) {
	f.b = append(f.b, p...)
	return len(p), nil
}

// Handshake starts HTTP/2 on nc (TLS with ALPN h2 negotiated, or a tunnel):
// it sends the client preface and waits for the peer's SETTINGS until ctx
// ends, so the first requests already honour its limits. On failure nc is
// closed.
func Handshake[R Request](ctx context.Context, nc net.Conn, cfg Config[R]) (*Conn[R], error) {
	if err := cfg.setDefaults(); err != nil {
		nc.Close()
		return nil, err
	}
	c := &Conn[R]{
		cfg:        cfg,
		nc:         nc,
		wake:       make(chan struct{}, 1),
		readerDone: make(chan struct{}),
		streams:    make(map[uint32]R),
		nextID:     1,
		maxStreams: cfg.MaxStreams,
		initWindow: initialWindow,
		connWindow: initialWindow,
		maxFrame:   minFrameSize,
	}
	c.tick = min(cfg.RequestTimeout, cfg.PingInterval) / 4
	c.tick = max(min(c.tick, time.Second), 5*time.Millisecond)
	c.wbuf.b = make([]byte, 0, maxBatchBytes+2*minFrameSize)
	c.fr = http2.NewFramer(&c.wbuf, bufio.NewReaderSize(nc, 32<<10))
	c.fr.SetReuseFrames()
	c.fr.SetMaxReadFrameSize(minFrameSize)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.he = HeaderEncoder{enc: c.henc, out: &c.hbuf, Scratch: make([]byte, 0, 256)}
	c.hdec = hpack.NewDecoder(4096, c.onField)
	// A string up to this long is decoded (emitting nothing once the list
	// is too large) and fails its stream; a longer one cannot be skipped
	// without losing the decoder's state: a connection error.
	c.hdec.SetMaxStringLength(c.maxBlockBytes())

	c.wbuf.b = append(c.wbuf.b, http2.ClientPreface...)
	_ = c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: recvWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: cfg.MaxHeaderListSize},
	)
	_ = c.fr.WriteWindowUpdate(0, recvWindow-initialWindow)
	dl, _ := ctx.Deadline()
	_ = nc.SetDeadline(dl)
	err := c.flush()
	if err == nil {
		err = c.readPreface()
	}
	if err != nil {
		c.goodbye(err)
		nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	c.lastRead.Store(time.Now().UnixNano())
	return c, nil
}

func (c *Conn[R]) readPreface() error {
	f, err := c.fr.ReadFrame()
	if err != nil {
		return fmt.Errorf("h2conn: reading the server preface: %w", c.frameErr(err))
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		return connErr(http2.ErrCodeProtocol, "server preface is %v, not SETTINGS", f.Header().Type)
	}
	return c.onSettings(sf)
}

// maxBlockBytes bounds one response header block's encoded size, and each
// string in it.
func (c *Conn[R]) maxBlockBytes() int { return 4 * int(c.cfg.MaxHeaderListSize) }

// Answered is the number of streams the peer answered in full; read it
// once Serve returned.
func (c *Conn[R]) Answered() int { return c.answered }

// Opened is the number of streams opened; read it once Serve returned.
func (c *Conn[R]) Opened() int { return int(c.nextID-1) / 2 }

// Clean reports, once Serve returned, whether the connection ended
// gracefully: drained after the peer's GOAWAY(NO_ERROR), or after its
// stream ids ran out.
func (c *Conn[R]) Clean() bool { return c.clean }

// Serve runs the connection until it fails, drains, or ctx ends (then it
// says GOAWAY); it closes the connection and hands every unfinished
// request back to the owner with an error wrapping ErrConnLost. It returns
// nil after a drain (Clean) or when ctx ended, else why the connection
// failed: a *ConnError for a connection error of either side.
func (c *Conn[R]) Serve(ctx context.Context) error {
	go c.readLoop()
	err := c.writeLoop(ctx.Done())
	if err == nil && !c.clean {
		c.goodbye(nil) // stopping: say goodbye, best effort
	}
	c.nc.Close()
	<-c.readerDone
	// nil from the writer: drained, or stopped; the reader's error is
	// then only the close.
	c.mu.Lock()
	left := make([]R, 0, len(c.streams))
	for id, r := range c.streams {
		left = append(left, r)
		delete(c.streams, id)
	}
	c.blocked = nil
	c.clean = c.clean || c.goaway && c.goawayCode == http2.ErrCodeNo
	c.mu.Unlock()
	cause := fmt.Errorf("%w: %s", ErrConnLost, errString(err))
	for _, r := range left {
		c.cfg.Owner.Done(r, cause)
	}
	return err
}

func errString(err error) string {
	if err == nil {
		return "closed"
	}
	return err.Error()
}

// goodbye writes GOAWAY: NO_ERROR for nil, the code of a local connection
// error; nothing for other errors (the peer's GOAWAY, I/O).
func (c *Conn[R]) goodbye(err error) {
	code := http2.ErrCodeNo
	var debug []byte
	if err != nil {
		var ce *ConnError
		if !errors.As(err, &ce) || ce.Remote {
			return
		}
		code, debug = ce.Code, []byte(ce.Reason)
	}
	_ = c.fr.WriteGoAway(0, code, debug) // 0: no server-initiated stream accepted
	_ = c.nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_ = c.flush()
}

func (c *Conn[R]) flush() error {
	if len(c.wbuf.b) == 0 {
		return nil
	}
	_, err := c.nc.Write(c.wbuf.b)
	c.wbuf.b = c.wbuf.b[:0]
	return err
}

func (c *Conn[R]) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

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
	s.Status, s.keep, s.Body = 0, [maxKeep]string{}, s.Body[:0]
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
