package apnstest

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

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

// HTTP2Option configures an HTTP2Server.
type HTTP2Option func(*h2config) error

type h2config struct {
	addr        string
	pki         *PKI
	requireCert bool
	keyID       string
	teamID      string
	key         *ecdsa.PrivateKey
	maxStreams  uint32
	window      uint32
	now         func() time.Time
	record      bool
	latency     time.Duration
	goAwayAfter int
	topics      []string
	tokenTopics map[string]string
	reasons     map[string]h2reply
	reasonFunc  func(tok apns.Token) (status int, reason string, ok bool)
	injects     []h2inject
	refuse      int
	faults      h2faults
}

// HTTP2Listen sets the listen address (default "127.0.0.1:0").
func HTTP2Listen(addr string) HTTP2Option {
	return func(c *h2config) error { c.addr = addr; return nil }
}

// HTTP2PKI makes the server use p (for example one shared with other test
// servers) instead of a new PKI.
func HTTP2PKI(p *PKI) HTTP2Option {
	return func(c *h2config) error {
		if p == nil {
			return errors.New("apnstest: HTTP2PKI: nil PKI")
		}
		c.pki = p
		return nil
	}
}

// HTTP2ClientCertAuth makes the TLS handshake require a client certificate
// of the PKI (certificate auth); requests then need no JWT. Without it a
// certificate is optional, and a connection that presents one needs no JWT.
func HTTP2ClientCertAuth() HTTP2Option {
	return func(c *h2config) error { c.requireCert = true; return nil }
}

// HTTP2Key sets the provider signing key and its ids instead of generated
// ones (for a server in its own process whose key a client must load).
func HTTP2Key(keyID, teamID string, key *ecdsa.PrivateKey) HTTP2Option {
	return func(c *h2config) error {
		if len(keyID) != 10 || len(teamID) != 10 || key == nil {
			return errors.New("apnstest: HTTP2Key: key id and team id must have 10 characters, key non-nil")
		}
		c.keyID, c.teamID, c.key = keyID, teamID, key
		return nil
	}
}

// HTTP2MaxStreams sets the SETTINGS_MAX_CONCURRENT_STREAMS the server
// advertises and enforces (default 1000). Streams beyond it are refused
// with RST_STREAM REFUSED_STREAM and counted by StreamLimitExceeded.
func HTTP2MaxStreams(n int) HTTP2Option {
	return func(c *h2config) error {
		if n < 1 {
			return fmt.Errorf("apnstest: HTTP2MaxStreams(%d) < 1", n)
		}
		c.maxStreams = uint32(n)
		return nil
	}
}

// HTTP2Window sets the initial stream flow-control window the server
// advertises (default 1 MiB); a small one exercises the client's flow
// control. The connection window is 16 MiB, or n if larger.
func HTTP2Window(n int) HTTP2Option {
	return func(c *h2config) error {
		if n < 1 || n > math.MaxInt32 {
			return fmt.Errorf("apnstest: HTTP2Window(%d) out of range", n)
		}
		c.window = uint32(n)
		return nil
	}
}

// HTTP2Clock sets the clock for JWT iat checks and 410 timestamps
// (default time.Now). Latency uses the real clock.
func HTTP2Clock(now func() time.Time) HTTP2Option {
	return func(c *h2config) error {
		if now == nil {
			return errors.New("apnstest: HTTP2Clock: nil clock")
		}
		c.now = now
		return nil
	}
}

// HTTP2Record makes the server keep the headers and payload of every
// accepted request (see Requests). Off by default, for benchmarks.
func HTTP2Record(on bool) HTTP2Option {
	return func(c *h2config) error { c.record = on; return nil }
}

// HTTP2Latency delays every response by d (see SetLatency).
func HTTP2Latency(d time.Duration) HTTP2Option {
	return func(c *h2config) error {
		if d < 0 {
			return fmt.Errorf("apnstest: HTTP2Latency(%v) < 0", d)
		}
		c.latency = d
		return nil
	}
}

