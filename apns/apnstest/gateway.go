package apnstest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetpush/apns-worker/apns"
)

// Gateway is an in-process binary APNs gateway (command-2 frames over TLS),
// for tests, benchmarks and demos, like httptest.Server:
//
//	gw := apnstest.NewGateway(apnstest.Reject(tok, apns.StatusInvalidToken))
//	t.Cleanup(gw.Close)
//	eng, err := apns.NewBinaryEngine(gw.Addr, gw.ClientCert(), apns.WithRootCAs(gw.RootCAs()))
//
// It listens on 127.0.0.1 with a server certificate from its PKI and
// requires a client certificate from the same PKI. It reads frames strictly,
// as Apple's gateway does (see apns.FrameReader): a malformed frame gets an
// error response with the matching status (128 when nothing more specific
// fits) and the connection is closed. Well-formed frames are accepted and
// counted, except those for tokens it was told to reject, which get an error
// response naming them; then the connection closes, discarding whatever the
// client wrote after the bad frame. By default it closes at once, as APNs
// does, so a client still writing hits a connection reset; DrainAfterError
// makes it read and discard input for a while first.
//
// Knobs that count frames (CloseAfter, CloseEvery, CloseRandom,
// ShutdownAfter, ShutdownEvery, StallAfter) count accepted frames over the whole gateway, all
// connections together.
type Gateway struct {
	// Addr is the gateway's host:port, e.g. "127.0.0.1:41234".
	Addr string

	cfg  gatewayConfig
	tlsc *tls.Config
	ln   net.Listener
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once

	accepted atomic.Int64 // frames accepted, gateway-wide

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	counts   map[[32]byte]tokenCount // per token (unless CountOnly)
	errEnded []bool                  // per connection serial: ended by an error response
	stats    GatewayStats
}

type tokenCount struct {
	n    int32 // frames accepted
	conn int32 // serial of the connection that accepted the last one
}

// GatewayStats counts what a Gateway saw.
type GatewayStats struct {
	Conns           int // TLS connections established
	HandshakeErrors int // TLS handshakes that failed (e.g. a wrong client certificate)
	Accepted        int // frames accepted (a client may count them delivered)
	Duplicates      int // accepted frames whose token had been accepted before
	// ResentAfterError counts duplicates whose token had last been
	// accepted on a connection that then ended with an error response.
	// Such a notification was processed before the bad one, so a client
	// that settles its in-flight queue correctly never sends it again:
	// this stays 0. (Duplicates after a silent close are expected.)
	ResentAfterError int
	// OutOfOrderIDs counts frames whose identifier was not greater than
	// the previous frame's on the same connection (a reused identifier,
	// for a client that counts up).
	OutOfOrderIDs int
	Rejected      int // error responses for tokens told to Reject
	Malformed     int // malformed frames (answered, unless OnMalformed says otherwise)
	Shutdowns     int // status-10 error responses
	SilentCloses  int // connections closed by CloseAfter, CloseEvery or CloseRandom
	Resets        int // connections reset after an error response (ResetAfterError)
}

// GatewayOption configures a Gateway.
type GatewayOption func(*gatewayConfig)

type gatewayConfig struct {
	pki             *PKI
	addr            string
	reject          map[[32]byte]apns.Status
	rejectFunc      func(tok []byte) (apns.Status, bool)
	closeAfter      int64
	closeEvery      int64
	closeRandom     *every // used under the Gateway's mu
	shutdownAfter   int64
	shutdownEvery   int64
	resetAfterError bool
	stallAfter      int64
	stallHandshake  bool
	drainAfterError time.Duration
	maxPayload      int
	countOnly       bool
	malformed       Malformed
}

// Malformed is what a Gateway does with a frame it cannot take (no token,
// a bad length, an unknown item, …).
type Malformed int

const (
	// MalformedAnswer answers with an error response naming the frame, and
	// closes, as APNs does (the default).
	MalformedAnswer Malformed = iota
	// MalformedIgnore skips a frame whose structure is sound but whose
	// items are not (no token, a bad token size, no payload, …), without
	// an answer, as a lenient gateway might; others are answered.
	MalformedIgnore
	// MalformedClose closes the connection without an error response.
	MalformedClose
)

// OnMalformed sets what the gateway does with malformed frames.
func OnMalformed(m Malformed) GatewayOption {
	return func(c *gatewayConfig) { c.malformed = m }
}

