package apns_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// h2Clock is an injectable clock that tests move by hand.
type h2Clock struct{ ns atomic.Int64 }

func newH2Clock() *h2Clock {
	c := &h2Clock{}
	c.ns.Store(time.Now().Truncate(time.Second).UnixNano())
	return c
}

func (c *h2Clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *h2Clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// h2Collector gathers outcomes, one per ref, and fails the test on a second
// outcome for the same ref.
type h2Collector struct {
	t    testing.TB
	mu   sync.Mutex
	byID map[any]apns.Outcome
	dups int
	ch   chan apns.Outcome
}

func newH2Collector(t testing.TB, buf int) *h2Collector {
	return &h2Collector{t: t, byID: make(map[any]apns.Outcome), ch: make(chan apns.Outcome, buf)}
}

func (c *h2Collector) fn(o apns.Outcome) {
	c.mu.Lock()
	if _, dup := c.byID[o.Ref]; dup {
		c.dups++
	}
	c.byID[o.Ref] = o
	c.mu.Unlock()
	c.ch <- o
}

// wait returns the next n outcomes, failing after a generous bound.
func (c *h2Collector) wait(n int) []apns.Outcome {
	c.t.Helper()
	out := make([]apns.Outcome, 0, n)
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for len(out) < n {
		select {
		case o := <-c.ch:
			out = append(out, o)
		case <-timeout.C:
			c.t.Fatalf("got %d of %d outcomes", len(out), n)
		}
	}
	return out
}

func h2Token(i int) apns.Token {
	t := make(apns.Token, 32)
	t[0], t[1], t[2], t[3] = 0xa0, byte(i>>16), byte(i>>8), byte(i)
	return t
}

var h2Payload = []byte(`{"aps":{"alert":"hello"}}`)

const h2Topic = "com.example.app"

// newH2Engine starts a h2Token-auth engine against s, closed at cleanup.
func newH2Engine(t testing.TB, s *apnstest.HTTP2Server, opts ...apns.Option) *apns.HTTP2Engine {
	return newTokenEngine(t, s, apns.NewHTTP2Engine, opts...)
}

// newTokenEngine starts an HTTP/2 engine of either kind with s's token
// auth, topic h2Topic and quick retries, closed at cleanup.
func newTokenEngine[E apns.Engine](t testing.TB, s *apnstest.HTTP2Server,
	newEngine func(string, apns.Auth, ...apns.Option) (E, error), opts ...apns.Option) E {
	t.Helper()
	key, err := apns.ParseP8(s.P8())
	require.NoError(t, err)
	opts = append([]apns.Option{
		apns.WithRootCAs(s.RootCAs()),
		apns.WithTopic(h2Topic),
		apns.WithRetryBackoff(time.Millisecond, 10*time.Millisecond),
	}, opts...)
	e, err := newEngine(s.URL, apns.TokenAuth(key, s.KeyID, s.TeamID), opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, e.Close(ctx))
	})
	return e
}

func closeH2Engine(t testing.TB, e *apns.HTTP2Engine) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, e.Close(ctx))
}

func newH2Server(t testing.TB, opts ...apnstest.HTTP2Option) *apnstest.HTTP2Server {
	s := apnstest.NewHTTP2Server(opts...)
	t.Cleanup(s.Close)
	return s
}

