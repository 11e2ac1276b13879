package apns_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// stdAPNs is a small APNs provider API on Go's net/http HTTP/2 server: a
// different HTTP/2 stack from apnstest's, so the engine's framing, flow
// control and header handling meet an implementation that is not ours.
type stdAPNs struct {
	mu       sync.Mutex
	seen     map[string]int // token -> requests answered 200
	requests atomic.Int64
	flaky    atomic.Int64 // answer this many more requests 503
}

func (s *stdAPNs) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	fail := func(status int, reason string, extra string) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("apns-id", "11111111-2222-3333-4444-555555555555")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"reason":%q%s}`, reason, extra)
	}
	tok, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	switch {
	case r.ProtoMajor != 2:
		fail(http.StatusBadRequest, "BadProtocol", "")
		return
	case r.Method != http.MethodPost:
		fail(http.StatusMethodNotAllowed, "MethodNotAllowed", "")
		return
	case !ok || len(tok) == 0 || len(tok)%2 != 0:
		fail(http.StatusNotFound, "BadPath", "")
		return
	case !strings.HasPrefix(r.Header.Get("Authorization"), "bearer "):
		fail(http.StatusForbidden, "MissingProviderToken", "")
		return
	case r.Header.Get("apns-topic") == "":
		fail(http.StatusBadRequest, "MissingTopic", "")
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil || len(body) == 0 {
		fail(http.StatusBadRequest, "PayloadEmpty", "")
		return
	}
	if len(body) > 4096 {
		fail(http.StatusRequestEntityTooLarge, "PayloadTooLarge", "")
		return
	}
	if s.flaky.Add(-1) >= 0 {
		fail(http.StatusServiceUnavailable, "ServiceUnavailable", "")
		return
	}
	switch {
	case strings.HasPrefix(tok, "bad0"):
		fail(http.StatusBadRequest, "BadDeviceToken", "")
		return
	case strings.HasPrefix(tok, "dead"):
		fail(http.StatusGone, "Unregistered", `,"timestamp":1700000000000`)
		return
	}
	s.mu.Lock()
	s.seen[tok]++
	s.mu.Unlock()
	id := r.Header.Get("apns-id")
	if id == "" {
		id = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	}
	w.Header().Set("apns-id", id)
	w.WriteHeader(http.StatusOK)
}

func (s *stdAPNs) count(tok apns.Token) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[hex.EncodeToString(tok)]
}

// startStdAPNs serves h over TLS with HTTP/2 (ALPN h2) on 127.0.0.1 using
// net/http, and returns its base URL and the CAs that trust it.
func startStdAPNs(t *testing.T, h http.Handler) (string, *apnstest.PKI) {
	t.Helper()
	pki := apnstest.MustPKI()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.TLS = pki.ServerTLS(false)
	srv.TLS.NextProtos = []string{"h2"}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL, pki
}

// TestHTTP2InteropNetHTTP: the engine against Go's own HTTP/2 server:
// deliveries (large payloads too, beyond the default flow-control window
// in total), each reason mapped, 503s retried, every notification one
// outcome.
func TestHTTP2InteropNetHTTP(t *testing.T) {
	t.Parallel()
	h := &stdAPNs{seen: map[string]int{}}
	h.flaky.Store(20)
	url, pki := startStdAPNs(t, h)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	col := newH2Collector(t, 64)
	e, err := apns.NewHTTP2Engine(url, apns.TokenAuth(key, "ABCDE12345", "TEAM123456"),
		apns.WithRootCAs(pki.RootCAs), apns.WithTopic(h2Topic), apns.WithConns(2),
		apns.WithRetryBackoff(time.Millisecond, 10*time.Millisecond), apns.WithOutcomeFunc(col.fn))
	require.NoError(t, err)
	t.Cleanup(func() { closeH2Engine(t, e) })

	big := []byte(`{"aps":{"alert":"` + strings.Repeat("x", 4000) + `"}}`)
	const n = 2000
	tokenOf := func(i int) apns.Token {
		tk := h2Token(i)
		switch i % 100 {
		case 7:
			tk[0], tk[1] = 0xba, 0xd0
		case 9:
			tk[0], tk[1] = 0xde, 0xad
		}
		return tk
	}
	ctx := context.Background()
	for i := range n {
		p := h2Payload
		if i%10 == 0 {
			p = big
		}
		require.NoError(t, e.Send(ctx, &apns.Notification{Token: tokenOf(i), Payload: p}, i))
	}
	outs := col.wait(n)
	var delivered, badToken, gone int
	for _, o := range outs {
		i := o.Ref.(int)
		switch i % 100 {
		case 7:
			rej, ok := o.Rejection()
			require.True(t, ok, "%d: %v", i, o.Err)
			require.Equal(t, "BadDeviceToken", rej.Reason)
			require.Equal(t, http.StatusBadRequest, rej.HTTPStatus)
			require.True(t, errors.Is(o.Err, apns.ErrBadDeviceToken))
			badToken++
		case 9:
			rej, ok := o.Rejection()
			require.True(t, ok, "%d: %v", i, o.Err)
			require.Equal(t, "Unregistered", rej.Reason)
			require.Equal(t, time.UnixMilli(1700000000000).UTC(), rej.Timestamp.UTC())
			require.True(t, errors.Is(o.Err, apns.ErrBadDeviceToken))
			gone++
		default:
			require.NoError(t, o.Err, i)
			require.Equal(t, 1, h.count(tokenOf(i)), i)
			delivered++
		}
	}
	require.Equal(t, n-40, delivered)
	require.Equal(t, 20, badToken)
	require.Equal(t, 20, gone)
	require.Zero(t, col.dups)
	require.Equal(t, int64(n+20), h.requests.Load(), "each notification once, plus the 20 answered 503 and retried")
}

// TestHTTP2InteropNetHTTPStreamLimit: Go's server announcing a stream limit
// of 3: a burst far beyond it still completes, nothing lost or doubled.
func TestHTTP2InteropNetHTTPStreamLimit(t *testing.T) {
	t.Parallel()
	h := &stdAPNs{seen: map[string]int{}}
	pki := apnstest.MustPKI()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 3}
	srv.TLS = pki.ServerTLS(false)
	srv.TLS.NextProtos = []string{"h2"}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	col := newH2Collector(t, 64)
	e, err := apns.NewHTTP2Engine(srv.URL, apns.TokenAuth(key, "ABCDE12345", "TEAM123456"),
		apns.WithRootCAs(pki.RootCAs), apns.WithTopic(h2Topic), apns.WithConns(1), apns.WithOutcomeFunc(col.fn))
	require.NoError(t, err)
	t.Cleanup(func() { closeH2Engine(t, e) })
	const n = 500
	for i := range n {
		require.NoError(t, e.Send(context.Background(), &apns.Notification{Token: h2Token(i), Payload: h2Payload}, i))
	}
	for _, o := range col.wait(n) {
		require.NoError(t, o.Err, o.Ref)
		require.Equal(t, 1, o.Attempts, "a stream over the limit is reset by the server and sent again")
		require.Equal(t, 1, h.count(h2Token(o.Ref.(int))))
	}
	require.Equal(t, int64(n), h.requests.Load())
}
