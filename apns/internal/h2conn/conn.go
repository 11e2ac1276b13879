package h2conn

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
	clen     int64 // the response's content-length; -1: none (or a 204, 304)
	got      int64 // response DATA bytes, padding excluded
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
	// malformed: a field RFC 9113 does not allow in a response (§8.2.1,
	// §8.3.2); regular: a regular field came, after which a pseudo-header
	// is malformed; clen: content-length, -1 none.
	malformed bool
	regular   bool
	clen      int64
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
