package apnstest

import (
	"bytes"
	"fmt"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/jetpush/apns-worker/apns"
)

// Hostile behaviours of HTTP2Server: what real networks, proxies and APNs
// itself do to a client, each a named option so that tests (ours and
// users') can reproduce it. Request counts are of valid requests, over the
// whole server (all connections), unless an option says per connection.

// HTTP2Answer is a response the server gives instead of its own verdict
// (see InjectAnswer): one that is not Apple's (an HTML 404, a proxy's 502),
// a padded or oversized one, a stream reset, or a credentials refusal that
// overtakes slower answers. The zero HTTP2Answer is a pass: the request
// gets the server's own answer, so a pass for n requests delays the
// answers queued behind it.
type HTTP2Answer struct {
	Status      int    // HTTP status, 200-599 (0 with Reset false: a pass)
	ContentType string // the content-type header; none when empty
	Body        []byte // sent as is, in as many DATA frames as it takes
	// Padding adds an x-padding response header of that many bytes (a
	// 20 KB header exceeds common header-list limits; the block goes out
	// in HEADERS and CONTINUATION frames).
	Padding int
	// Reset answers with RST_STREAM ResetCode (e.g. http2.ErrCodeInternal)
	// instead of a response.
	Reset     bool
	ResetCode http2.ErrCode
	// Immediate sends the answer at once, skipping the latency queue: with
	// HTTP2Latency, answers to earlier requests (200s) then arrive after it.
	Immediate bool
	// Taken counts the request as accepted (Accepted, AcceptedFor), as
	// for APNs' own 200 that merely carries something odd (PaddedAnswer);
	// a foreign answer (HTMLAnswer(200)) leaves it false.
	Taken bool
	// Fields are more response header fields, written as given after the
	// content-type: names are not lower-cased, and nothing is checked
	// (MalformedHTTP2Answer).
	Fields []hpack.HeaderField
}

// ReasonAnswer is an Apple-style error: status with {"reason":reason}.
func ReasonAnswer(status int, reason string) HTTP2Answer {
	return HTTP2Answer{Status: status, ContentType: "application/json",
		Body: []byte(`{"reason":"` + reason + `"}`)}
}

// PaddedReasonAnswer is ReasonAnswer with pad bytes of JSON whitespace
// before the object (before true) or after it: still valid JSON, but larger
// than a reader that cuts the body at a few KiB keeps.
func PaddedReasonAnswer(status int, reason string, pad int, before bool) HTTP2Answer {
	a := ReasonAnswer(status, reason)
	ws := bytes.Repeat([]byte{' '}, pad)
	if before {
		a.Body = append(ws, a.Body...)
	} else {
		a.Body = append(a.Body, ws...)
	}
	return a
}

// HTMLAnswer is a web page where Apple's answer should be, e.g. a 404 from
// a wrong base URL or a captive portal, or a 200 from a portal's login page.
func HTMLAnswer(status int) HTTP2Answer {
	return HTTP2Answer{Status: status, ContentType: "text/html; charset=utf-8",
		Body: []byte("<!DOCTYPE html>\n<html><head><title>Not Found</title></head>" +
			"<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p></body></html>\n")}
}

// ProxyAnswer is a proxy's or load balancer's own error, e.g. 502 Bad
// Gateway or 504 Gateway Timeout, with a plain-text body.
func ProxyAnswer(status int) HTTP2Answer {
	return HTTP2Answer{Status: status, ContentType: "text/plain; charset=utf-8",
		Body: []byte(fmt.Sprintf("%d upstream connect error or disconnect/reset before headers\n", status))}
}

// TextAnswer is status with a body that is not JSON, e.g. a 400 "Bad
// Request" from something in the path that is not APNs.
func TextAnswer(status int, body string) HTTP2Answer {
	return HTTP2Answer{Status: status, ContentType: "text/plain", Body: []byte(body)}
}

// PaddedAnswer is the server's usual 200 with an x-padding header of pad
// bytes (status 200, no body): the notification is taken.
func PaddedAnswer(pad int) HTTP2Answer { return HTTP2Answer{Status: 200, Padding: pad, Taken: true} }

// MalformedHTTP2Answer is an Apple-style error, status with {"reason":reason},
// made malformed (RFC 9113 §8.1.1, §8.2) by one more field: a
// content-length that is not the body's length, an upper-case name
// ("Content-Type"), a connection-specific field ("connection"). The bytes
// say APNs' verdict; a client must take the response as a stream error,
// never as the verdict.
func MalformedHTTP2Answer(status int, reason string, field hpack.HeaderField) HTTP2Answer {
	a := ReasonAnswer(status, reason)
	a.Fields = []hpack.HeaderField{field}
	return a
}

