package apnstest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/net/http2"

	"github.com/jetpush/apns-worker/apns"
)

// HTTP2Server is an in-process APNs HTTP/2 provider API on a loopback TLS
// listener, checking requests like Apple does. It speaks HTTP/2 itself
// (its own framing, x/net's HPACK; no net/http), with one goroutine per
// connection reading, checking and answering, and one more per connection
// for delayed answers, so that it stays cheap next to the client under
// test: a few µs of CPU per request when requests come in batches, about
// 30 µs for a lone request in flight (mostly the two system calls).
//
// Checks, in order, each answered with Apple's status and reason: path
// /3/device/<token> (404 BadPath), POST (405 MethodNotAllowed), token hex
// of even length up to 200 digits (400 MissingDeviceToken, BadDeviceToken),
// no header twice (400 DuplicateHeaders), auth (below), apns-push-type
// (InvalidPushType), apns-topic present, printable, allowed and the
// token's (MissingTopic, BadTopic, TopicDisallowed, DeviceTokenNotForTopic;
// with a client certificate the topic may be left out), apns-priority 10,
// 5 or 1 and 5 for background, absent meaning 10 (BadPriority),
// apns-expiration digits (BadExpirationDate), apns-collapse-id at most 64
// bytes (BadCollapseId), apns-id a lowercase UUID (BadMessageId), payload
// present (PayloadEmpty) and at most 4096 bytes, 5120 for voip (413
// PayloadTooLarge). Then RefuseStreams, Inject and Reason apply, else the
// notification is accepted. Every answer carries apns-id: the request's,
// or a new UUID; errors carry {"reason": ...}, 410 also "timestamp" (ms).
//
// Token auth: requests carry "authorization: bearer <jwt>" signed with Key
// (ES256, kid KeyID, iss TeamID, iat), else 403 MissingProviderToken or
// InvalidProviderToken; iat more than an hour before the clock's now gives
// 403 ExpiredProviderToken. A connection keeps the last token it accepted,
// so the steady state costs a string comparison; a different token whose
// iat is less than 20 minutes from that one's gets 429
// TooManyProviderTokenUpdates. Certificate auth: a connection that
// presented a client certificate of the PKI needs no token
// (HTTP2ClientCertAuth makes the certificate mandatory).
//
// Knobs that can change while the server runs are methods (Reason, Inject,
// RefuseStreams, SetLatency, SetGoAwayAfter, SetMaxStreams, GoAway); each
// has an HTTP2... option to set it from the start.
type HTTP2Server struct {
	URL    string // "https://127.0.0.1:port"
	Addr   string // "127.0.0.1:port"
	KeyID  string // 10 characters: the JWT header's kid
	TeamID string // 10 characters: the JWT's iss
	Key    *ecdsa.PrivateKey
	PKI    *PKI

	ln          net.Listener
	tlsConf     *tls.Config
	now         func() time.Time
	parser      *jwt.Parser
	requireCert bool
	record      bool
	window      uint32
	topics      map[string]bool
	tokenTopics map[string]string

	latency     atomic.Int64 // time.Duration
	goAwayAfter atomic.Int64
	maxStreams  atomic.Uint32

	mu            sync.Mutex // guards the fields below
	closed        bool
	conns         map[*h2conn]struct{}
	reasons       map[string]h2reply // by lowercase hex token
	reasonFunc    func(tok apns.Token) (status int, reason string, ok bool)
	injects       []h2inject
	refuse        int
	accepted      int
	perToken      map[string]int
	requests      []HTTP2Request
	mints         map[string]struct{}
	nconns        int
	limitExceeded int
	refused       int
	maxOpen       int
	statuses      map[int]int
	faults        h2faults
	faultStats    HTTP2FaultStats
	clientGoAways map[http2.ErrCode]int

	wg        sync.WaitGroup // connection goroutines
	serveWG   sync.WaitGroup // Serve started by NewHTTP2Server
	serving   atomic.Bool
	closeOnce sync.Once
}

// HTTP2Request is what the server recorded of an accepted notification
// (with HTTP2Record(true)).
type HTTP2Request struct {
	Conn    int               // 1 for the first connection opened, and so on
	Stream  uint32            // HTTP/2 stream id
	Token   apns.Token        // from the path
	Header  map[string]string // regular headers, lowercase names
	Payload []byte
	ID      string // the apns-id answered
}

type h2reply struct {
	status int
	reason string
	ans    *HTTP2Answer // the whole answer, when injected (see InjectAnswer)
}