// HTTP2GoAwayAfter makes every connection send GOAWAY after its n-th
// request (see SetGoAwayAfter).
func HTTP2GoAwayAfter(n int) HTTP2Option {
	return func(c *h2config) error {
		if n < 0 {
			return fmt.Errorf("apnstest: HTTP2GoAwayAfter(%d) < 0", n)
		}
		c.goAwayAfter = n
		return nil
	}
}

// HTTP2Topics restricts apns-topic to the given topics; others get
// 400 TopicDisallowed.
func HTTP2Topics(topics ...string) HTTP2Option {
	return func(c *h2config) error { c.topics = append(c.topics, topics...); return nil }
}

// HTTP2TokenTopic binds a device token to a topic: requests for tok with
// another topic get 400 DeviceTokenNotForTopic.
func HTTP2TokenTopic(tok apns.Token, topic string) HTTP2Option {
	return func(c *h2config) error {
		if c.tokenTopics == nil {
			c.tokenTopics = map[string]string{}
		}
		c.tokenTopics[tok.String()] = topic
		return nil
	}
}

// HTTP2Reason answers every valid request for tok with status and reason
// (see Reason).
func HTTP2Reason(tok apns.Token, status int, reason string) HTTP2Option {
	return func(c *h2config) error {
		if status < 200 || status > 599 {
			return fmt.Errorf("apnstest: HTTP2Reason: bad status %d", status)
		}
		if c.reasons == nil {
			c.reasons = map[string]h2reply{}
		}
		c.reasons[tok.String()] = h2reply{status: status, reason: reason}
		return nil
	}
}

// HTTP2ReasonFunc makes the server ask f about each valid request's token
// (after HTTP2Reason): when f says ok, the request gets status and reason.
// f is called concurrently.
func HTTP2ReasonFunc(f func(tok apns.Token) (status int, reason string, ok bool)) HTTP2Option {
	return func(c *h2config) error {
		c.reasonFunc = f
		return nil
	}
}

// HTTP2Inject answers the next n otherwise valid requests with status and
// reason (see Inject).
func HTTP2Inject(n, status int, reason string) HTTP2Option {
	return func(c *h2config) error {
		if n < 0 || status < 200 || status > 599 {
			return fmt.Errorf("apnstest: HTTP2Inject(%d, %d): bad count or status", n, status)
		}
		c.injects = append(c.injects, h2inject{n: n, h2reply: h2reply{status: status, reason: reason}})
		return nil
	}
}

// HTTP2RefuseStreams answers the next n otherwise valid requests with
// RST_STREAM REFUSED_STREAM (see RefuseStreams).
func HTTP2RefuseStreams(n int) HTTP2Option {
	return func(c *h2config) error {
		if n < 0 {
			return fmt.Errorf("apnstest: HTTP2RefuseStreams(%d) < 0", n)
		}
		c.refuse += n
		return nil
	}
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
	m := make(map[int]int, len(s.statuses))
	for k, v := range s.statuses {
		m[k] = v
	}
	return m
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
	ctype     string // content-type, if any
	padding   int    // bytes of x-padding header
	immediate bool   // skips the latency queue
	accepted  bool   // counted as accepted (the server's own 200)
	respBody  []byte // owned buffer for the server's own error bodies
	out       []byte // the body to send: respBody, or an injected answer's (shared, read-only)
	sent      int    // bytes of out written
}

func (st *h2stream) get(i int) (string, bool) { return st.vals[i], st.has&(1<<i) != 0 }

// h2maxBody is the largest body the server keeps: one byte over the VoIP
// limit is enough to tell PayloadTooLarge.
const h2maxBody = 5121

const (
	h2connWindow   = 16 << 20
	h2maxFrame     = 16384    // SETTINGS_MAX_FRAME_SIZE (the default)
	h2maxHeaderBuf = 64 << 10 // largest header block accepted
)