// ResetAnswer resets the stream with code instead of answering.
func ResetAnswer(code http2.ErrCode) HTTP2Answer {
	return HTTP2Answer{Reset: true, ResetCode: code}
}

// CredentialsAnswer is a 403 refusing the provider's credentials (reason
// InvalidProviderToken, ExpiredProviderToken, BadCertificate, …), sent
// Immediately: with HTTP2Latency, 200s for requests read before it arrive
// after it, as when APNs answers requests already in flight.
func CredentialsAnswer(reason string) HTTP2Answer {
	a := ReasonAnswer(403, reason)
	a.Immediate = true
	return a
}

func (a HTTP2Answer) check() error {
	if a.Reset || a.Status == 0 && a.Padding == 0 && len(a.Body) == 0 {
		return nil
	}
	if a.Status < 200 || a.Status > 599 {
		return fmt.Errorf("apnstest: HTTP2Answer: bad status %d", a.Status)
	}
	return nil
}

// HTTP2InjectAnswer gives the next n valid requests answer a (see
// InjectAnswer). Injections queue up in the order given.
func HTTP2InjectAnswer(n int, a HTTP2Answer) HTTP2Option {
	return func(c *h2config) error {
		if err := a.check(); err != nil {
			return err
		}
		if n < 0 {
			return fmt.Errorf("apnstest: HTTP2InjectAnswer(%d) < 0", n)
		}
		if n > 0 {
			c.injects = append(c.injects, h2inject{n: n, h2reply: answerReply(a)})
		}
		return nil
	}
}

// HTTP2InjectAnswerFor gives every valid request answer a for d, from the
// first request it answers (see InjectAnswerFor).
func HTTP2InjectAnswerFor(d time.Duration, a HTTP2Answer) HTTP2Option {
	return func(c *h2config) error {
		if err := a.check(); err != nil {
			return err
		}
		if d <= 0 {
			return fmt.Errorf("apnstest: HTTP2InjectAnswerFor(%v) <= 0", d)
		}
		c.injects = append(c.injects, h2inject{d: d, h2reply: answerReply(a)})
		return nil
	}
}

func answerReply(a HTTP2Answer) h2reply {
	a.Body = bytes.Clone(a.Body)
	return h2reply{status: a.Status, ans: &a}
}

// InjectAnswer queues answer a for the next n valid requests, behind
// earlier injections (Inject, InjectAnswer). It panics on an invalid a.
func (s *HTTP2Server) InjectAnswer(n int, a HTTP2Answer) {
	if n > 0 {
		s.queueAnswer(h2inject{n: n}, a)
	}
}

// InjectAnswerFor queues answer a for every valid request during d; the
// window opens at the first request it answers. It panics on an invalid a.
func (s *HTTP2Server) InjectAnswerFor(d time.Duration, a HTTP2Answer) {
	if d > 0 {
		s.queueAnswer(h2inject{d: d}, a)
	}
}

// queueAnswer queues in with answer a, panicking on an invalid a.
func (s *HTTP2Server) queueAnswer(in h2inject, a HTTP2Answer) {
	if err := a.check(); err != nil {
		panic(err)
	}
	in.h2reply = answerReply(a)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.injects = append(s.injects, in)
}

// HTTP2AnswerFunc makes the server ask f about each valid request's token
// (after HTTP2Reason, before HTTP2ReasonFunc): when f says ok, the request
// gets answer a (an invalid a, or a pass, is ignored). For example a
// BadDeviceToken verdict behind 20 KB of padding for some tokens:
//
//	apnstest.HTTP2AnswerFunc(func(tok apns.Token) (apnstest.HTTP2Answer, bool) {
//		return apnstest.PaddedReasonAnswer(400, "BadDeviceToken", 20<<10, true), isBad(tok)
//	})
//
// f is called concurrently.
func HTTP2AnswerFunc(f func(tok apns.Token) (HTTP2Answer, bool)) HTTP2Option {
	return func(c *h2config) error {
		c.faults.answerFunc = f
		return nil
	}
}

// h2action is what the server does with a valid request.
type h2action int

const (
	h2answer h2action = iota // answer it (h2reply)
	h2refuse                 // RST_STREAM REFUSED_STREAM
	h2close                  // close the TCP connection silently, unanswered
	h2stall                  // stall the connection, unanswered
)

