package integration

import (
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"

	"github.com/jetpush/apns-worker/apns/apnstest"
)

// chaosProxy is a TLS-terminating proxy on 127.0.0.1 in front of an
// HTTP/2 server. Per connection (by serial, from 1) its plan may close the
// connection silently (the TCP socket, no GOAWAY, no TLS close_notify)
// after a number of bytes from the client, and may put an invalid SETTINGS
// frame into the server's frames, first or after some frames.
type chaosProxy struct {
	URL     string
	ln      net.Listener
	backend string
	tlsIn   *tls.Config // towards the worker
	tlsOut  *tls.Config // towards the server
	plan    func(serial int) connPlan

	wg          sync.WaitGroup
	mu          sync.Mutex
	open        map[net.Conn]bool
	cuts        []int64 // client bytes at each silent close; under mu
	conns       atomic.Int64
	down        atomic.Bool  // closing every connection at once: an outage
	refusedN    atomic.Int64 // connections closed by the outage
	closes      atomic.Int64 // silent closes done
	injected    atomic.Int64 // invalid SETTINGS frames sent
	injectedMid atomic.Int64 // of which after the server's first frame
}

// connPlan is what the proxy does to one connection.
type connPlan struct {
	closeAfter     int64           // client bytes after which to close; 0: never
	settings       []http2.Setting // an invalid SETTINGS frame to send; nil: none
	settingsAfter  int             // server frames to forward before it
	settingsInject bool
}

// startChaosProxy starts a proxy to the TLS server at backend (host:port)
// that pki's CA verifies; it presents pki's server certificate with ALPN
// h2. It is closed at cleanup.
func startChaosProxy(tb testing.TB, pki *apnstest.PKI, backend string, plan func(serial int) connPlan) *chaosProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	in := pki.ServerTLS(false)
	in.NextProtos = []string{"h2"}
	p := &chaosProxy{
		URL: "https://" + ln.Addr().String(), ln: ln, backend: backend, tlsIn: in,
		tlsOut: &tls.Config{RootCAs: pki.RootCAs, NextProtos: []string{"h2"}, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12},
		plan:   plan, open: map[net.Conn]bool{},
	}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.close)
	return p
}

// closedAfter returns the client bytes after which connections were
// closed silently, in order.
func (p *chaosProxy) closedAfter() []int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int64(nil), p.cuts...)
}

func (p *chaosProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.open {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *chaosProxy) track(c net.Conn) {
	p.mu.Lock()
	p.open[c] = true
	p.mu.Unlock()
}

func (p *chaosProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.open, c)
	p.mu.Unlock()
	c.Close()
}

func (p *chaosProxy) accept() {
	defer p.wg.Done()
	for serial := 1; ; serial++ {
		raw, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.conns.Add(1)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handle(raw, p.plan(serial))
		}()
	}
}

// setDown starts (closing every open connection) or ends an outage.
func (p *chaosProxy) setDown(down bool) {
	p.down.Store(down)
	if !down {
		return
	}
	p.mu.Lock()
	for c := range p.open {
		c.Close()
	}
	p.mu.Unlock()
}

// handle proxies one connection; closing rawIn or rawOut ends it.
func (p *chaosProxy) handle(rawIn net.Conn, plan connPlan) {
	p.track(rawIn)
	defer p.untrack(rawIn)
	if p.down.Load() {
		p.refusedN.Add(1)
		return
	}
	in := tls.Server(rawIn, p.tlsIn)
	if err := in.Handshake(); err != nil {
		return
	}
	rawOut, err := net.Dial("tcp", p.backend)
	if err != nil {
		return
	}
	p.track(rawOut)
	defer p.untrack(rawOut)
	out := tls.Client(rawOut, p.tlsOut)
	if err := out.Handshake(); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.toServer(in, out, rawIn, rawOut, plan.closeAfter)
	}()
	p.toClient(out, in, plan)
	rawIn.Close()
	rawOut.Close()
	<-done
}

// toServer copies the client's bytes, closing both sockets silently once
// closeAfter bytes went through (the last write cut to fit).
func (p *chaosProxy) toServer(in, out io.ReadWriter, rawIn, rawOut net.Conn, closeAfter int64) {
	defer rawIn.Close()
	defer rawOut.Close()
	buf := make([]byte, 32<<10)
	var sent int64
	for {
		n, err := in.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			cut := closeAfter > 0 && sent+int64(n) >= closeAfter
			if cut {
				chunk = chunk[:closeAfter-sent]
			}
			if _, werr := out.Write(chunk); werr != nil {
				return
			}
			sent += int64(len(chunk))
			if cut {
				p.closes.Add(1)
				p.mu.Lock()
				p.cuts = append(p.cuts, closeAfter)
				p.mu.Unlock()
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// toClient copies the server's frames one by one, putting the plan's
// SETTINGS frame in after settingsAfter of them.
func (p *chaosProxy) toClient(out, in io.ReadWriter, plan connPlan) {
	var hdr [9]byte
	buf := make([]byte, 64<<10)
	for frames := 0; ; frames++ {
		if plan.settingsInject && frames == plan.settingsAfter {
			if _, err := in.Write(settingsFrame(plan.settings)); err != nil {
				return
			}
			p.injected.Add(1)
			if frames > 0 {
				p.injectedMid.Add(1)
			}
		}
		if _, err := io.ReadFull(out, hdr[:]); err != nil {
			return
		}
		n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		if n > len(buf) {
			buf = make([]byte, n)
		}
		if _, err := io.ReadFull(out, buf[:n]); err != nil {
			return
		}
		if _, err := in.Write(append(hdr[:], buf[:n]...)); err != nil {
			return
		}
	}
}

// settingsFrame encodes a SETTINGS frame with ss as they are, valid or not.
func settingsFrame(ss []http2.Setting) []byte {
	b := make([]byte, 9, 9+6*len(ss))
	n := 6 * len(ss)
	b[0], b[1], b[2] = byte(n>>16), byte(n>>8), byte(n)
	b[3] = byte(http2.FrameSettings)
	for _, s := range ss {
		b = binary.BigEndian.AppendUint16(b, uint16(s.ID))
		b = binary.BigEndian.AppendUint32(b, s.Val)
	}
	return b
}
