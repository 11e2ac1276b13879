package h2conn_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/jetpush/apns-worker/apns/internal/h2conn"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testReq is a request of the test owner: a POST to path with payload.
type testReq struct {
	h2conn.Stream
	path string
}

func (r *testReq) H2Stream() *h2conn.Stream { return &r.Stream }

type result struct {
	r   *testReq
	err error
}

// testOwner sends what is put on queue and reports every end on done.
type testOwner struct {
	queue chan *testReq
	done  chan result
}

func (o *testOwner) Prepare(*testReq) bool { return true }

func (o *testOwner) EncodeHeaders(r *testReq, h *h2conn.HeaderEncoder) {
	h.Field(":method", "POST")
	h.Field(":scheme", "https")
	h.Field(":authority", "test")
	h.Unique(":path", r.path)
}

func (o *testOwner) Done(r *testReq, err error) { o.done <- result{r, err} }

// client is one h2conn.Conn under test, served until the test ends.
type client struct {
	t      *testing.T
	owner  *testOwner
	conn   *h2conn.Conn[*testReq]
	served chan struct{} // closed when Serve returned
	err    error         // Serve's result
}

func (c *client) send(path string, payload []byte) *testReq {
	r := &testReq{path: path}
	r.Payload = payload
	c.owner.queue <- r
	return r
}

// wait returns the next n ends, by path.
func (c *client) wait(n int) map[string]result {
	c.t.Helper()
	got := make(map[string]result, n)
	timeout := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case res := <-c.owner.done:
			got[res.r.path] = res
		case <-timeout:
			c.t.Fatalf("%d of %d requests ended", len(got), n)
		}
	}
	return got
}

// ended waits for Serve's return.
func (c *client) ended() error {
	c.t.Helper()
	select {
	case <-c.served:
		return c.err
	case <-time.After(10 * time.Second):
		c.t.Fatal("Serve did not return")
		return nil
	}
}

// peer is the raw HTTP/2 server side of one connection, written with x/net's
// Framer, to misbehave in ways a real server would not.
type peer struct {
	t   *testing.T
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
}

// startPair runs script as the server of one connection on 127.0.0.1 and
// dials it with cfg (Queue and Owner filled in). handshakeErr receives
// Handshake's error; the client is nil if it failed.
func startPair(t *testing.T, cfg h2conn.Config[*testReq], script func(p *peer)) (*client, error) {
	t.Helper()
	return startPairWith(t, newTestOwner(), cfg, script)
}

func newTestOwner() *testOwner {
	return &testOwner{queue: make(chan *testReq, 100), done: make(chan result, 100)}
}

// startPairWith is startPair with the owner given: connections sharing it
// share its queue.
func startPairWith(t *testing.T, owner *testOwner, cfg h2conn.Config[*testReq], script func(p *peer)) (*client, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		ln.Close()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(c, preface); err != nil {
			t.Errorf("preface: %v", err)
			return
		}
		p := &peer{t: t, c: c, fr: http2.NewFramer(c, c)}
		p.enc = hpack.NewEncoder(&p.hb)
		script(p)
	}()
	t.Cleanup(wg.Wait)

	cfg.Queue, cfg.Owner = owner.queue, owner
	nc, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := h2conn.Handshake(ctx, nc, cfg)
	if err != nil {
		return nil, err
	}
	c := &client{t: t, owner: owner, conn: conn, served: make(chan struct{})}
	sctx, stop := context.WithCancel(context.Background())
	go func() {
		defer close(c.served)
		c.err = conn.Serve(sctx)
	}()
	t.Cleanup(func() {
		stop()
		select {
		case <-c.served:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	})
	return c, nil
}

func (p *peer) settings(s ...http2.Setting) {
	require.NoError(p.t, p.fr.WriteSettings(s...))
}

// next reads the next frame, failing the test on error.
func (p *peer) next() http2.Frame {
	f, err := p.fr.ReadFrame()
	require.NoError(p.t, err)
	return f
}

// requests reads until n requests have arrived whole (END_STREAM), and
// returns their stream ids in order, with their payloads.
func (p *peer) requests(n int) ([]uint32, map[uint32][]byte) {
	var ids []uint32
	bodies := map[uint32][]byte{}
	ended := 0
	for ended < n {
		switch f := p.next().(type) {
		case *http2.HeadersFrame:
			ids = append(ids, f.StreamID)
			if f.StreamEnded() {
				ended++
			}
		case *http2.DataFrame:
			bodies[f.StreamID] = append(bodies[f.StreamID], f.Data()...)
			if f.StreamEnded() {
				ended++
			}
		}
	}
	return ids, bodies
}

// block hpack-encodes fields, :status first.
func (p *peer) block(status string, fields ...hpack.HeaderField) []byte {
	p.hb.Reset()
	_ = p.enc.WriteField(hpack.HeaderField{Name: ":status", Value: status})
	for _, f := range fields {
		_ = p.enc.WriteField(f)
	}
	return bytes.Clone(p.hb.Bytes())
}

// headers writes a header block in frames of at most 16 KiB.
func (p *peer) headers(id uint32, block []byte, endStream bool) {
	first := block[:min(len(block), 16384)]
	rest := block[len(first):]
	require.NoError(p.t, p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first,
		EndHeaders: len(rest) == 0, EndStream: endStream}))
	for len(rest) > 0 {
		frag := rest[:min(len(rest), 16384)]
		rest = rest[len(frag):]
		require.NoError(p.t, p.fr.WriteContinuation(id, len(rest) == 0, frag))
	}
}

// respond answers stream id with status and body, in DATA frames of at
// most 16 KiB.
func (p *peer) respond(id uint32, status string, body []byte, fields ...hpack.HeaderField) {
	p.headers(id, p.block(status, fields...), len(body) == 0)
	for len(body) > 0 {
		chunk := body[:min(len(body), 16384)]
		body = body[len(chunk):]
		require.NoError(p.t, p.fr.WriteData(id, len(body) == 0, chunk))
	}
}

// goAway reads until the client's GOAWAY and returns its code; it fails
// the test if the connection ends without one.
func (p *peer) goAway() http2.ErrCode {
	for {
		f, err := p.fr.ReadFrame()
		if err != nil {
			p.t.Errorf("no GOAWAY before %v", err)
			return 0
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			return g.ErrCode
		}
	}
}

// drain reads until the client closes the connection.
func (p *peer) drain() {
	for {
		if _, err := p.fr.ReadFrame(); err != nil {
			return
		}
	}
}

// requireConnError checks err is this side's connection error with code.
func requireConnError(t *testing.T, err error, code http2.ErrCode) {
	t.Helper()
	var ce *h2conn.ConnError
	require.True(t, errors.As(err, &ce), "%v", err)
	require.Equal(t, code, ce.Code, "%v", err)
	require.False(t, ce.Remote)
}