// h2faults holds the connection-level faults; the server's mu guards the
// counters.
type h2faults struct {
	close      *every // silent closes
	stallAfter int64  // stall the connection carrying this request (once)
	seen       int64  // valid requests decided
	goAway     *h2goAwayFault
	settings   []HTTP2SettingsFault
	settingsN  []int // per settings fault: connections it was sent on
	answerFunc func(tok apns.Token) (HTTP2Answer, bool)
}

type h2goAwayFault struct {
	n    int
	code http2.ErrCode
	last GoAwayLast
}

// connFault counts a valid request and says whether a connection fault
// takes it; the server's mu is held.
func (f *h2faults) connFault(st *HTTP2FaultStats) h2action {
	f.seen++
	switch {
	case f.stallAfter > 0 && f.seen == f.stallAfter:
		st.Stalls++
		return h2stall
	case f.close != nil && f.close.hit():
		st.SilentCloses++
		return h2close
	}
	return h2answer
}

// HTTP2FaultStats counts the hostile behaviours an HTTP2Server carried
// out, so a test can tell its fault really happened.
type HTTP2FaultStats struct {
	SilentCloses int // connections closed by HTTP2CloseEvery or HTTP2CloseRandom
	Stalls       int // connections stalled by HTTP2StallAfter
	GoAways      int // GOAWAY frames sent by HTTP2GoAwayCode
	Settings     int // SETTINGS frames sent by HTTP2SendSettings
	Answers      int // requests given an injected HTTP2Answer (not passes)
}

// FaultStats returns what the server's hostile options did so far.
func (s *HTTP2Server) FaultStats() HTTP2FaultStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faultStats
}

func (s *HTTP2Server) noteFault(f func(*HTTP2FaultStats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.faultStats)
}

// unaccept takes back the count of an accepted request that a GOAWAY
// declared unprocessed.
func (s *HTTP2Server) unaccept(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accepted--
	s.statuses[200]--
	if s.perToken[tok]--; s.perToken[tok] == 0 {
		delete(s.perToken, tok)
	}
}

func (s *HTTP2Server) noteClientGoAway(code uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clientGoAways == nil {
		s.clientGoAways = map[http2.ErrCode]int{}
	}
	s.clientGoAways[http2.ErrCode(code)]++
}

// ClientGoAways counts the GOAWAY frames clients sent, by error code: a
// client refusing invalid SETTINGS sends PROTOCOL_ERROR or
// FLOW_CONTROL_ERROR (RFC 9113 §6.5.2).
func (s *HTTP2Server) ClientGoAways() map[http2.ErrCode]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[http2.ErrCode]int, len(s.clientGoAways))
	for k, v := range s.clientGoAways {
		m[k] = v
	}
	return m
}

// HTTP2CloseEvery makes the server close the TCP connection that carries
// every n-th valid request, silently: no GOAWAY, no TLS close_notify, that
// request and any later one on the connection unanswered (answers already
// written leave first), as a load balancer or NAT that drops a connection
// does.
func HTTP2CloseEvery(n int) HTTP2Option {
	return func(c *h2config) error {
		if n < 1 {
			return fmt.Errorf("apnstest: HTTP2CloseEvery(%d) < 1", n)
		}
		c.faults.close = newEvery(int64(n), false, 0)
		return nil
	}
}

// HTTP2CloseRandom is HTTP2CloseEvery at random intervals, drawn uniformly
// from [n/2, 3n/2] requests by a generator seeded with seed (the same seed
// gives the same intervals).
func HTTP2CloseRandom(n int, seed uint64) HTTP2Option {
	return func(c *h2config) error {
		if n < 1 {
			return fmt.Errorf("apnstest: HTTP2CloseRandom(%d) < 1", n)
		}
		c.faults.close = newEvery(int64(n), true, seed)
		return nil
	}
}

// HTTP2StallAfter makes the connection that carries the server's n-th
// valid request stall: it keeps TCP and TLS up and reads everything the
// client sends, but answers nothing more (no responses, no PING or
// SETTINGS acknowledgements), like a peer that hangs. Once; other and later
// connections are served.
func HTTP2StallAfter(n int) HTTP2Option {
	return func(c *h2config) error {
		if n < 1 {
			return fmt.Errorf("apnstest: HTTP2StallAfter(%d) < 1", n)
		}
		c.faults.stallAfter = int64(n)
		return nil
	}
}

// GoAwayLast picks the last-stream-id of a fault's GOAWAY.
type GoAwayLast int