func TestHTTP2Delivers(t *testing.T) {
	t.Parallel()
	s := newH2Server(t, apnstest.HTTP2Record(true))
	col := newH2Collector(t, 16)
	e := newH2Engine(t, s, apns.WithOutcomeFunc(col.fn), apns.WithPushType(apns.PushTypeAlert))
	ctx := context.Background()

	tests := []struct {
		name string
		n    *apns.Notification
		want map[string]string // headers the server must see
	}{
		{"defaults", &apns.Notification{Token: h2Token(1), Payload: h2Payload},
			map[string]string{"apns-topic": h2Topic, "apns-push-type": "alert"}},
		{"all headers", &apns.Notification{
			Token: h2Token(2), Payload: h2Payload, Topic: h2Topic + ".voip", PushType: apns.PushTypeVoIP,
			Priority: apns.PriorityConserve, Expiration: time.Unix(1900000000, 0), CollapseID: "c1",
			ID: "123e4567-e89b-12d3-a456-426614174000",
		}, map[string]string{
			"apns-topic": h2Topic + ".voip", "apns-push-type": "voip", "apns-priority": "5",
			"apns-expiration": "1900000000", "apns-collapse-id": "c1",
			"apns-id": "123e4567-e89b-12d3-a456-426614174000",
		}},
		{"expire now", &apns.Notification{Token: h2Token(3), Payload: h2Payload, Expiration: apns.ExpireNow,
			Priority: apns.PriorityLow}, map[string]string{"apns-expiration": "0", "apns-priority": "1"}},
		{"long token", &apns.Notification{Token: make(apns.Token, 100), Payload: h2Payload}, nil},
	}
	for i, tt := range tests {
		require.NoError(t, e.Send(ctx, tt.n, i), tt.name)
	}
	outs := col.wait(len(tests))
	for _, o := range outs {
		tt := tests[o.Ref.(int)]
		require.NoError(t, o.Err, tt.name)
		require.Len(t, o.APNsID, 36, tt.name)
		require.Equal(t, 1, o.Attempts, tt.name)
		require.Same(t, tt.n, o.Notification, tt.name)
	}
	reqs := s.Requests()
	require.Len(t, reqs, len(tests))
	idx := make(map[string]int)
	for i, tt := range tests {
		idx[string(tt.n.Token)] = i
	}
	for _, r := range reqs {
		i, ok := idx[string(r.Token)]
		require.True(t, ok)
		tt := tests[i]
		require.Equal(t, h2Payload, r.Payload, tt.name)
		for k, v := range tt.want {
			require.Equal(t, v, r.Header[k], "%s: %s", tt.name, k)
		}
		require.Contains(t, r.Header["authorization"], "bearer ", tt.name)
		if tt.n.ID != "" {
			require.Equal(t, tt.n.ID, r.ID, tt.name)
		}
		require.Equal(t, r.ID, col.byID[i].APNsID, tt.name)
	}
	st := e.Stats()
	require.Equal(t, 4, st.Conns)
	require.Zero(t, st.InFlight)
	require.NoError(t, st.CredentialsErr)
}

// h2Burst sends n notifications with distinct tokens (refs 0..n-1) and checks
// that each got exactly one outcome, delivered, and that the server
// accepted each h2Token exactly once.
func h2Burst(t *testing.T, e *apns.HTTP2Engine, s *apnstest.HTTP2Server, col *h2Collector, n int, mid func()) {
	t.Helper()
	ctx := context.Background()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			if err := e.Send(ctx, &apns.Notification{Token: h2Token(i), Payload: h2Payload}, i); err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
		}
	}()
	outs := col.wait(n / 4)
	mid()
	outs = append(outs, col.wait(n-n/4)...)
	<-done
	for _, o := range outs {
		require.NoError(t, o.Err, "ref %v", o.Ref)
	}
	col.mu.Lock()
	require.Len(t, col.byID, n)
	require.Zero(t, col.dups)
	col.mu.Unlock()
	require.Equal(t, n, s.Accepted())
	for i := range n {
		require.Equal(t, 1, s.AcceptedFor(h2Token(i)), "token %d", i)
	}
}

func TestHTTP2GoAwayMidBurst(t *testing.T) {
	t.Parallel()
	s := newH2Server(t, apnstest.HTTP2Latency(time.Millisecond))
	const n = 3000
	col := newH2Collector(t, n)
	e := newH2Engine(t, s, apns.WithOutcomeFunc(col.fn), apns.WithConns(2), apns.WithMaxInFlight(500))
	h2Burst(t, e, s, col, n, func() {
		s.GoAway()            // every live connection, now
		s.SetGoAwayAfter(300) // and every connection after 300 more
	})
	require.Greater(t, e.Stats().Reconnects, uint64(2))
	require.Greater(t, s.Conns(), 4)
}