// h2inject is a queued injection: for its next n requests, or for d from
// the first request it answers (then end is set).
type h2inject struct {
	n   int
	d   time.Duration
	end time.Time
	h2reply
}

// NewHTTP2Server starts an HTTP2Server, like httptest.NewServer; it panics
// if an option is invalid or it cannot listen. Close it when done.
func NewHTTP2Server(opts ...HTTP2Option) *HTTP2Server {
	s, err := ListenHTTP2(opts...)
	if err != nil {
		panic(err)
	}
	s.serveWG.Add(1)
	go func() {
		defer s.serveWG.Done()
		_ = s.Serve()
	}()
	return s
}

// ListenHTTP2 makes an HTTP2Server listening on its address (default
// 127.0.0.1:0) without serving yet: call Serve, for example in a process of
// its own, and Close.
func ListenHTTP2(opts ...HTTP2Option) (*HTTP2Server, error) {
	c := h2config{addr: "127.0.0.1:0", maxStreams: 1000, window: 1 << 20, now: time.Now}
	for _, o := range opts {
		if err := o(&c); err != nil {
			return nil, err
		}
	}
	if c.pki == nil {
		p, err := NewPKI()
		if err != nil {
			return nil, err
		}
		c.pki = p
	}
	if c.key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		c.key, c.keyID, c.teamID = k, h2RandID(), h2RandID()
	}
	tc := c.pki.ServerTLS(c.requireCert)
	if !c.requireCert {
		tc.ClientAuth = tls.VerifyClientCertIfGiven
		tc.ClientCAs = c.pki.ClientCAs
	}
	tc.NextProtos = []string{"h2"}
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return nil, fmt.Errorf("apnstest: %w", err)
	}
	s := &HTTP2Server{
		Addr:        ln.Addr().String(),
		KeyID:       c.keyID,
		TeamID:      c.teamID,
		Key:         c.key,
		PKI:         c.pki,
		ln:          ln,
		tlsConf:     tc,
		now:         c.now,
		requireCert: c.requireCert,
		record:      c.record,
		window:      c.window,
		tokenTopics: c.tokenTopics,
		conns:       map[*h2conn]struct{}{},
		reasons:     c.reasons,
		reasonFunc:  c.reasonFunc,
		injects:     c.injects,
		refuse:      c.refuse,
		faults:      c.faults,
		perToken:    map[string]int{},
		mints:       map[string]struct{}{},
		statuses:    map[int]int{},
	}
	s.URL = "https://" + s.Addr
	if len(c.topics) > 0 {
		s.topics = map[string]bool{}
		for _, t := range c.topics {
			s.topics[t] = true
		}
	}
	if s.reasons == nil {
		s.reasons = map[string]h2reply{}
	}
	s.parser = jwt.NewParser(jwt.WithValidMethods([]string{"ES256"}), jwt.WithoutClaimsValidation())
	s.latency.Store(int64(c.latency))
	s.goAwayAfter.Store(int64(c.goAwayAfter))
	s.maxStreams.Store(c.maxStreams)
	return s, nil
}

// Serve accepts connections until Close; it returns nil after Close.
func (s *HTTP2Server) Serve() error {
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("apnstest: HTTP2Server.Serve called twice")
	}
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		s.nconns++
		c := newH2Conn(s, nc, s.nconns)
		s.conns[c] = struct{}{}
		s.wg.Add(2)
		s.mu.Unlock()
		go c.serve()
		go c.delayer()
	}
}

// Close stops the listener, closes every connection and waits for all the
// server's goroutines.
func (s *HTTP2Server) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.ln.Close()
		for c := range s.conns {
			c.raw.Close()
		}
		s.mu.Unlock()
		s.serveWG.Wait()
		s.wg.Wait()
	})
}

// RootCAs trusts the server's certificate.
func (s *HTTP2Server) RootCAs() *x509.CertPool { return s.PKI.RootCAs }

// ClientCert is a client certificate the server accepts (certificate auth).
func (s *HTTP2Server) ClientCert() tls.Certificate { return s.PKI.ClientCert }