// Reject makes the gateway answer every frame for tok with an error
// response of status st naming the frame, then close the connection.
// Tokens must be 32 bytes, as the gateway reads no others.
func Reject(tok apns.Token, st apns.Status) GatewayOption {
	return func(c *gatewayConfig) {
		if c.reject == nil {
			c.reject = make(map[[32]byte]apns.Status)
		}
		var k [32]byte
		copy(k[:], tok)
		c.reject[k] = st
	}
}

// RejectFunc makes the gateway ask f about each well-formed frame's token
// (after Reject): when f says so, the frame gets an error response with the
// status f returns. f is called concurrently and must not keep tok.
func RejectFunc(f func(tok []byte) (apns.Status, bool)) GatewayOption {
	return func(c *gatewayConfig) { c.rejectFunc = f }
}

// CloseAfter makes the gateway close, without an error response, the
// connection that carries its n-th accepted frame; once.
func CloseAfter(n int) GatewayOption {
	return func(c *gatewayConfig) { c.closeAfter = int64(n) }
}

// CloseEvery makes the gateway close, without an error response, the
// connection that carries each n-th accepted frame (n, 2n, 3n, …). What the
// client wrote after that frame is lost unread.
func CloseEvery(n int) GatewayOption {
	return func(c *gatewayConfig) { c.closeEvery = int64(n) }
}

// CloseRandom makes the gateway close connections silently, like
// CloseEvery, at random intervals: after a number of accepted frames drawn
// uniformly from [n/2, 3n/2] by a generator seeded with seed (the same seed
// gives the same intervals), as idle resets and load balancers do.
func CloseRandom(n int, seed uint64) GatewayOption {
	return func(c *gatewayConfig) { c.closeRandom = newEvery(int64(n), true, seed) }
}

// ShutdownEvery makes the gateway answer status 10 (shutdown) after each
// n-th accepted frame (n, 2n, …), naming that frame as the last one
// processed, then close that connection: the phases of a gateway that
// restarts.
func ShutdownEvery(n int) GatewayOption {
	return func(c *gatewayConfig) { c.shutdownEvery = int64(n) }
}

// ResetAfterError makes the gateway end a connection with a TCP reset
// (RST, SO_LINGER 0) right after each error response instead of a close,
// so a client may see the reset before, or instead of, the answer.
func ResetAfterError() GatewayOption {
	return func(c *gatewayConfig) { c.resetAfterError = true }
}

// ShutdownAfter makes the gateway answer status 10 (shutdown) after its n-th
// accepted frame, naming that frame as the last one processed, then close
// that connection; once.
func ShutdownAfter(n int) GatewayOption {
	return func(c *gatewayConfig) { c.shutdownAfter = int64(n) }
}

// StallAfter makes the gateway stop reading once it has accepted n frames
// (n = 0: from the start): each connection stops before its next frame
// (so with several connections a few more may be accepted), keeping TCP and
// TLS up, so clients' writes eventually block.
func StallAfter(n int) GatewayOption {
	return func(c *gatewayConfig) { c.stallAfter = int64(n) + 1 }
}

// StallHandshake makes the gateway accept TCP connections and never answer
// the TLS handshake.
func StallHandshake() GatewayOption {
	return func(c *gatewayConfig) { c.stallHandshake = true }
}

// DrainAfterError makes the gateway, after an error response, read and
// discard its input for d (or until the client closes) before it closes the
// connection. By default it closes at once, as APNs does: a client still
// writing then hits a connection reset.
func DrainAfterError(d time.Duration) GatewayOption {
	return func(c *gatewayConfig) { c.drainAfterError = d }
}

// MaxPayload sets the largest payload the gateway accepts (default 2048;
// larger ones get status 7).
func MaxPayload(n int) GatewayOption {
	return func(c *gatewayConfig) { c.maxPayload = n }
}

// CountOnly makes the gateway keep totals only, not per-token counts (Count
// returns 0 and Duplicates stays 0), for long runs over many tokens.
func CountOnly() GatewayOption {
	return func(c *gatewayConfig) { c.countOnly = true }
}

// GatewayPKI makes the gateway use p instead of a fresh PKI.
func GatewayPKI(p *PKI) GatewayOption {
	return func(c *gatewayConfig) { c.pki = p }
}

// GatewayAddr makes the gateway listen on addr instead of 127.0.0.1:0.
func GatewayAddr(addr string) GatewayOption {
	return func(c *gatewayConfig) { c.addr = addr }
}