func TestHTTP2StreamLimitOneMidBurst(t *testing.T) {
	t.Parallel()
	s := newH2Server(t, apnstest.HTTP2Latency(time.Millisecond), apnstest.HTTP2MaxStreams(200))
	const n = 1000
	col := newH2Collector(t, n)
	e := newH2Engine(t, s, apns.WithOutcomeFunc(col.fn), apns.WithConns(2), apns.WithMaxInFlight(400))
	h2Burst(t, e, s, col, n, func() { s.SetMaxStreams(1) })
	require.Zero(t, s.StreamLimitExceeded())
	require.Greater(t, s.MaxOpenStreams(), 1)
}

func TestHTTP2RefusedStreamsAreRetried(t *testing.T) {
	t.Parallel()
	s := newH2Server(t, apnstest.HTTP2RefuseStreams(20))
	const n = 100
	col := newH2Collector(t, n)
	e := newH2Engine(t, s, apns.WithOutcomeFunc(col.fn))
	h2Burst(t, e, s, col, n, func() {})
	require.Equal(t, 20, s.Refused())
}

func TestHTTP2TemporaryFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		status       int
		reason       string
		times        int
		wantAttempts int
		wantErr      bool
	}{
		{"503 then delivered", 503, "ServiceUnavailable", 2, 3, false},
		{"500 then delivered", 500, "InternalServerError", 1, 2, false},
		{"429 beyond the retries", 429, "TooManyRequests", 10, 3, true},
		{"idle timeout", 400, "IdleTimeout", 1, 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newH2Server(t, apnstest.HTTP2Inject(tt.times, tt.status, tt.reason))
			col := newH2Collector(t, 1)
			e := newH2Engine(t, s, apns.WithOutcomeFunc(col.fn), apns.WithMaxRetries(2), apns.WithConns(1))
			require.NoError(t, e.Send(context.Background(), &apns.Notification{Token: h2Token(1), Payload: h2Payload}, 1))
			o := col.wait(1)[0]
			require.Equal(t, tt.wantAttempts, o.Attempts)
			if !tt.wantErr {
				require.NoError(t, o.Err)
				return
			}
			require.ErrorIs(t, o.Err, apns.ErrRetriesExhausted)
			var se *apns.StatusError
			require.ErrorAs(t, o.Err, &se)
			require.Equal(t, tt.status, se.HTTPStatus)
			require.Equal(t, tt.reason, se.Reason)
			_, rejected := o.Rejection()
			require.False(t, rejected)
		})
	}
}

func TestHTTP2ExpiredBeforeSending(t *testing.T) {
	t.Parallel()
	s := newH2Server(t)
	col := newH2Collector(t, 1)
	e := newH2Engine(t, s, apns.WithOutcomeFunc(col.fn))
	n := &apns.Notification{Token: h2Token(1), Payload: h2Payload, Expiration: time.Now().Add(-time.Minute)}
	require.NoError(t, e.Send(context.Background(), n, 1))
	o := col.wait(1)[0]
	require.ErrorIs(t, o.Err, apns.ErrExpired)
	require.Zero(t, o.Attempts)
	require.Zero(t, s.Accepted())
}

func TestHTTP2RequestTimeout(t *testing.T) {
	t.Parallel()
	s := newH2Server(t, apnstest.HTTP2Latency(5*time.Second))
	col := newH2Collector(t, 1)
	e := newH2Engine(t, s, apns.WithOutcomeFunc(col.fn), apns.WithMaxRetries(1),
		apns.WithRequestTimeout(50*time.Millisecond), apns.WithConns(1))
	require.NoError(t, e.Send(context.Background(), &apns.Notification{Token: h2Token(1), Payload: h2Payload}, 1))
	o := col.wait(1)[0]
	require.ErrorIs(t, o.Err, apns.ErrRetriesExhausted)
	require.ErrorIs(t, o.Err, apns.ErrRequestTimeout)
	require.Equal(t, 2, o.Attempts)
}