// P8 returns Key as Apple ships .p8 files: PKCS#8, PEM "PRIVATE KEY".
func (s *HTTP2Server) P8() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(s.Key)
	if err != nil {
		panic(fmt.Sprintf("apnstest: %v", err)) // cannot happen for a P-256 key
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// Reason makes the server answer every otherwise valid request for tok
// with status and reason, e.g. 410 "Unregistered" (410 answers carry a
// timestamp: the server clock's now). Status 0 removes the rule.
func (s *HTTP2Server) Reason(tok apns.Token, status int, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if status == 0 {
		delete(s.reasons, tok.String())
		return
	}
	s.reasons[tok.String()] = h2reply{status: status, reason: reason}
}

// Inject makes the server answer the next n otherwise valid requests (of
// any token, on any connection) with status and reason, e.g.
// 429 TooManyRequests, 503 ServiceUnavailable, 500 InternalServerError.
// Injections queue up behind earlier ones.
func (s *HTTP2Server) Inject(n, status int, reason string) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.injects = append(s.injects, h2inject{n: n, h2reply: h2reply{status: status, reason: reason}})
}

// RefuseStreams makes the server reset the next n otherwise valid requests
// with RST_STREAM REFUSED_STREAM (not processed: safe to retry). They take
// precedence over Inject.
func (s *HTTP2Server) RefuseStreams(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuse += n
}

// SetLatency delays every later response by d (0: answer at once). The
// request counts as accepted when it is read; its stream stays open, and
// counts against the stream limit, until answered. Responses leave in the
// order requests were read, so after a cut the new latency applies once
// the responses already waiting have left.
func (s *HTTP2Server) SetLatency(d time.Duration) { s.latency.Store(int64(d)) }

// SetGoAwayAfter makes each connection send GOAWAY (NO_ERROR, debug data
// {"reason":"Shutdown"}) right after reading its n-th request, with that
// request as the last stream id: it and earlier ones are answered, later
// streams are ignored (the client must retry them on a new connection),
// then the server closes the connection. 0 turns it off. It applies to
// requests not yet counted on live connections too.
func (s *HTTP2Server) SetGoAwayAfter(n int) { s.goAwayAfter.Store(int64(n)) }

// SetMaxStreams lowers (or raises) SETTINGS_MAX_CONCURRENT_STREAMS: live
// connections get a new SETTINGS frame, enforced once the client
// acknowledges it; new connections advertise n.
func (s *HTTP2Server) SetMaxStreams(n int) {
	if n < 1 {
		n = 1
	}
	s.maxStreams.Store(uint32(n))
	for _, c := range s.liveConns() {
		c.mu.Lock()
		if c.ready && !c.writeClosed {
			c.writeSettings(h2setMaxConcurrentStreams, uint32(n))
			c.pendingMax = append(c.pendingMax, uint32(n))
			c.flush()
		}
		c.mu.Unlock()
	}
}

// GoAway sends GOAWAY (NO_ERROR) now on every live connection, with the
// last stream each has read: those are still answered, then the
// connections close.
func (s *HTTP2Server) GoAway() {
	for _, c := range s.liveConns() {
		c.mu.Lock()
		if c.ready && !c.writeClosed {
			c.sendGoAway(c.lastStream)
			c.maybeShutdown()
			c.flush()
		}
		c.mu.Unlock()
	}
}

func (s *HTTP2Server) liveConns() []*h2conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := make([]*h2conn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	return cs
}

// Accepted is the number of notifications accepted (answered 200).
func (s *HTTP2Server) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// AcceptedFor is the number of notifications accepted for tok.
func (s *HTTP2Server) AcceptedFor(tok apns.Token) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.perToken[tok.String()]
}

// Statuses counts the responses sent by HTTP status (200 included;
// refused streams are not responses).
func (s *HTTP2Server) Statuses() map[int]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.statuses)
}

// Requests returns the accepted requests recorded with HTTP2Record(true),
// in the order they were accepted.
func (s *HTTP2Server) Requests() []HTTP2Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]HTTP2Request(nil), s.requests...)
}

// Mints is the number of distinct JWTs with a valid signature, kid and
// iss the server has seen, whether or not it accepted them (expired, too
// frequent): a client that shares one token across its connections and
// refreshes it every 50 minutes shows 1, plus 1 per refresh.
func (s *HTTP2Server) Mints() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.mints)
}

// Conns is the number of connections accepted so far.
func (s *HTTP2Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nconns
}

// StreamLimitExceeded counts streams the client opened beyond the
// acknowledged SETTINGS_MAX_CONCURRENT_STREAMS (each was refused).
func (s *HTTP2Server) StreamLimitExceeded() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limitExceeded
}

// Refused counts the streams reset with REFUSED_STREAM by RefuseStreams
// (not those beyond the stream limit: see StreamLimitExceeded).
func (s *HTTP2Server) Refused() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

