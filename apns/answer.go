package apns

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"time"
)

// The HTTP/2 family's half of the core: what both HTTP/2 engines (ours on
// h2conn, the reference on x/net's Transport) do before a request is
// written and with the answer it gets. Written once, so that the two
// engines give the same outcome for the same answer.

// http2Setup is what both HTTP/2 engines make of their arguments.
type http2Setup struct {
	core    *core
	u       *url.URL
	addr    string // host:port to dial
	tlsConf *tls.Config
	tokens  *tokenSource // nil with certificate auth
}

// setupHTTP2 fills o, the options of an HTTP/2 engine of this kind, from
// opts and checks the arguments of its constructor; it starts the core on o.
func setupHTTP2(o *options, kind engineKind, baseURL string, auth Auth, opts []Option) (*http2Setup, error) {
	*o = defaultOptions()
	o.h2 = defaultHTTP2Options()
	if err := applyOptions(o, opts); err != nil {
		return nil, err
	}
	if err := o.checkFor(kind); err != nil {
		return nil, err
	}
	if err := auth.validate(); err != nil {
		return nil, err
	}
	u, addr, err := parseBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	if o.maxInFlight == 0 {
		o.maxInFlight = o.conns * int(min(o.h2.maxStreams, 1000))
	}
	s := &http2Setup{u: u, addr: addr}
	if s.tlsConf, s.tokens, err = http2Credentials(u, addr, auth, o); err != nil {
		return nil, err
	}
	tokenAuth, topic, pushType := s.tokens != nil, o.h2.topic, o.h2.pushType
	s.core = newCore(o, addr, func(n *Notification) error { return validateHTTP2(n, tokenAuth, topic, pushType) })
	s.core.retryBackoff = Backoff{Min: o.h2.backoffMin, Max: o.h2.backoffMax}
	return s, nil
}

// validateHTTP2 checks n for the provider API as it will be sent, with
// the engine's default topic and push type where it has none: the HTTP/2
// limits, and a topic when token auth has no default one.
func validateHTTP2(n *Notification, tokenAuth bool, defaultTopic string, defaultPushType PushType) error {
	if n.Topic == "" && defaultTopic != "" || n.PushType == "" && defaultPushType != "" {
		// Checked as it will be sent: the push type's rules and topic
		// suffix apply to the engine's defaults too.
		sent := *n
		sent.Topic = cmp.Or(n.Topic, defaultTopic)
		sent.PushType = cmp.Or(n.PushType, defaultPushType)
		n = &sent
	}
	if err := n.Validate(HTTP2Limits); err != nil {
		return err
	}
	if tokenAuth && n.Topic == "" && defaultTopic == "" {
		return fmt.Errorf("%w: no topic, and no default topic (WithTopic)", ErrInvalidTopic)
	}
	return nil
}

// prepare readies d to be written: it fails d (and reports false) when
// Close gave up, the credentials are refused, or d expired, and otherwise
// gets it a provider token (token auth).
func (c *core) prepare(d *delivery, tokens *tokenSource) bool {
	if c.isAborted() {
		c.failClosed(d)
		return false
	}
	if err := c.gateErr(d); err != nil {
		c.finish(d, err)
		return false
	}
	if !d.n.Expiration.IsZero() {
		if err := expired(d.n, c.o.now()); err != nil {
			c.finish(d, err)
			return false
		}
	}
	if tokens != nil {
		tok, err := tokens.token()
		if err != nil {
			c.finish(d, err)
			return false
		}
		d.tok = tok
	}
	return true
}

// answered turns a complete HTTP/2 answer to d into its outcome, or a
// retry: the one place where an answer becomes a verdict (verdict, in
// reasons.go, says which).
func (c *core) answered(d *delivery, status int, body []byte, apnsID string, tokens *tokenSource) {
	class, reason, ts := verdict(status, body)
	if class != classFault {
		c.faultingSince.Store(0)
	}
	switch class {
	case classDelivered:
		d.apnsID = apnsID
		c.finish(d, nil)
	case classRejected:
		if ctx := context.Background(); c.o.log.Enabled(ctx, slog.LevelDebug) {
			c.o.log.LogAttrs(ctx, slog.LevelDebug, "notification rejected",
				slog.Int("status", status), slog.String("reason", reason), slog.Any("token", d.n.Token))
		}
		c.finish(d, &RejectionError{HTTPStatus: status, Reason: reason, Timestamp: ts})
	case classCredentials:
		c.finish(d, c.closeGate(fmt.Errorf("%w: APNs answered %d %s", ErrCredentials, status, reason), true, d.tok))
	case classRefreshToken:
		if tokens == nil {
			c.finish(d, c.closeGate(fmt.Errorf("%w: APNs answered %d %s to certificate auth", ErrCredentials, status, reason), true, nil))
			return
		}
		if err := tokens.expired(d.tok); err != nil {
			c.finish(d, c.closeGate(err, true, d.tok))
			return
		}
		c.retry(d, &StatusError{HTTPStatus: status, Reason: reason}, false)
	case classFault:
		c.retry(d, c.fault(status, reason, body), true)
	default:
		c.retry(d, &StatusError{HTTPStatus: status, Reason: reason}, true)
	}
}

// faultLogEvery bounds the WARN lines for answers that are not APNs': at
// most one per period, counting those left out.
const faultLogEvery = time.Second

// fault counts and logs an answer that is not APNs' verdict and returns
// the cause its retry carries.
func (c *core) fault(status int, reason string, body []byte) error {
	c.faults.add(status)
	now := time.Now().UnixNano()
	c.faultingSince.CompareAndSwap(0, now)
	err := &StatusError{HTTPStatus: status, Reason: reason, NotAPNs: true, Body: bodyPrefix(body)}
	last := c.faultLogAt.Load()
	if now-last < int64(faultLogEvery) || !c.faultLogAt.CompareAndSwap(last, now) {
		c.faultQuiet.Add(1)
		return err
	}
	c.o.log.LogAttrs(context.Background(), slog.LevelWarn, "apns answer is not an apns verdict: retrying",
		slog.String("addr", c.addr), slog.Int("status", status), slog.String("body", err.Body),
		slog.Int64("not_logged_since", c.faultQuiet.Swap(0)))
	return err
}

// maxAnswerBody is how much of an answer's body the HTTP/2 engines read:
// Apple's reason may come behind padding, and the rest says nothing more.
const maxAnswerBody = 64 << 10