func TestHTTP2CredentialsStopIntake(t *testing.T) {
	t.Parallel()
	for _, reason := range []string{"InvalidProviderToken", "BadCertificate", "MissingProviderToken"} {
		t.Run(reason, func(t *testing.T) {
			t.Parallel()
			bad := h2Token(666)
			s := newH2Server(t, apnstest.HTTP2Reason(bad, 403, reason))
			col := newH2Collector(t, 1)
			var logs syncBuffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			e := newH2Engine(t, s, apns.WithOutcomeFunc(col.fn), apns.WithLogger(log))
			ctx := context.Background()
			require.NoError(t, e.Send(ctx, &apns.Notification{Token: bad, Payload: h2Payload}, 1))
			o := col.wait(1)[0]
			require.ErrorIs(t, o.Err, apns.ErrCredentials)
			require.ErrorContains(t, o.Err, reason)
			_, rejected := o.Rejection()
			require.False(t, rejected, "a credentials error is not the notification's fault")
			require.Equal(t, 1, o.Attempts, "no retries burnt")
			require.ErrorIs(t, e.Stats().CredentialsErr, apns.ErrCredentials)
			err := e.Send(ctx, &apns.Notification{Token: h2Token(1), Payload: h2Payload}, 2)
			require.ErrorIs(t, err, apns.ErrCredentials)
			require.Contains(t, logs.String(), "level=ERROR msg=\"apns credentials refused")
			require.Contains(t, logs.String(), reason)
		})
	}
}

func TestHTTP2CertificateAuth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cert    func(s *apnstest.HTTP2Server) apns.Auth
		wantErr error
	}{
		{"accepted", func(s *apnstest.HTTP2Server) apns.Auth { return apns.CertificateAuth(s.ClientCert()) }, nil},
		{"loaded from PEM", func(s *apnstest.HTTP2Server) apns.Auth {
			cert, err := apns.ParsePEMCertificate(s.PKI.ClientCertPEM, s.PKI.ClientKeyPEM)
			require.NoError(t, err)
			return apns.CertificateAuth(cert)
		}, nil},
		{"unknown CA", func(*apnstest.HTTP2Server) apns.Auth {
			return apns.CertificateAuth(apnstest.MustPKI().ClientCert)
		}, apns.ErrCredentials},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newH2Server(t, apnstest.HTTP2ClientCertAuth(), apnstest.HTTP2Record(true))
			col := newH2Collector(t, 1)
			e, err := apns.NewHTTP2Engine(s.URL, tt.cert(s), apns.WithRootCAs(s.RootCAs()),
				apns.WithOutcomeFunc(col.fn), apns.WithConns(1), apns.WithRetryBackoff(time.Millisecond, 5*time.Millisecond))
			require.NoError(t, err)
			t.Cleanup(func() { closeH2Engine(t, e) })
			require.NoError(t, e.Send(context.Background(), &apns.Notification{Token: h2Token(1), Payload: h2Payload}, 1))
			o := col.wait(1)[0]
			require.ErrorIs(t, o.Err, tt.wantErr)
			if tt.wantErr == nil {
				require.Empty(t, s.Requests()[0].Header["authorization"])
				return
			}
			require.ErrorIs(t, e.Stats().CredentialsErr, apns.ErrCredentials)
		})
	}
}

func TestHTTP2Backpressure(t *testing.T) {
	t.Parallel()
	s := newH2Server(t, apnstest.HTTP2Latency(300*time.Millisecond))
	col := newH2Collector(t, 2)
	e := newH2Engine(t, s, apns.WithOutcomeFunc(col.fn), apns.WithMaxInFlight(2))
	ctx := context.Background()
	for i := range 2 {
		require.NoError(t, e.Send(ctx, &apns.Notification{Token: h2Token(i), Payload: h2Payload}, i))
	}
	require.Equal(t, 2, e.Stats().InFlight)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err := e.Send(short, &apns.Notification{Token: h2Token(3), Payload: h2Payload}, 3)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	for _, o := range col.wait(2) {
		require.NoError(t, o.Err)
	}
}

func TestHTTP2CloseFailsWhatIsLeft(t *testing.T) {
	t.Parallel()
	s := newH2Server(t, apnstest.HTTP2Latency(10*time.Second))
	const n = 5
	col := newH2Collector(t, n)
	key, err := apns.ParseP8(s.P8())
	require.NoError(t, err)
	e, err := apns.NewHTTP2Engine(s.URL, apns.TokenAuth(key, s.KeyID, s.TeamID), apns.WithRootCAs(s.RootCAs()),
		apns.WithTopic(h2Topic), apns.WithOutcomeFunc(col.fn))
	require.NoError(t, err)
	ctx := context.Background()
	for i := range n {
		require.NoError(t, e.Send(ctx, &apns.Notification{Token: h2Token(i), Payload: h2Payload}, i))
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, e.Close(short), context.DeadlineExceeded)
	for _, o := range col.wait(n) {
		require.ErrorIs(t, o.Err, apns.ErrClosed)
	}
	require.ErrorIs(t, e.Send(ctx, &apns.Notification{Token: h2Token(1), Payload: h2Payload}, 9), apns.ErrClosed)
	require.NoError(t, e.Close(ctx), "second Close")
}

