package apns_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// The HTTP/2 engine behind proxies and over links that fail: CONNECT
// proxies, tunnels cut or stalled, and PING keep-alive on a bare server.

// h2Proxy is a tiny HTTP CONNECT proxy on 127.0.0.1 that counts the
// tunnels it opened and checks the proxy credentials.
type h2Proxy struct {
	ln      net.Listener
	tunnels atomic.Int32
	up      atomic.Int64 // bytes passed on from the client to the server
	auth    string
	wg      sync.WaitGroup
	mu      sync.Mutex
	open    []net.Conn
}

// cut breaks every open tunnel, like a network failure.
func (p *h2Proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.open {
		c.Close()
	}
	p.open = nil
}

// countingWriter adds what it writes to n.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

func newH2Proxy(t *testing.T, user, pass string) *h2Proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &h2Proxy{ln: ln, auth: "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *h2Proxy) serve() {
	defer p.wg.Done()
	var conns sync.WaitGroup
	defer conns.Wait()
	defer p.cut()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer c.Close()
			br := bufio.NewReader(c)
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.Method != http.MethodConnect || req.Header.Get("Proxy-Authorization") != p.auth {
				fmt.Fprintf(c, "HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
				return
			}
			up, err := net.Dial("tcp", req.Host)
			if err != nil {
				fmt.Fprintf(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
				return
			}
			p.mu.Lock()
			p.open = append(p.open, c, up)
			p.mu.Unlock()
			defer up.Close()
			p.tunnels.Add(1)
			fmt.Fprintf(c, "HTTP/1.1 200 Connection established\r\n\r\n")
			go func() {
				_, _ = io.Copy(countingWriter{up, &p.up}, br)
				up.Close()
			}()
			_, _ = io.Copy(c, up)
		}()
	}
}

func TestHTTP2Proxy(t *testing.T) {
	t.Parallel()
	s := newH2Server(t)
	p := newH2Proxy(t, "user", "secret")
	tests := []struct {
		name     string
		proxyURL string
		wantErr  bool
	}{
		{"tunnel", "http://user:secret@" + p.ln.Addr().String(), false},
		{"refused", "http://user:wrong@" + p.ln.Addr().String(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			col := newH2Collector(t, 1)
			e := newH2Engine(t, s, apns.WithOutcomeFunc(col.fn), apns.WithProxy(tt.proxyURL), apns.WithConns(1))
			require.NoError(t, e.Send(context.Background(), &apns.Notification{Token: h2Token(1), Payload: h2Payload}, 1))
			if tt.wantErr {
				// never connected: Close fails it
				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				defer cancel()
				require.ErrorIs(t, e.Close(ctx), context.DeadlineExceeded)
				require.ErrorIs(t, col.wait(1)[0].Err, apns.ErrClosed)
				require.Zero(t, e.Stats().Connected)
				return
			}
			require.NoError(t, col.wait(1)[0].Err)
			require.Equal(t, int32(1), p.tunnels.Load())
		})
	}
}

// TestHTTP2ConnectionsCutMidBurst: transport errors with requests in
// flight; each notification still gets exactly one outcome, delivered
// after a retry on a new connection (APNs may have seen some twice).
func TestHTTP2ConnectionsCutMidBurst(t *testing.T) {
	t.Parallel()
	s := newH2Server(t, apnstest.HTTP2Latency(time.Millisecond))
	p := newH2Proxy(t, "u", "p")
	const n = 2000
	col := newH2Collector(t, n)
	e := newH2Engine(t, s, apns.WithOutcomeFunc(col.fn), apns.WithConns(2), apns.WithMaxInFlight(300),
		apns.WithProxy("http://u:p@"+p.ln.Addr().String()), apns.WithMaxRetries(5))
	ctx := context.Background()
	go func() {
		for i := range n {
			if err := e.Send(ctx, &apns.Notification{Token: h2Token(i), Payload: h2Payload}, i); err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
		}
	}()
	// Cut with requests on the wire: the server holds its answers to what
	// it reads from here on, and the cut comes once some of it has passed
	// the proxy (checking the engine's in-flight count alone, a loaded
	// machine once cut while every request still waited in the engine's
	// queue, and nothing was retried).
	cut := func() {
		s.SetLatency(time.Hour)
		mark := p.up.Load()
		require.Eventually(t, func() bool { return e.Stats().InFlight >= 100 && p.up.Load() > mark+4096 },
			10*time.Second, time.Millisecond)
		p.cut()
		s.SetLatency(time.Millisecond)
	}
	outs := col.wait(n / 4)
	cut()
	outs = append(outs, col.wait(n/4)...)
	cut()
	outs = append(outs, col.wait(n-n/2)...)
	retried := 0
	for _, o := range outs {
		require.NoError(t, o.Err, "ref %v", o.Ref)
		if o.Attempts > 1 {
			retried++
		}
	}
	col.mu.Lock()
	require.Len(t, col.byID, n)
	require.Zero(t, col.dups)
	col.mu.Unlock()
	require.Positive(t, retried)
	require.GreaterOrEqual(t, s.Accepted(), n)
	require.GreaterOrEqual(t, p.tunnels.Load(), int32(4))
}

// rawH2Server is a bare HTTP/2 server on x/net's framer for what
// apnstest does not do: it reports the PINGs it reads, and answers them or
// not.
type rawH2Server struct {
	ln     net.Listener
	pki    *apnstest.PKI
	answer bool
	pings  chan int // connection number of each PING read
	closed chan int // connection number of each connection the client closed
	wg     sync.WaitGroup
}