// NewGateway starts a Gateway, panicking if it cannot listen (as
// httptest.NewServer does). Stop it with Close.
func NewGateway(opts ...GatewayOption) *Gateway {
	g, err := ListenGateway(opts...)
	if err != nil {
		panic(fmt.Sprintf("apnstest: %v", err))
	}
	return g
}

// ListenGateway starts a Gateway, or reports why it cannot listen.
func ListenGateway(opts ...GatewayOption) (*Gateway, error) {
	cfg := gatewayOptions(opts)
	if cfg.pki == nil {
		p, err := NewPKI()
		if err != nil {
			return nil, err
		}
		cfg.pki = p
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return nil, fmt.Errorf("apnstest: gateway listen: %w", err)
	}
	g := newGateway(cfg)
	g.Addr, g.ln, g.tlsc = ln.Addr().String(), ln, serverTLS(cfg.pki)
	g.wg.Add(1)
	go g.acceptLoop()
	return g, nil
}

func gatewayOptions(opts []GatewayOption) gatewayConfig {
	cfg := gatewayConfig{addr: "127.0.0.1:0", maxPayload: apns.BinaryLimits.MaxPayload}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// newGateway returns a Gateway's state, without listener or TLS.
func newGateway(cfg gatewayConfig) *Gateway {
	g := &Gateway{cfg: cfg, done: make(chan struct{}), conns: make(map[net.Conn]struct{})}
	if !cfg.countOnly {
		g.counts = make(map[[32]byte]tokenCount)
	}
	return g
}

// serverTLS is p's server config requiring client certificates, with X25519
// as the only key exchange: a client reconnects after every error response,
// and the post-quantum hybrid would make each handshake several times
// costlier for a test server. Clients keep their own preferences.
func serverTLS(p *PKI) *tls.Config {
	c := p.ServerTLS(true)
	c.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
	return c
}

// PKI returns the gateway's certificate authority.
func (g *Gateway) PKI() *PKI { return g.cfg.pki }

// ClientCert returns a client certificate the gateway accepts.
func (g *Gateway) ClientCert() tls.Certificate { return g.cfg.pki.ClientCert }

// RootCAs returns a pool that trusts the gateway's server certificate.
func (g *Gateway) RootCAs() *x509.CertPool { return g.cfg.pki.RootCAs }

// Close stops the gateway: it closes the listener and every connection and
// waits for its goroutines. It is safe to call more than once.
func (g *Gateway) Close() {
	g.once.Do(func() {
		close(g.done)
		_ = g.ln.Close()
		g.mu.Lock()
		for c := range g.conns {
			_ = c.Close()
		}
		g.mu.Unlock()
	})
	g.wg.Wait()
}

// Stats returns what the gateway has seen so far.
func (g *Gateway) Stats() GatewayStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stats
}

// Count returns how many frames for tok the gateway accepted.
func (g *Gateway) Count(tok apns.Token) int {
	var k [32]byte
	copy(k[:], tok)
	g.mu.Lock()
	defer g.mu.Unlock()
	return int(g.counts[k].n)
}

func (g *Gateway) acceptLoop() {
	defer g.wg.Done()
	for {
		c, err := g.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // closed
		}
		g.mu.Lock()
		select {
		case <-g.done:
			g.mu.Unlock()
			_ = c.Close()
			return
		default:
		}
		if tcp, ok := c.(*net.TCPConn); ok {
			// A modest receive buffer, so that a client that outpaces
			// the gateway feels TCP back-pressure rather than queueing
			// megabytes the gateway reads seconds late.
			_ = tcp.SetReadBuffer(32 << 10)
		}
		g.conns[c] = struct{}{}
		g.wg.Add(1)
		g.mu.Unlock()
		go g.serve(c)
	}
}

var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}

func (g *Gateway) serve(raw net.Conn) {
	defer g.wg.Done()
	defer func() {
		_ = raw.Close()
		g.mu.Lock()
		delete(g.conns, raw)
		g.mu.Unlock()
	}()
	if g.cfg.stallHandshake {
		<-g.done
		return
	}
	tc := tls.Server(raw, g.tlsc)
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		g.mu.Lock()
		g.stats.HandshakeErrors++
		g.mu.Unlock()
		return
	}
	_ = tc.SetDeadline(time.Time{})
	if g.frames(tc, g.newConn()) && g.cfg.resetAfterError {
		if tcp, ok := raw.(*net.TCPConn); ok {
			_ = tcp.SetLinger(0) // the deferred Close sends RST
			g.mu.Lock()
			g.stats.Resets++
			g.mu.Unlock()
		}
	}
}

