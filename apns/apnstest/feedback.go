package apnstest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/jetpush/apns-worker/apns"
)

// FeedbackOption configures a FeedbackServer.
type FeedbackOption func(*FeedbackServer)

// FeedbackPKI makes the server use p, e.g. the PKI of a Gateway, so one
// client certificate works with both (default: a new PKI of its own).
func FeedbackPKI(p *PKI) FeedbackOption {
	return func(s *FeedbackServer) { s.pki = p }
}

// FeedbackAddr makes the server listen on addr instead of 127.0.0.1:0.
func FeedbackAddr(addr string) FeedbackOption {
	return func(s *FeedbackServer) { s.Addr = addr }
}

// FeedbackServer is an in-process feedback service on 127.0.0.1 with real
// TLS, requiring a client certificate of its PKI. Like Apple's, it sends
// each connection what is queued (Add, AddRaw, AddTruncated), clears the
// queue, and closes the connection. Methods are safe for concurrent use.
type FeedbackServer struct {
	// Addr is the server's "127.0.0.1:port".
	Addr string

	pki *PKI
	ln  net.Listener
	tls *tls.Config
	wg  sync.WaitGroup

	mu            sync.Mutex
	queue         []byte
	conns         int
	served        int // connections that completed TLS and got the queue
	handshakeErrs int
	stallTLS      bool
	stallData     bool
	unstall       chan struct{} // closed by Unstall and Close
	open          map[net.Conn]struct{}
	closed        bool
}

// NewFeedbackServer starts a feedback server (on 127.0.0.1:0 by default). It panics if
// it cannot listen, like httptest.NewServer. Stop it with Close.
func NewFeedbackServer(opts ...FeedbackOption) *FeedbackServer {
	s := &FeedbackServer{Addr: "127.0.0.1:0", open: make(map[net.Conn]struct{}), unstall: make(chan struct{})}
	for _, opt := range opts {
		opt(s)
	}
	if s.pki == nil {
		s.pki = MustPKI()
	}
	s.tls = s.pki.ServerTLS(true)
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		panic(fmt.Sprintf("apnstest: feedback server: %v", err))
	}
	s.ln = ln
	s.Addr = ln.Addr().String()
	s.wg.Add(1)
	go s.accept()
	return s
}

// PKI returns the server's PKI.
func (s *FeedbackServer) PKI() *PKI { return s.pki }

// ClientCert returns a client certificate the server accepts.
func (s *FeedbackServer) ClientCert() tls.Certificate { return s.pki.ClientCert }

// RootCAs returns a pool that trusts the server's certificate.
func (s *FeedbackServer) RootCAs() *x509.CertPool { return s.pki.RootCAs }

// Add queues a tuple for tok at t, sent to the next connection.
func (s *FeedbackServer) Add(tok apns.Token, t time.Time) {
	s.AddRaw(EncodeFeedbackTuple(tok, t))
}

// AddRaw queues raw bytes, sent as they are after what is already queued:
// garbage, or tuples with a wrong token length.
func (s *FeedbackServer) AddRaw(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, b...)
}

// AddTruncated queues the first n bytes of the tuple for tok at t. Queued
// last, it makes the server close the connection mid-tuple.
func (s *FeedbackServer) AddTruncated(tok apns.Token, t time.Time, n int) {
	b := EncodeFeedbackTuple(tok, t)
	s.AddRaw(b[:max(0, min(n, len(b)))])
}

// Queued returns how many bytes wait for the next connection.
func (s *FeedbackServer) Queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// StallHandshake makes new connections hang before TLS (TCP accepted, the
// handshake never answered) until Unstall or Close.
func (s *FeedbackServer) StallHandshake() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stallTLS = true
}

// StallAfterData makes new connections stay open after the queue is sent,
// without sending more, until Unstall or Close.
func (s *FeedbackServer) StallAfterData() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stallData = true
}

// Unstall releases stalled connections (they close without sending) and
// turns stalling off.
func (s *FeedbackServer) Unstall() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stallTLS, s.stallData = false, false
	if !s.closed {
		close(s.unstall)
		s.unstall = make(chan struct{})
	}
}

// Conns returns how many TCP connections the server accepted.
func (s *FeedbackServer) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// Served returns how many connections completed TLS and were sent the
// queue (possibly empty).
func (s *FeedbackServer) Served() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served
}

// HandshakeErrors returns how many TLS handshakes failed, e.g. for a client
// certificate of another PKI.
func (s *FeedbackServer) HandshakeErrors() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handshakeErrs
}

// Close stops the server, closes open connections and waits for its
// goroutines. It is safe to call more than once.
func (s *FeedbackServer) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.unstall)
		for c := range s.open {
			c.Close()
		}
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
}

func (s *FeedbackServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return // closed
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns++
		s.open[c] = struct{}{}
		stallTLS, unstall := s.stallTLS, s.unstall
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(c, stallTLS, unstall)
	}
}

func (s *FeedbackServer) serve(raw net.Conn, stallTLS bool, unstall <-chan struct{}) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.open, raw)
		s.mu.Unlock()
		raw.Close()
	}()
	if stallTLS {
		<-unstall
		return
	}
	conn := tls.Server(raw, s.tls)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := conn.HandshakeContext(ctx); err != nil {
		s.mu.Lock()
		s.handshakeErrs++
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	data := s.queue
	s.queue = nil
	s.served++
	stallData, unstall := s.stallData, s.unstall
	s.mu.Unlock()
	_ = raw.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(data); err != nil {
		return
	}
	if stallData {
		<-unstall
		return
	}
	_ = conn.Close() // close_notify, then the TCP close
}

// EncodeFeedbackTuple returns the feedback service's encoding of tok at t:
// 4-byte big-endian UNIX seconds, 2-byte token length, the token.
func EncodeFeedbackTuple(tok apns.Token, t time.Time) []byte {
	b := make([]byte, 6, 6+len(tok))
	binary.BigEndian.PutUint32(b, uint32(t.Unix()))
	binary.BigEndian.PutUint16(b[4:], uint16(len(tok)))
	return append(b, tok...)
}