func TestHTTP2Options(t *testing.T) {
	t.Parallel()
	s := newH2Server(t)
	key, err := apns.ParseP8(s.P8())
	require.NoError(t, err)
	auth := apns.TokenAuth(key, s.KeyID, s.TeamID)
	tests := []struct {
		name string
		url  string
		auth apns.Auth
		opt  apns.Option
	}{
		{"no auth", s.URL, apns.Auth{}, apns.WithTopic(h2Topic)},
		{"no key id", s.URL, apns.TokenAuth(key, "", s.TeamID), apns.WithTopic(h2Topic)},
		{"empty certificate", s.URL, apns.CertificateAuth(tls.Certificate{}), apns.WithTopic(h2Topic)},
		{"http URL", "http://127.0.0.1:1", auth, apns.WithTopic(h2Topic)},
		{"URL with path", s.URL + "/3/device", auth, apns.WithTopic(h2Topic)},
		{"topic", s.URL, auth, apns.WithTopic("a b")},
		{"push type", s.URL, auth, apns.WithPushType("fax")},
		{"timeout", s.URL, auth, apns.WithRequestTimeout(0)},
		{"ping", s.URL, auth, apns.WithPingInterval(-1)},
		{"proxy", s.URL, auth, apns.WithProxy("socks5://127.0.0.1:1080")},
		{"streams", s.URL, auth, apns.WithMaxConcurrentStreams(0)},
		{"backoff", s.URL, auth, apns.WithRetryBackoff(time.Second, time.Millisecond)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := apns.NewHTTP2Engine(tt.url, tt.auth, tt.opt)
			require.ErrorIs(t, err, apns.ErrInvalidOption)
		})
	}
}

func TestHTTP2SendValidates(t *testing.T) {
	t.Parallel()
	s := newH2Server(t)
	key, err := apns.ParseP8(s.P8())
	require.NoError(t, err)
	e, err := apns.NewHTTP2Engine(s.URL, apns.TokenAuth(key, s.KeyID, s.TeamID), apns.WithRootCAs(s.RootCAs()))
	require.NoError(t, err)
	t.Cleanup(func() { closeH2Engine(t, e) })
	ctx := context.Background()
	require.ErrorIs(t, e.Send(ctx, nil, 0), apns.ErrInvalidNotification)
	require.ErrorIs(t, e.Send(ctx, &apns.Notification{Token: h2Token(1), Payload: []byte(`{}`), Topic: h2Topic}, 0), apns.ErrNoAPS)
	require.ErrorIs(t, e.Send(ctx, &apns.Notification{Token: h2Token(1), Payload: h2Payload}, 0), apns.ErrInvalidTopic,
		"token auth needs a topic")
}