const (
	// GoAwayLastRead names the request that triggered it: it and earlier
	// streams may have been processed, later ones were not.
	GoAwayLastRead GoAwayLast = iota
	// GoAwayLastZero names stream 0: nothing open was processed, every
	// open stream is dropped unanswered.
	GoAwayLastZero
)

// HTTP2GoAwayCode makes each connection send GOAWAY with code (e.g.
// http2.ErrCodeNo, ErrCodeInternal, ErrCodeEnhanceYourCalm) and last as
// the last-stream-id right after reading its n-th request. Open streams
// above the last-stream-id are dropped unanswered. With ErrCodeNo the
// streams up to it are still answered, then the connection closes; with
// another code the server closes at once, leaving them unanswered.
func HTTP2GoAwayCode(n int, code http2.ErrCode, last GoAwayLast) HTTP2Option {
	return func(c *h2config) error {
		if n < 1 {
			return fmt.Errorf("apnstest: HTTP2GoAwayCode(%d) < 1", n)
		}
		c.faults.goAway = &h2goAwayFault{n: n, code: code, last: last}
		return nil
	}
}

// HTTP2SettingsFault is a SETTINGS frame the server sends on its own, for
// example one a client must refuse: MAX_FRAME_SIZE 0 or above 2^24-1,
// INITIAL_WINDOW_SIZE above 2^31-1, ENABLE_PUSH 2 (RFC 9113 §6.5.2: a
// connection error, answered with GOAWAY).
type HTTP2SettingsFault struct {
	Settings []http2.Setting
	// AfterRequests sends it once the connection has read that many
	// requests; 0 sends it at connection start, right after the
	// server's first SETTINGS.
	AfterRequests int
	// Conns limits it to the first Conns connections that reach
	// AfterRequests (0: every one), so that a client that replaces the
	// connection gets a good one.
	Conns int
}

// HTTP2SendSettings makes the server send f's SETTINGS frame; several may
// be given.
func HTTP2SendSettings(f HTTP2SettingsFault) HTTP2Option {
	return func(c *h2config) error {
		if f.AfterRequests < 0 || f.Conns < 0 || len(f.Settings) == 0 || len(f.Settings) > 64 {
			return fmt.Errorf("apnstest: HTTP2SendSettings: bad fault %+v", f)
		}
		f.Settings = append([]http2.Setting(nil), f.Settings...)
		c.faults.settings = append(c.faults.settings, f)
		c.faults.settingsN = append(c.faults.settingsN, 0)
		return nil
	}
}

// settingsFaults writes the settings faults due after the connection's
// n-th request (0: at its start); c.mu is held.
func (c *h2conn) settingsFaults(n int) {
	for i, f := range c.s.faults.settings {
		if f.AfterRequests != n || !c.s.claimSettingsFault(i) {
			continue
		}
		p := make([]byte, 0, 6*len(f.Settings))
		for _, st := range f.Settings {
			p = append(p, byte(st.ID>>8), byte(st.ID), byte(st.Val>>24), byte(st.Val>>16), byte(st.Val>>8), byte(st.Val))
		}
		c.writeFrame(h2fSettings, 0, 0, p)
	}
}

// claimSettingsFault reports whether settings fault i may be sent on one
// more connection, and counts it.
func (s *HTTP2Server) claimSettingsFault(i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.faults.settings[i]; f.Conns > 0 && s.faults.settingsN[i] >= f.Conns {
		return false
	}
	s.faults.settingsN[i]++
	s.faultStats.Settings++
	return true
}

// requestFaults applies the per-connection faults due once the connection
// has read request id (its c.nreq-th); c.mu is held.
func (c *h2conn) requestFaults(id uint32) {
	if c.nreq > 0 {
		c.settingsFaults(c.nreq)
	}
	f := c.s.faults.goAway
	if f == nil || c.nreq != f.n || c.goAwaySent {
		return
	}
	last := id
	if f.last == GoAwayLastZero {
		last = 0
	}
	c.goAwaySent, c.goAwayLast = true, last
	c.writeGoAway(last, uint32(f.code), "")
	c.s.noteFault(func(st *HTTP2FaultStats) { st.GoAways++ })
	for sid, st := range c.streams {
		if sid > last {
			if st.accepted { // read, but never processed after all
				c.s.unaccept(st.token)
			}
			c.closeStream(st)
		}
	}
	if f.code != http2.ErrCodeNo {
		c.abort = true
		return
	}
	c.maybeShutdown()
}