// HTTP/2 frame types, flags, settings and error codes (RFC 9113).
const (
	h2fData         = 0x0
	h2fHeaders      = 0x1
	h2fPriority     = 0x2
	h2fRSTStream    = 0x3
	h2fSettings     = 0x4
	h2fPushPromise  = 0x5
	h2fPing         = 0x6
	h2fGoAway       = 0x7
	h2fWindowUpdate = 0x8
	h2fContinuation = 0x9

	h2flagEndStream  = 0x1
	h2flagAck        = 0x1
	h2flagEndHeaders = 0x4
	h2flagPadded     = 0x8
	h2flagPriority   = 0x20

	h2setHeaderTableSize      = 0x1
	h2setMaxConcurrentStreams = 0x3
	h2setInitialWindowSize    = 0x4
	h2setMaxFrameSize         = 0x5
	h2setMaxHeaderListSize    = 0x6

	h2errNo            = 0x0
	h2errProtocol      = 0x1
	h2errFlowControl   = 0x3
	h2errStreamClosed  = 0x5
	h2errFrameSize     = 0x6
	h2errRefusedStream = 0x7
	h2errCompression   = 0x9
)

const h2ClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// h2connErr is a connection error: GOAWAY with the code, then close.
type h2connErr uint32

func (e h2connErr) Error() string { return fmt.Sprintf("http2 connection error %d", uint32(e)) }

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

// readFrame reads one frame; p is valid until the next call.
func (c *h2conn) readFrame() (typ, flags byte, sid uint32, p []byte, err error) {
	h := c.rbuf[:9]
	if _, err = io.ReadFull(c.br, h); err != nil {
		return
	}
	n := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	typ, flags, sid = h[3], h[4], binary.BigEndian.Uint32(h[5:])&0x7fffffff
	if n > h2maxFrame {
		return 0, 0, 0, nil, h2connErr(h2errFrameSize)
	}
	p = c.rbuf[9 : 9+n]
	_, err = io.ReadFull(c.br, p)
	return
}

// Frame writers: frames go to the buffered writer; a failed write shows at
// flush, which then closes the connection. The caller holds c.mu.

func (c *h2conn) writeFrame(typ, flags byte, sid uint32, p []byte) {
	if c.writeClosed {
		return
	}
	h := c.fhdr[:]
	h[0], h[1], h[2] = byte(len(p)>>16), byte(len(p)>>8), byte(len(p))
	h[3], h[4] = typ, flags
	binary.BigEndian.PutUint32(h[5:], sid)
	_, _ = c.bw.Write(h)
	_, _ = c.bw.Write(p)
}

// writeSettings writes SETTINGS with id, value pairs.
func (c *h2conn) writeSettings(kv ...uint32) {
	p := c.wbuf[:0]
	for i := 0; i+1 < len(kv); i += 2 {
		p = binary.BigEndian.AppendUint16(p, uint16(kv[i]))
		p = binary.BigEndian.AppendUint32(p, kv[i+1])
	}
	c.writeFrame(h2fSettings, 0, 0, p)
}

func (c *h2conn) writeWindowUpdate(sid, incr uint32) {
	c.writeFrame(h2fWindowUpdate, 0, sid, binary.BigEndian.AppendUint32(c.wbuf[:0], incr))
}

func (c *h2conn) writeRST(sid, code uint32) {
	c.writeFrame(h2fRSTStream, 0, sid, binary.BigEndian.AppendUint32(c.wbuf[:0], code))
}

func (c *h2conn) writeGoAway(last, code uint32, debug string) {
	p := binary.BigEndian.AppendUint32(c.wbuf[:0], last)
	p = binary.BigEndian.AppendUint32(p, code)
	c.writeFrame(h2fGoAway, 0, 0, append(p, debug...))
}