// newConn counts an established connection and returns its serial.
func (g *Gateway) newConn() int32 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stats.Conns++
	serial := int32(len(g.errEnded))
	if g.counts != nil {
		g.errEnded = append(g.errEnded, false)
	}
	return serial
}

// frames reads and answers frames on c until the connection must end; it
// reports whether it ended with an error response.
func (g *Gateway) frames(c net.Conn, serial int32) (answered bool) {
	br := readers.Get().(*bufio.Reader)
	br.Reset(c)
	defer func() {
		br.Reset(nil)
		readers.Put(br)
	}()
	fr := apns.NewFrameReader(br, g.cfg.maxPayload)
	var last uint32 // previous frame's identifier; frames carry 1 or more
	for {
		if g.cfg.stallAfter > 0 && g.accepted.Load() >= g.cfg.stallAfter-1 {
			<-g.done
			return false
		}
		f, err := fr.ReadFrame()
		if err != nil {
			var fe *apns.FrameError
			if errors.As(err, &fe) {
				g.mu.Lock()
				g.stats.Malformed++
				g.mu.Unlock()
				switch {
				case g.cfg.malformed == MalformedIgnore && fe.Status != apns.StatusProtocolError:
					continue // the frame was read whole
				case g.cfg.malformed != MalformedClose:
					g.answer(c, serial, apns.ErrorResponse{Status: fe.Status, ID: fe.ID})
					return true
				}
			}
			return false // io.EOF, a reset, or Close
		}
		if f.ID <= last && last != 0 {
			g.mu.Lock()
			g.stats.OutOfOrderIDs++
			g.mu.Unlock()
		}
		last = f.ID
		if st, bad := g.rejects(f.Token); bad {
			g.mu.Lock()
			g.stats.Rejected++
			g.mu.Unlock()
			g.answer(c, serial, apns.ErrorResponse{Status: st, ID: f.ID})
			return true
		}
		switch g.accept(f.Token, serial) {
		case endShutdown:
			g.answer(c, serial, apns.ErrorResponse{Status: apns.StatusShutdown, ID: f.ID})
			return true
		case endSilent:
			return false
		}
	}
}

func (g *Gateway) rejects(tok []byte) (apns.Status, bool) {
	if g.cfg.reject != nil {
		if st, ok := g.cfg.reject[[32]byte(tok)]; ok {
			return st, true
		}
	}
	if g.cfg.rejectFunc != nil {
		return g.cfg.rejectFunc(tok)
	}
	return 0, false
}

// connEnd says whether a connection ends after an accepted frame.
type connEnd int

const (
	endNone     connEnd = iota
	endShutdown         // status 10, then close
	endSilent           // close without an answer
)

// accept records an accepted frame and decides whether the connection ends
// after it, under one lock, so that Stats never shows the frame without
// the close it causes.
func (g *Gateway) accept(tok []byte, serial int32) connEnd {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := g.accepted.Add(1)
	g.stats.Accepted++
	if g.counts != nil {
		k := [32]byte(tok)
		c := g.counts[k]
		if c.n > 0 {
			g.stats.Duplicates++
			if g.errEnded[c.conn] {
				g.stats.ResentAfterError++
			}
		}
		g.counts[k] = tokenCount{n: c.n + 1, conn: serial}
	}
	switch {
	case g.cfg.shutdownAfter > 0 && n == g.cfg.shutdownAfter,
		g.cfg.shutdownEvery > 0 && n%g.cfg.shutdownEvery == 0:
		g.stats.Shutdowns++
		return endShutdown
	case g.cfg.closeAfter > 0 && n == g.cfg.closeAfter,
		g.cfg.closeEvery > 0 && n%g.cfg.closeEvery == 0,
		g.cfg.closeRandom != nil && g.cfg.closeRandom.hit():
		g.stats.SilentCloses++
		return endSilent
	}
	return endNone
}

// answer writes an error response, then either closes at once (the
// caller's deferred close) or first drains input for a while.
func (g *Gateway) answer(c net.Conn, serial int32, r apns.ErrorResponse) {
	if g.counts != nil {
		g.mu.Lock()
		g.errEnded[serial] = true // before the client can read the answer
		g.mu.Unlock()
	}
	var b [apns.ErrorResponseLen]byte
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := c.Write(apns.AppendErrorResponse(b[:0], r)); err != nil {
		return
	}
	if d := g.cfg.drainAfterError; d > 0 {
		_ = c.SetReadDeadline(time.Now().Add(d))
		_, _ = io.Copy(io.Discard, c)
	}
}
