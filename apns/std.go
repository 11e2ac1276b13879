//lint:file-ignore SA1019 The reference engine is built on x/net's http2.Transport on purpose: x/net points its users to net/http's, whose bundled copy behaves differently on stalled connections (it keeps sending on one until its ping interval).

package apns

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http2"
)

// StdEngine sends notifications with Apple's HTTP/2 provider API through
// golang.org/x/net/http2's Transport: the reference engine. It spends a
// goroutine and a few allocations per request where HTTP2Engine spends
// none, but rests on the most used HTTP/2 client in Go: operators can fall
// back to it (APNS_WORKER_APNS_ENGINE=std), and tests use it as a
// differential oracle. Both engines describe requests with the same code
// and hand answers to the same delivery core and verdict table, so the
// same answers give the same outcomes.
//
// It takes the common options and those of the HTTP/2 family (WithTopic,
// WithPushType, WithRequestTimeout, WithPingInterval, WithProxy,
// WithRetryBackoff); the Transport opens connections as it needs them.
type StdEngine struct {
	c      *core
	o      options
	base   string // https://host[:port], without a path
	addr   string // host:port dialled
	tokens *tokenSource
	tr     *http2.Transport
	wg     sync.WaitGroup // the feeder and the requests in flight
	halt   context.CancelFunc
	ctx    context.Context // ends when Close gave up or finished

	connected  atomic.Int32
	reconnects atomic.Uint64
}

var _ Engine = (*StdEngine)(nil)

// NewStdEngine starts the reference engine for the provider API at
// baseURL (HostProduction, HostSandbox, or a test server's URL).
func NewStdEngine(baseURL string, auth Auth, opts ...Option) (*StdEngine, error) {
	e := &StdEngine{}
	s, err := setupHTTP2(&e.o, stdEngine, baseURL, auth, opts)
	if err != nil {
		return nil, err
	}
	e.c, e.base, e.addr, e.tokens = s.core, "https://"+s.u.Host, s.addr, s.tokens
	e.tr = &http2.Transport{
		TLSClientConfig: s.tlsConf,
		// A stalled connection is probed once a request could have timed
		// out on it (HTTP2Engine probes after a timeout), else it would
		// be used until the ping interval.
		ReadIdleTimeout:   min(e.o.h2.pingInterval, e.o.h2.timeout),
		PingTimeout:       e.o.h2.timeout,
		MaxHeaderListSize: maxHeaderListSize,
		DialTLSContext:    e.dial,
	}
	e.ctx, e.halt = context.WithCancel(context.Background())
	e.c.abortWires = e.halt
	e.wg.Add(1)
	go e.feed()
	return e, nil
}

// Send validates n and queues it, as HTTP2Engine.Send.
func (e *StdEngine) Send(ctx context.Context, n *Notification, ref any) error {
	return e.c.send(ctx, n, ref)
}

// Close stops intake and waits for every outcome until ctx ends, as
// HTTP2Engine.Close.
func (e *StdEngine) Close(ctx context.Context) error {
	return e.c.close(ctx, func() {
		e.halt()
		e.wg.Wait()
		e.tr.CloseIdleConnections()
	})
}

// Stats is a snapshot for health checks and metrics.
func (e *StdEngine) Stats() Stats {
	s := Stats{Conns: e.o.conns, Connected: int(e.connected.Load()), Reconnects: e.reconnects.Load()}
	e.c.stats(&s)
	return s
}

// feed starts a request for each delivery queued, until the engine stops.
func (e *StdEngine) feed() {
	defer e.wg.Done()
	for {
		select {
		case d := <-e.c.queue:
			e.wg.Add(1)
			go e.do(d)
		case <-e.ctx.Done():
			return
		}
	}
}

// do sends d once and hands the answer to the core.
func (e *StdEngine) do(d *delivery) {
	defer e.wg.Done()
	if !e.c.prepare(d, e.tokens) {
		return
	}
	ctx, cancel := context.WithTimeout(e.ctx, e.o.h2.timeout)
	defer cancel()
	req, err := e.request(ctx, d)
	if err != nil {
		e.c.finish(d, err)
		return
	}
	e.c.written(d)
	resp, err := e.tr.RoundTrip(req)
	if err != nil {
		e.failed(d, err, ctx)
		return
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // the rest, up to a bound
	resp.Body.Close()
	if err != nil {
		e.failed(d, err, ctx)
		return
	}
	if te, ok := resp.Header["Te"]; ok && (len(te) != 1 || te[0] != "trailers") {
		// malformed (RFC 9113 §8.2.2): a fault of its stream, as in the
		// h2 engine, never APNs' verdict. x/net deletes the other
		// connection-specific fields before they reach here.
		e.c.retry(d, fmt.Errorf("%w: malformed response: te %q", ErrConnLost, te), true)
		return
	}
	e.c.answered(d, resp.StatusCode, body, resp.Header.Get("apns-id"), e.tokens)
}

// failed sends d again after a transport error, or fails it when Close gave up.
func (e *StdEngine) failed(d *delivery, err error, ctx context.Context) {
	var se http2.StreamError
	switch {
	case e.c.isAborted():
		e.c.failClosed(d)
	case errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream:
		e.c.retry(d, ErrStreamRefused, false)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		e.c.retry(d, ErrRequestTimeout, true)
	default:
		e.c.retry(d, fmt.Errorf("%w: %w", ErrConnLost, err), true)
	}
}

// request builds d's HTTP request from the one description of a device push.
func (e *StdEngine) request(ctx context.Context, d *delivery) (*http.Request, error) {
	var h stdHeaders
	describe(d, &e.o.h2, e.base[len("https://"):], &h, nil)
	req, err := http.NewRequestWithContext(ctx, h.method, e.base+h.path, bytes.NewReader(d.n.Payload))
	if err != nil {
		return nil, err
	}
	req.Header = h.header
	return req, nil
}

// stdHeaders collects a request description as net/http wants it.
type stdHeaders struct {
	method, path string
	header       http.Header
}

func (h *stdHeaders) Field(name, value string) {
	switch name {
	case ":method":
		h.method = value
	case ":path":
		h.path = value
	case ":scheme", ":authority": // from the URL
	default:
		if h.header == nil {
			h.header = make(http.Header, 8)
		}
		h.header[name] = []string{value}
	}
}
func (h *stdHeaders) Unique(name, value string)         { h.Field(name, value) }
func (h *stdHeaders) UniqueBytes(name string, v []byte) { h.Field(name, string(v)) }

// dial connects for the Transport (through the proxy, if any) and counts
// the connections up.
func (e *StdEngine) dial(ctx context.Context, _, _ string, cfg *tls.Config) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, e.o.h2.dialTimeout)
	defer cancel()
	nc, err := dialTCP(ctx, e.addr, e.o.h2.proxy, e.o.socketConn)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		if CertificateRefused(err) {
			// Requests dial on demand: Send lets a probe through.
			e.c.closeGate(fmt.Errorf("%w: TLS: %w", ErrCredentials, err), true, nil)
		}
		return nil, err
	}
	if n := e.connected.Add(1); n > 1 || e.reconnects.Load() > 0 {
		e.reconnects.Add(1)
	}
	return &countedConn{Conn: tc, live: &e.connected}, nil
}

// countedConn takes itself off the live count when closed.
type countedConn struct {
	net.Conn
	live *atomic.Int32
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.live.Add(-1) })
	return c.Conn.Close()
}