// writeErr closes the connection after a failed write; serve then ends.
func (c *h2conn) writeErr(err error) {
	if err != nil && !c.writeClosed {
		c.writeClosed = true
		c.raw.Close()
	}
}

func (c *h2conn) flush() {
	if c.bw.Buffered() > 0 && !c.writeClosed {
		c.writeErr(c.bw.Flush())
	}
}

func (c *h2conn) connError(code uint32) {
	c.writeGoAway(c.lastStream, code, "")
	c.flush()
}

func (c *h2conn) streamError(id, code uint32) {
	if st := c.streams[id]; st != nil {
		c.closeStream(st)
	}
	c.writeRST(id, code)
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

// finish checks a fully read request and answers it, now or after the
// configured latency, unless a fault leaves it unanswered.
func (c *h2conn) finish(st *h2stream) {
	st.ended = true
	status, reason := c.check(st)
	if id, ok := st.get(h2hID); ok && apns.IsUUID(id) {
		st.apnsID = id
	} else {
		st.apnsID = c.newUUID()
	}
	var ans *HTTP2Answer
	if status == 0 {
		r, act := c.s.decide(c, st)
		switch act {
		case h2refuse:
			st.reset, st.rstCode = true, h2errRefusedStream
		case h2close:
			c.silentClose = true
			return
		case h2stall:
			c.stalled = true
			return
		}
		status, reason, ans = r.status, r.reason, r.ans
		st.accepted = act == h2answer && status == 200 && (ans == nil || ans.Taken)
	} else {
		c.s.mu.Lock()
		c.s.statuses[status]++
		c.s.mu.Unlock()
	}
	st.status = status
	switch {
	case ans != nil:
		st.reset, st.rstCode = ans.Reset, uint32(ans.ResetCode)
		st.ctype, st.padding, st.immediate = ans.ContentType, ans.Padding, ans.Immediate
		st.out = ans.Body // shared by every stream it answers: memory stays bounded
	case status != 200:
		st.ctype = "application/json"
		st.respBody = append(st.respBody[:0], `{"reason":"`...)
		st.respBody = append(st.respBody, reason...)
		st.respBody = append(st.respBody, '"')
		if status == 410 {
			st.respBody = append(st.respBody, `,"timestamp":`...)
			st.respBody = strconv.AppendInt(st.respBody, c.s.now().UnixMilli(), 10)
		}
		st.respBody = append(st.respBody, '}')
		st.out = st.respBody
	}
	if lat := time.Duration(c.s.latency.Load()); lat > 0 && !st.immediate {
		st.due = time.Now().Add(lat)
		c.delayed = append(c.delayed, st)
		if len(c.delayed) == 1 { // else the delayer's timer is set for the head
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
		return
	}
	c.respond(st)
}

// respond writes st's answer: a reset, or HEADERS and, window permitting,
// DATA.
func (c *h2conn) respond(st *h2stream) {
	if st.done || c.stalled {
		return
	}
	if st.reset {
		c.writeRST(st.id, st.rstCode)
		c.closeStream(st)
		return
	}
	c.hbuf.Reset()
	_ = c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: h2StatusText(st.status)})
	_ = c.henc.WriteField(hpack.HeaderField{Name: "apns-id", Value: st.apnsID, Sensitive: true})
	if st.ctype != "" {
		_ = c.henc.WriteField(hpack.HeaderField{Name: "content-type", Value: st.ctype})
	}
	if st.padding > 0 {
		_ = c.henc.WriteField(hpack.HeaderField{Name: "x-padding", Value: strings.Repeat("x", st.padding), Sensitive: true})
	}
	flags := byte(0)
	if len(st.out) == 0 {
		flags |= h2flagEndStream
	}
	c.writeHeaderBlock(st.id, flags, c.hbuf.Bytes())
	if len(st.out) == 0 {
		c.closeStream(st)
		return
	}
	if !c.sendBody(st) {
		c.blocked = append(c.blocked, st)
	}
}