// TestHTTP2SendValidatesDefaults: a notification without a topic or a push
// type is checked as it will be sent, with the engine's WithTopic and
// WithPushType: their rules apply, and a payload only they make valid is
// accepted.
func TestHTTP2SendValidatesDefaults(t *testing.T) {
	t.Parallel()
	s := newH2Server(t)
	newEngine := func(opts ...apns.Option) *apns.HTTP2Engine {
		e, err := apns.NewHTTP2Engine(s.URL, apns.CertificateAuth(s.ClientCert()), append(opts, apns.WithRootCAs(s.RootCAs()))...)
		require.NoError(t, err)
		t.Cleanup(func() { closeH2Engine(t, e) })
		return e
	}
	ctx := context.Background()
	mdm := newEngine(apns.WithPushType(apns.PushTypeMDM))
	require.NoError(t, mdm.Send(ctx, &apns.Notification{Token: h2Token(1), Payload: []byte(`{"mdm":"magic"}`)}, 0))
	require.ErrorIs(t, mdm.Send(ctx, &apns.Notification{Token: h2Token(1), Payload: h2Payload}, 0), apns.ErrMissingMDM)
	background := newEngine(apns.WithPushType(apns.PushTypeBackground))
	require.ErrorIs(t, background.Send(ctx, &apns.Notification{Token: h2Token(1), Payload: h2Payload, Priority: apns.PriorityConserve}, 0),
		apns.ErrMissingContentAvail)
	require.NoError(t, background.Send(ctx, &apns.Notification{Token: h2Token(1), Payload: h2Payload, PushType: apns.PushTypeAlert}, 0),
		"the notification's own push type comes first")
	voip := newEngine(apns.WithTopic(h2Topic))
	require.ErrorIs(t, voip.Send(ctx, &apns.Notification{Token: h2Token(1), Payload: h2Payload, PushType: apns.PushTypeVoIP}, 0),
		apns.ErrTopicDisallowed, "the default topic lacks .voip")
	require.NoError(t, voip.Send(ctx, &apns.Notification{Token: h2Token(1), Payload: h2Payload, PushType: apns.PushTypeVoIP, Topic: h2Topic + ".voip"}, 0))
}

func TestHTTP2FlowControl(t *testing.T) {
	t.Parallel()
	s := newH2Server(t, apnstest.HTTP2Window(100), apnstest.HTTP2Record(true))
	col := newH2Collector(t, 8)
	e := newH2Engine(t, s, apns.WithOutcomeFunc(col.fn), apns.WithConns(1))
	big := []byte(`{"aps":{"alert":"` + strings.Repeat("x", 5000) + `"}}`)
	for i := range 8 {
		n := &apns.Notification{Token: h2Token(i), Payload: big, PushType: apns.PushTypeVoIP, Topic: h2Topic + ".voip"}
		require.NoError(t, e.Send(context.Background(), n, i))
	}
	for _, o := range col.wait(8) {
		require.NoError(t, o.Err)
	}
	for _, r := range s.Requests() {
		require.Equal(t, big, r.Payload)
	}
}

// TestHTTP2Chaos mixes every fault the engine must survive in one burst:
// GOAWAY, cut connections, refused streams, 503s, stream limits going up
// and down. Every notification still gets exactly one outcome, and with
// enough retries each is delivered.
func TestHTTP2Chaos(t *testing.T) {
	t.Parallel()
	s := newH2Server(t, apnstest.HTTP2Latency(time.Millisecond))
	p := newH2Proxy(t, "u", "p")
	const n, step = 4000, 250
	col := newH2Collector(t, n)
	e := newH2Engine(t, s, apns.WithOutcomeFunc(col.fn), apns.WithConns(3), apns.WithMaxInFlight(600),
		apns.WithProxy("http://u:p@"+p.ln.Addr().String()), apns.WithMaxRetries(20),
		apns.WithRetryBackoff(time.Millisecond, 2*time.Millisecond))
	ctx := context.Background()
	go func() {
		for i := range n {
			if err := e.Send(ctx, &apns.Notification{Token: h2Token(i), Payload: h2Payload}, i); err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
		}
	}()
	faults := []func(){
		func() { s.GoAway() },
		func() { p.cut() },
		func() { s.RefuseStreams(30) },
		func() { s.Inject(30, 503, "ServiceUnavailable") },
		func() { s.SetMaxStreams(1) },
		func() { s.SetMaxStreams(100) },
		func() { s.Inject(10, 400, "IdleTimeout") },
		func() { s.SetMaxStreams(3) },
	}
	var outs []apns.Outcome
	for i := 0; len(outs) < n; i++ {
		outs = append(outs, col.wait(min(step, n-len(outs)))...)
		faults[i%len(faults)]()
	}
	s.SetMaxStreams(100)
	for _, o := range outs {
		require.NoError(t, o.Err, "ref %v", o.Ref)
	}
	col.mu.Lock()
	require.Len(t, col.byID, n)
	require.Zero(t, col.dups)
	col.mu.Unlock()
	require.GreaterOrEqual(t, s.Accepted(), n)
	require.Zero(t, s.StreamLimitExceeded())
}