// MaxOpenStreams is the largest number of streams seen open at once on one
// connection after the client acknowledged the server's first SETTINGS
// (before that a client may legitimately open more than the limit).
func (s *HTTP2Server) MaxOpenStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxOpen
}

// decide consumes faults, injections and per-token rules for a valid
// request, or accepts it. act says whether to answer r, reset the stream
// with REFUSED_STREAM, or leave it unanswered (closing or stalling the
// connection).
func (s *HTTP2Server) decide(c *h2conn, st *h2stream) (r h2reply, act h2action) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if act := s.faults.connFault(&s.faultStats); act != h2answer {
		return h2reply{}, act
	}
	if s.refuse > 0 {
		s.refuse--
		s.refused++
		return h2reply{}, h2refuse
	}
	if in := s.nextInject(); in != nil {
		r = in.h2reply
		if in.d == 0 {
			if in.n--; in.n <= 0 {
				s.injects = s.injects[1:]
			}
		}
		if r.ans == nil || r.ans.Status != 0 || r.ans.Reset { // else a pass
			if r.ans == nil || !r.ans.Reset {
				s.statuses[r.status]++
			}
			if r.ans != nil {
				s.faultStats.Answers++
				if r.ans.Taken {
					s.take(c, st)
				}
			}
			return r, h2answer
		}
	}
	r = s.verdict(c, st)
	s.statuses[r.status]++
	return r, h2answer
}

// verdict is the server's own answer to a valid request: a per-token rule,
// or 200 (counted as accepted); s.mu is held.
func (s *HTTP2Server) verdict(c *h2conn, st *h2stream) h2reply {
	if rr, ok := s.reasons[st.token]; ok {
		return rr
	}
	if f := s.faults.answerFunc; f != nil {
		if tok, err := apns.ParseToken(st.token); err == nil {
			if a, ok := f(tok); ok && a.check() == nil && (a.Status != 0 || a.Reset) {
				s.faultStats.Answers++
				return answerReply(a)
			}
		}
	}
	if s.reasonFunc != nil {
		if tok, err := apns.ParseToken(st.token); err == nil {
			if status, reason, ok := s.reasonFunc(tok); ok {
				return h2reply{status: status, reason: reason}
			}
		}
	}
	s.take(c, st)
	return h2reply{status: 200}
}

// take counts st's notification as accepted; s.mu is held.
func (s *HTTP2Server) take(c *h2conn, st *h2stream) {
	s.accepted++
	s.perToken[st.token]++
	if s.record {
		tok, _ := apns.ParseToken(st.token)
		s.requests = append(s.requests, HTTP2Request{
			Conn: c.id, Stream: st.id, Token: tok, Header: st.header,
			Payload: bytes.Clone(st.body), ID: st.apnsID,
		})
	}
}

// nextInject returns the injection that applies now, dropping expired
// windows; s.mu is held.
func (s *HTTP2Server) nextInject() *h2inject {
	for len(s.injects) > 0 {
		in := &s.injects[0]
		if in.d == 0 {
			return in
		}
		now := time.Now()
		if in.end.IsZero() {
			in.end = now.Add(in.d)
		}
		if now.Before(in.end) {
			return in
		}
		s.injects = s.injects[1:]
	}
	return nil
}

func (s *HTTP2Server) noteOpen(n int) {
	s.mu.Lock()
	if n > s.maxOpen {
		s.maxOpen = n
	}
	s.mu.Unlock()
}

func (s *HTTP2Server) noteLimitExceeded() {
	s.mu.Lock()
	s.limitExceeded++
	s.mu.Unlock()
}

func (s *HTTP2Server) noteMint(tok string) {
	s.mu.Lock()
	s.mints[tok] = struct{}{}
	s.mu.Unlock()
}

func (s *HTTP2Server) removeConn(c *h2conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// verifyJWT checks tok's signature, kid and iss and returns its iat, or
// the reason to refuse it.
func (s *HTTP2Server) verifyJWT(tok string) (time.Time, string) {
	var claims jwt.RegisteredClaims
	_, err := s.parser.ParseWithClaims(tok, &claims, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != s.KeyID {
			return nil, errors.New("unknown kid")
		}
		return &s.Key.PublicKey, nil
	})
	if err != nil || claims.Issuer != s.TeamID || claims.IssuedAt == nil {
		return time.Time{}, "InvalidProviderToken"
	}
	return claims.IssuedAt.Time, ""
}