func newRawH2Server(t *testing.T, answer bool) *rawH2Server {
	pki := apnstest.MustPKI()
	cfg := pki.ServerTLS(false)
	cfg.NextProtos = []string{"h2"}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	s := &rawH2Server{ln: ln, pki: pki, answer: answer, pings: make(chan int, 100), closed: make(chan int, 100)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var conns sync.WaitGroup
		defer conns.Wait()
		for i := 1; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				s.serve(i, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *rawH2Server) serve(id int, c net.Conn) {
	defer c.Close()
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil {
		return
	}
	fr := http2.NewFramer(c, c)
	if fr.WriteSettings() != nil {
		return
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			s.closed <- id
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				s.pings <- id
				if s.answer {
					_ = fr.WritePing(true, f.Data)
				}
			}
		}
	}
}

func TestHTTP2PingOnIdle(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		answer bool
	}{
		{"answered: the connection stays", true},
		{"unanswered: the connection is replaced", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newRawH2Server(t, tt.answer)
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			require.NoError(t, err)
			e, err := apns.NewHTTP2Engine("https://"+s.ln.Addr().String(), apns.TokenAuth(key, "KEY1234567", "TEAM123456"),
				apns.WithRootCAs(s.pki.RootCAs), apns.WithConns(1), apns.WithPingInterval(20*time.Millisecond),
				apns.WithRequestTimeout(200*time.Millisecond), apns.WithRetryBackoff(time.Millisecond, time.Millisecond))
			require.NoError(t, err)
			t.Cleanup(func() { closeH2Engine(t, e) })
			timeout := time.After(20 * time.Second)
			next := func(ch chan int) int {
				select {
				case id := <-ch:
					return id
				case <-timeout:
					t.Fatal("timed out")
					return 0
				}
			}
			if tt.answer {
				for range 3 {
					require.Equal(t, 1, next(s.pings), "PINGs on the first connection")
				}
				require.Empty(t, s.closed)
				return
			}
			require.Equal(t, 1, next(s.pings))
			require.Equal(t, 1, next(s.closed), "closed after its PING went unanswered")
			require.Equal(t, 2, next(s.pings), "the replacement is probed too")
		})
	}
}

// stallProxy forwards TCP to target; stall makes the tunnels open now drop
// everything silently in both directions, like a dead link.
type stallProxy struct {
	ln      net.Listener
	target  string
	opened  atomic.Int32
	wg      sync.WaitGroup
	mu      sync.Mutex
	tunnels []*stallTunnel
}

type stallTunnel struct {
	a, b    net.Conn
	stalled atomic.Bool
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &stallProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, tn := range p.tunnels {
			tn.a.Close()
			tn.b.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *stallProxy) serve() {
	defer p.wg.Done()
	for {
		a, err := p.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", p.target)
		if err != nil {
			a.Close()
			continue
		}
		tn := &stallTunnel{a: a, b: b}
		p.mu.Lock()
		p.tunnels = append(p.tunnels, tn)
		p.mu.Unlock()
		p.opened.Add(1)
		p.wg.Add(2)
		go tn.copy(&p.wg, a, b)
		go tn.copy(&p.wg, b, a)
	}
}

func (tn *stallTunnel) copy(wg *sync.WaitGroup, dst, src net.Conn) {
	defer wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if tn.stalled.Load() {
			continue // black hole
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (p *stallProxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, tn := range p.tunnels {
		tn.stalled.Store(true)
	}
}

// TestHTTP2DeadConnectionProbedAfterTimeout: a connection that dies
// silently is probed with a PING as soon as a request on it times out,
// takes no new stream meanwhile, and is replaced when the PING goes
// unanswered; the request is delivered on the new connection, long before
// the idle PING interval (M3).
func TestHTTP2DeadConnectionProbedAfterTimeout(t *testing.T) {
	t.Parallel()
	s := newH2Server(t)
	p := newStallProxy(t, s.Addr)
	key, err := apns.ParseP8(s.P8())
	require.NoError(t, err)
	col := newH2Collector(t, 2)
	e, err := apns.NewHTTP2Engine("https://"+p.ln.Addr().String(), apns.TokenAuth(key, s.KeyID, s.TeamID),
		apns.WithRootCAs(s.RootCAs()), apns.WithTopic(h2Topic), apns.WithOutcomeFunc(col.fn),
		apns.WithConns(1), apns.WithRequestTimeout(200*time.Millisecond), apns.WithPingInterval(time.Hour),
		apns.WithMaxRetries(3), apns.WithRetryBackoff(time.Millisecond, 10*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(func() { closeH2Engine(t, e) })
	ctx := context.Background()
	require.NoError(t, e.Send(ctx, &apns.Notification{Token: h2Token(1), Payload: h2Payload}, 1))
	require.NoError(t, col.wait(1)[0].Err)

	p.stall()
	start := time.Now()
	require.NoError(t, e.Send(ctx, &apns.Notification{Token: h2Token(2), Payload: h2Payload}, 2))
	o := col.wait(1)[0]
	require.NoError(t, o.Err)
	require.Equal(t, 2, o.Attempts, "timed out once on the dead connection, then delivered on a new one")
	require.Equal(t, int32(2), p.opened.Load())
	require.Less(t, time.Since(start), 5*time.Second)
}