// writeHeaderBlock writes a header block as HEADERS and, when it is larger
// than a frame, CONTINUATION frames.
func (c *h2conn) writeHeaderBlock(sid uint32, flags byte, b []byte) {
	typ := byte(h2fHeaders)
	for {
		n := min(len(b), h2maxFrame)
		f := flags
		if n == len(b) {
			f |= h2flagEndHeaders
		}
		c.writeFrame(typ, f, sid, b[:n])
		if b = b[n:]; len(b) == 0 {
			return
		}
		typ, flags = h2fContinuation, 0
	}
}

// sendBody writes what the flow-control windows allow of st's response
// body, in frames of at most h2maxFrame bytes; it reports whether all of
// it is written.
func (c *h2conn) sendBody(st *h2stream) bool {
	for st.sent < len(st.out) {
		n := int64(len(st.out) - st.sent)
		n = min(n, h2maxFrame, c.connSendWindow, st.sendWindow)
		if n <= 0 {
			return false
		}
		c.connSendWindow -= n
		st.sendWindow -= n
		var flags byte
		if st.sent+int(n) == len(st.out) {
			flags = h2flagEndStream
		}
		c.writeFrame(h2fData, flags, st.id, st.out[st.sent:st.sent+int(n)])
		st.sent += int(n)
	}
	c.closeStream(st)
	return true
}

func (c *h2conn) sendBlocked() {
	if len(c.blocked) == 0 {
		return
	}
	keep := c.blocked[:0]
	for _, st := range c.blocked {
		if !st.done && !c.sendBody(st) {
			keep = append(keep, st)
		}
	}
	clear(c.blocked[len(keep):])
	c.blocked = keep
}

// delayer answers delayed responses when they are due, in the order they
// were read (the queue is in due order while the latency stays the same; a
// response queued after a latency cut waits for those before it).
func (c *h2conn) delayer() {
	defer c.s.wg.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-c.wake:
		case <-t.C:
		}
		c.mu.Lock()
		now := time.Now()
		i := 0
		for ; i < len(c.delayed); i++ {
			st := c.delayed[i]
			if st.done {
				continue
			}
			if st.due.After(now) {
				break
			}
			c.respond(st)
		}
		clear(c.delayed[:i])
		c.delayed = c.delayed[i:]
		var next time.Time
		if len(c.delayed) > 0 {
			next = c.delayed[0].due
		}
		c.flush()
		c.mu.Unlock()
		if !next.IsZero() {
			t.Reset(time.Until(next))
		}
	}
}

// check validates a request like APNs; it returns status 0 for a valid one.
func (c *h2conn) check(st *h2stream) (int, string) {
	const prefix = "/3/device/"
	if !strings.HasPrefix(st.path, prefix) {
		return 404, "BadPath"
	}
	if st.method != "POST" {
		return 405, "MethodNotAllowed"
	}
	tok := st.path[len(prefix):]
	if tok == "" {
		return 400, "MissingDeviceToken"
	}
	if !h2IsHexToken(tok) {
		return 400, "BadDeviceToken"
	}
	st.token = strings.ToLower(tok)
	if st.dup {
		return 400, "DuplicateHeaders"
	}
	if status, reason := c.checkAuth(st); status != 0 {
		return status, reason
	}
	pt, hasPT := st.get(h2hPushType)
	if hasPT && !apns.PushType(pt).Valid() || hasPT && pt == "" {
		return 400, "InvalidPushType"
	}
	topic, hasTopic := st.get(h2hTopic)
	switch {
	case !hasTopic && !c.certOK:
		return 400, "MissingTopic"
	case hasTopic && !h2ValidTopic(topic):
		return 400, "BadTopic"
	case hasTopic && c.s.topics != nil && !c.s.topics[topic]:
		return 400, "TopicDisallowed"
	}
	if want, ok := c.s.tokenTopics[st.token]; ok && want != topic {
		return 400, "DeviceTokenNotForTopic"
	}
	prio, hasPrio := st.get(h2hPriority)
	if hasPrio && prio != "10" && prio != "5" && prio != "1" {
		return 400, "BadPriority"
	}
	if pt == string(apns.PushTypeBackground) && prio != "5" {
		return 400, "BadPriority" // an absent priority means 10
	}
	if exp, ok := st.get(h2hExpiration); ok && !h2IsDigits(exp) {
		return 400, "BadExpirationDate"
	}
	if cid, ok := st.get(h2hCollapseID); ok && len(cid) > 64 {
		return 400, "BadCollapseId"
	}
	if id, ok := st.get(h2hID); ok && !apns.IsUUID(id) {
		return 400, "BadMessageId"
	}
	if st.bodyLen == 0 {
		return 400, "PayloadEmpty"
	}
	max := apns.HTTP2Limits.MaxPayload
	if pt == string(apns.PushTypeVoIP) {
		max = apns.HTTP2Limits.MaxPayloadVoIP
	}
	if st.bodyLen > max {
		return 413, "PayloadTooLarge"
	}
	return 0, ""
}