// TestHTTP2GoAwayAtOnceBacksOff: a server that says GOAWAY right after its
// SETTINGS on every connection gets redialled with back-off, not in a
// handshake storm (M2).
func TestHTTP2GoAwayAtOnceBacksOff(t *testing.T) {
	t.Parallel()
	pki := apnstest.MustPKI()
	cfg := pki.ServerTLS(false)
	cfg.NextProtos = []string{"h2"}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	var conns atomic.Int64
	serveRaw(t, ln, func(_ int, c net.Conn) {
		conns.Add(1)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		p := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(c, p); err != nil {
			return
		}
		fr := http2.NewFramer(c, c)
		_ = fr.WriteSettings()
		_ = fr.WriteGoAway(0, http2.ErrCodeNo, []byte(`{"reason":"Shutdown"}`))
		for {
			if _, err := fr.ReadFrame(); err != nil {
				return
			}
		}
	})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	start := time.Now()
	e, err := apns.NewHTTP2Engine("https://"+ln.Addr().String(), apns.TokenAuth(key, "KEY1234567", "TEAM123456"),
		apns.WithRootCAs(pki.RootCAs), apns.WithConns(1), apns.WithRetryBackoff(20*time.Millisecond, time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { closeH2Engine(t, e) })
	// Six connections need five back-offs of at least 0.75 × 20, 40, 80,
	// 160, 320 ms in between: 465 ms. Without back-off they take a few ms.
	require.Eventually(t, func() bool { return conns.Load() >= 6 }, 10*time.Second, time.Millisecond)
	elapsed := time.Since(start)
	require.GreaterOrEqual(t, elapsed, 450*time.Millisecond, "6 handshakes in %v", elapsed)
	require.Less(t, float64(conns.Load())/time.Since(start).Seconds(), 20.0, "handshakes per second")
}

// TestHTTP2TLSRefusalRecovers: a TLS alert refusing the client certificate
// stops intake only until a later dial's handshake passes (M6).
func TestHTTP2TLSRefusalRecovers(t *testing.T) {
	t.Parallel()
	s := apnstest.NewHTTP2Server(apnstest.HTTP2ClientCertAuth())
	other := apnstest.MustPKI() // a CA the first server does not trust
	col := newH2Collector(t, 2)
	e, err := apns.NewHTTP2Engine(s.URL, apns.CertificateAuth(other.ClientCert), apns.WithRootCAs(s.RootCAs()),
		apns.WithOutcomeFunc(col.fn), apns.WithConns(1), apns.WithRetryBackoff(time.Millisecond, 5*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(func() { closeH2Engine(t, e) })
	ctx := context.Background()
	require.NoError(t, e.Send(ctx, &apns.Notification{Token: h2Token(1), Payload: h2Payload}, 1))
	require.ErrorIs(t, col.wait(1)[0].Err, apns.ErrCredentials)
	require.ErrorIs(t, e.Stats().CredentialsErr, apns.ErrCredentials)
	require.ErrorIs(t, e.Send(ctx, &apns.Notification{Token: h2Token(2), Payload: h2Payload}, 2), apns.ErrCredentials)

	// The same address now trusts the engine's certificate too.
	pki := *s.PKI
	pki.ClientCAs = pki.ClientCAs.Clone()
	require.True(t, pki.ClientCAs.AppendCertsFromPEM(other.CAPEM))
	addr := s.Addr
	s.Close()
	newH2Server(t, apnstest.HTTP2Listen(addr), apnstest.HTTP2PKI(&pki), apnstest.HTTP2ClientCertAuth())

	require.Eventually(t, func() bool { return e.Stats().CredentialsErr == nil }, 10*time.Second, time.Millisecond)
	require.NoError(t, e.Send(ctx, &apns.Notification{Token: h2Token(3), Payload: h2Payload}, 3))
	require.NoError(t, col.wait(1)[0].Err)
}

// TestHTTP2CredentialsReprobed: after a 403 credentials refusal, one
// notification is let through per probe period; while the refusal lasts it
// fails with ErrCredentials, and once APNs answers 200 intake resumes (M6).
func TestHTTP2CredentialsReprobed(t *testing.T) {
	t.Parallel()
	bad := h2Token(666)
	s := newH2Server(t, apnstest.HTTP2Reason(bad, 403, "InvalidProviderToken"))
	col := newH2Collector(t, 3)
	e := newH2Engine(t, s, apns.WithOutcomeFunc(col.fn), apns.WithConns(1))
	apns.SetCredentialsProbeForTest(e, 300*time.Millisecond)
	ctx := context.Background()
	require.NoError(t, e.Send(ctx, &apns.Notification{Token: bad, Payload: h2Payload}, 1))
	require.ErrorIs(t, col.wait(1)[0].Err, apns.ErrCredentials)
	require.ErrorIs(t, e.Stats().CredentialsErr, apns.ErrCredentials)

	// A probe still refused: the refusal stands.
	sendOnce := func(tok apns.Token, ref int) {
		require.Eventually(t, func() bool {
			err := e.Send(ctx, &apns.Notification{Token: tok, Payload: h2Payload}, ref)
			if err != nil && !errors.Is(err, apns.ErrCredentials) {
				t.Errorf("Send: %v", err)
			}
			return err == nil
		}, 10*time.Second, time.Millisecond)
	}
	sendOnce(bad, 2)
	o := col.wait(1)[0]
	require.ErrorIs(t, o.Err, apns.ErrCredentials)
	require.Equal(t, 1, o.Attempts)
	require.ErrorIs(t, e.Stats().CredentialsErr, apns.ErrCredentials)
	require.ErrorIs(t, e.Send(ctx, &apns.Notification{Token: h2Token(1), Payload: h2Payload}, 9), apns.ErrCredentials,
		"one probe per period")

	// A probe answered 200: intake resumes.
	sendOnce(h2Token(1), 3)
	require.NoError(t, col.wait(1)[0].Err)
	require.NoError(t, e.Stats().CredentialsErr)
	require.NoError(t, e.Send(ctx, &apns.Notification{Token: h2Token(2), Payload: h2Payload}, 4))
	require.NoError(t, col.wait(1)[0].Err)
}

// TestHTTP2IdleCloseNoBackoffGrowth: a server (a load balancer) that closes
// connections after some idle time, never used, does not make them count
// as failed: the pool redials after the first back-off step each time, not
// after a growing one (L4).
func TestHTTP2IdleCloseNoBackoffGrowth(t *testing.T) {
	t.Parallel()
	const (
		idleLife = 1100 * time.Millisecond // > minConnLife (1s)
		first    = 200 * time.Millisecond
		want     = 5 // connections, so 4 gaps; growing back-off: 0.2+0.4+0.8+1.6 s
	)
	pki := apnstest.MustPKI()
	cfg := pki.ServerTLS(false)
	cfg.NextProtos = []string{"h2"}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		accepts []time.Time
		closes  []time.Time
		streams atomic.Int64
		done    = make(chan struct{})
	)
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepts = append(accepts, time.Now())
			if len(accepts) == want {
				close(done)
			}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					closes = append(closes, time.Now()) // before the engine can see it
					mu.Unlock()
					c.Close()
				}()
				_ = c.SetDeadline(time.Now().Add(idleLife)) // the idle timeout
				p := make([]byte, len(http2.ClientPreface))
				if _, err := io.ReadFull(c, p); err != nil {
					return
				}
				fr := http2.NewFramer(c, c)
				_ = fr.WriteSettings()
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					if _, ok := f.(*http2.HeadersFrame); ok {
						streams.Add(1)
					}
				}
			}()
		}
	}()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	e, err := apns.NewHTTP2Engine("https://"+ln.Addr().String(), apns.TokenAuth(key, "KEY1234567", "TEAM123456"),
		apns.WithRootCAs(pki.RootCAs), apns.WithConns(1), apns.WithRetryBackoff(first, 10*time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { closeH2Engine(t, e) })
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("pool did not redial")
	}
	mu.Lock()
	defer mu.Unlock()
	require.Zero(t, streams.Load(), "the connections stayed idle")
	require.GreaterOrEqual(t, len(closes), want-1)
	for i := 1; i < want; i++ {
		// The first step is at most 1.25 × 200 ms; the growing back-off
		// of failures would wait 1.2 s or more before the fourth.
		gap := accepts[i].Sub(closes[i-1])
		require.Less(t, gap, 800*time.Millisecond, "redial %d after an idle close", i)
	}
}