// checkAuth verifies the connection's certificate or the request's JWT.
// A connection keeps its last verified token, so the steady state costs a
// string comparison.
func (c *h2conn) checkAuth(st *h2stream) (int, string) {
	if c.certOK {
		return 0, ""
	}
	auth, ok := st.get(h2hAuth)
	if !ok || auth == "" {
		return 403, "MissingProviderToken"
	}
	tok, ok := strings.CutPrefix(auth, "bearer ")
	if !ok {
		tok, ok = strings.CutPrefix(auth, "Bearer ")
	}
	if !ok || tok == "" {
		return 403, "InvalidProviderToken"
	}
	now := c.s.now()
	if tok == c.jwt {
		if now.Sub(c.jwtIat) > time.Hour {
			return 403, "ExpiredProviderToken"
		}
		return 0, ""
	}
	iat, reason := c.s.verifyJWT(tok)
	if reason != "" {
		return 403, reason
	}
	c.s.noteMint(tok)
	if now.Sub(iat) > time.Hour {
		return 403, "ExpiredProviderToken"
	}
	if c.jwt != "" && iat.Sub(c.jwtIat).Abs() < 20*time.Minute {
		return 429, "TooManyProviderTokenUpdates"
	}
	c.jwt, c.jwtIat = tok, iat
	return 0, ""
}

func h2IsHexToken(s string) bool {
	if len(s)%2 != 0 || len(s) > 2*apns.MaxTokenLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func h2IsDigits(s string) bool {
	if s == "" || len(s) > 19 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func h2ValidTopic(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

func h2StatusText(code int) string {
	switch code {
	case 200:
		return "200"
	case 400:
		return "400"
	case 403:
		return "403"
	case 404:
		return "404"
	case 405:
		return "405"
	case 410:
		return "410"
	case 413:
		return "413"
	case 429:
		return "429"
	case 500:
		return "500"
	case 503:
		return "503"
	}
	return strconv.Itoa(code)
}

// newUUID makes a random (version 4) lowercase UUID for apns-id.
func (c *h2conn) newUUID() string {
	const hexd = "0123456789abcdef"
	var u [16]byte
	a, b := c.rnd.Uint64(), c.rnd.Uint64()
	for i := 0; i < 8; i++ {
		u[i], u[8+i] = byte(a>>(8*i)), byte(b>>(8*i))
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	var out [36]byte
	j := 0
	for i, x := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out[j] = '-'
			j++
		}
		out[j], out[j+1] = hexd[x>>4], hexd[x&0xf]
		j += 2
	}
	return string(out[:])
}

// h2RandID makes a 10-character id like Apple's key and team ids.
func h2RandID() string {
	const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	var b [10]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = alnum[int(b[i])%len(alnum)]
	}
	return string(b[:])
}
