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
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2/hpack"

	"github.com/jetpush/apns-worker/apns"
)

var (
	h2tok     = apns.Token(bytes.Repeat([]byte{0xab}, 32))
	h2payload = []byte(`{"aps":{"alert":"hi"}}`)
)

const h2topic = "com.example.app"

// h2client is an independent HTTP/2 client: the standard library's.
func h2client(t testing.TB, s *HTTP2Server, certs ...tls.Certificate) *http.Client {
	return &http.Client{Transport: h2transport(t, s, certs...), Timeout: 10 * time.Second}
}

func h2transport(t testing.TB, s *HTTP2Server, certs ...tls.Certificate) *http.Transport {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: s.RootCAs(), Certificates: certs},
		ForceAttemptHTTP2: true,
		Protocols:         new(http.Protocols),
	}
	tr.Protocols.SetHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// h2jwt signs a provider token with the server's key, or key if given.
func h2jwt(t testing.TB, s *HTTP2Server, iat time.Time, mod ...func(*jwt.Token)) string {
	tk := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": s.TeamID, "iat": iat.Unix()})
	tk.Header["kid"] = s.KeyID
	var key any = s.Key
	for _, m := range mod {
		m(tk)
		if k, ok := tk.Header["x-test-key"]; ok {
			key = k
			delete(tk.Header, "x-test-key")
		}
	}
	str, err := tk.SignedString(key)
	require.NoError(t, err)
	return str
}

type h2resp struct {
	status    int
	reason    string
	timestamp int64
	apnsID    string
}

// h2post sends a notification; hdr overrides the defaults (an empty value
// removes a header).
func h2post(t testing.TB, cl *http.Client, s *HTTP2Server, path string, hdr http.Header, body []byte) h2resp {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL+path, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("apns-topic", h2topic)
	req.Header.Set("apns-push-type", "alert")
	for k, v := range hdr {
		if len(v) == 1 && v[0] == "" {
			req.Header.Del(k)
			continue
		}
		req.Header[http.CanonicalHeaderKey(k)] = v
	}
	if m := hdr.Get(":method"); m != "" {
		req.Method = m
		req.Header.Del(":method")
	}
	res, err := cl.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, 2, res.ProtoMajor)
	out := h2resp{status: res.StatusCode, apnsID: res.Header.Get("apns-id")}
	if len(b) > 0 {
		var j struct {
			Reason    string `json:"reason"`
			Timestamp int64  `json:"timestamp"`
		}
		require.NoError(t, json.Unmarshal(b, &j), "%s", b)
		out.reason, out.timestamp = j.Reason, j.Timestamp
	}
	return out
}

func h2path(tok apns.Token) string { return "/3/device/" + tok.String() }

func h2auth(tok string) http.Header { return http.Header{"Authorization": {"bearer " + tok}} }

func TestHTTP2ServerAccepts(t *testing.T) {
	t.Parallel()
	s := NewHTTP2Server(HTTP2Record(true))
	t.Cleanup(s.Close)
	cl := h2client(t, s)
	auth := h2auth(h2jwt(t, s, time.Now()))

	const id = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
	hdr := auth.Clone()
	hdr.Set("apns-id", id)
	hdr.Set("apns-priority", "5")
	hdr.Set("apns-expiration", "0")
	hdr.Set("apns-collapse-id", "c1")
	r := h2post(t, cl, s, h2path(h2tok), hdr, h2payload)
	require.Equal(t, h2resp{status: 200, apnsID: id}, r)

	r = h2post(t, cl, s, h2path(h2tok), auth, h2payload)
	require.Equal(t, 200, r.status)
	require.True(t, apns.IsUUID(r.apnsID), r.apnsID)

	upper := "/3/device/" + strings.ToUpper(h2tok.String())
	require.Equal(t, 200, h2post(t, cl, s, upper, auth, h2payload).status)

	require.Equal(t, 3, s.Accepted())
	require.Equal(t, 3, s.AcceptedFor(h2tok))
	require.Equal(t, 0, s.AcceptedFor(apns.Token{1, 2}))
	require.Equal(t, 1, s.Mints())
	require.Equal(t, 1, s.Conns())
	require.Equal(t, map[int]int{200: 3}, s.Statuses())
	reqs := s.Requests()
	require.Len(t, reqs, 3)
	require.Equal(t, h2tok, reqs[0].Token)
	require.Equal(t, h2payload, reqs[0].Payload)
	require.Equal(t, id, reqs[0].ID)
	require.Equal(t, 1, reqs[0].Conn)
	require.Equal(t, "5", reqs[0].Header["apns-priority"])
	require.Equal(t, h2topic, reqs[0].Header["apns-topic"])
	require.Equal(t, r.apnsID, reqs[1].ID)
}

func TestHTTP2ServerRejects(t *testing.T) {
	t.Parallel()
	var (
		tokGone  = apns.Token{0x41, 0x10}
		tokBound = apns.Token{0x0b, 0x0d}
		tokBusy  = apns.Token{0x42, 0x90}
	)
	gone := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := NewHTTP2Server(
		HTTP2Topics(h2topic, h2topic+".voip", "com.example.other"),
		HTTP2TokenTopic(tokBound, "com.example.other"),
		HTTP2Reason(tokGone, 410, "Unregistered"),
		HTTP2Clock(func() time.Time { return gone }),
	)
	t.Cleanup(s.Close)
	s.Reason(tokBusy, 429, "TooManyRequests")
	cl := h2client(t, s)
	jwtOK := "bearer " + h2jwt(t, s, gone)
	big := bytes.Repeat([]byte("x"), 4097)
	voipBig := bytes.Repeat([]byte("x"), 5121)

	tests := []struct {
		name   string
		path   string
		hdr    http.Header
		body   []byte
		status int
		reason string
	}{
		{"bad path", "/3/devices/" + h2tok.String(), nil, h2payload, 404, "BadPath"},
		{"root path", "/", nil, h2payload, 404, "BadPath"},
		{"method", h2path(h2tok), http.Header{":method": {"PUT"}}, h2payload, 405, "MethodNotAllowed"},
		{"missing token", "/3/device/", nil, h2payload, 400, "MissingDeviceToken"},
		{"odd token", "/3/device/abc", nil, h2payload, 400, "BadDeviceToken"},
		{"non-hex token", "/3/device/zz", nil, h2payload, 400, "BadDeviceToken"},
		{"long token", "/3/device/" + strings.Repeat("ab", 101), nil, h2payload, 400, "BadDeviceToken"},
		{"duplicate topic", h2path(h2tok), http.Header{"Apns-Topic": {h2topic, h2topic}}, h2payload, 400, "DuplicateHeaders"},
		{"duplicate other", h2path(h2tok), http.Header{"X-Other": {"a", "b"}}, h2payload, 400, "DuplicateHeaders"},
		{"missing provider token", h2path(h2tok), http.Header{"Authorization": {""}}, h2payload, 403, "MissingProviderToken"},
		{"not bearer", h2path(h2tok), http.Header{"Authorization": {"basic abc"}}, h2payload, 403, "InvalidProviderToken"},
		{"garbage token", h2path(h2tok), http.Header{"Authorization": {"bearer abc.def.ghi"}}, h2payload, 403, "InvalidProviderToken"},
		{"push type", h2path(h2tok), http.Header{"Apns-Push-Type": {"banner"}}, h2payload, 400, "InvalidPushType"},
		{"missing topic", h2path(h2tok), http.Header{"Apns-Topic": {""}}, h2payload, 400, "MissingTopic"},
		{"bad topic", h2path(h2tok), http.Header{"Apns-Topic": {"com.example app"}}, h2payload, 400, "BadTopic"},
		{"topic disallowed", h2path(h2tok), http.Header{"Apns-Topic": {"com.evil.app"}}, h2payload, 400, "TopicDisallowed"},
		{"token not for topic", h2path(tokBound), nil, h2payload, 400, "DeviceTokenNotForTopic"},
		{"token for its topic", h2path(tokBound), http.Header{"Apns-Topic": {"com.example.other"}}, h2payload, 200, ""},
		{"priority", h2path(h2tok), http.Header{"Apns-Priority": {"7"}}, h2payload, 400, "BadPriority"},
		{"background priority 10", h2path(h2tok), http.Header{"Apns-Push-Type": {"background"}, "Apns-Priority": {"10"}}, h2payload, 400, "BadPriority"},
		{"background default priority", h2path(h2tok), http.Header{"Apns-Push-Type": {"background"}}, h2payload, 400, "BadPriority"},
		{"background priority 5", h2path(h2tok), http.Header{"Apns-Push-Type": {"background"}, "Apns-Priority": {"5"}}, h2payload, 200, ""},
		{"priority 1", h2path(h2tok), http.Header{"Apns-Priority": {"1"}}, h2payload, 200, ""},
		{"expiration", h2path(h2tok), http.Header{"Apns-Expiration": {"soon"}}, h2payload, 400, "BadExpirationDate"},
		{"negative expiration", h2path(h2tok), http.Header{"Apns-Expiration": {"-1"}}, h2payload, 400, "BadExpirationDate"},
		{"collapse id", h2path(h2tok), http.Header{"Apns-Collapse-Id": {strings.Repeat("c", 65)}}, h2payload, 400, "BadCollapseId"},
		{"collapse id 64", h2path(h2tok), http.Header{"Apns-Collapse-Id": {strings.Repeat("c", 64)}}, h2payload, 200, ""},
		{"uppercase apns-id", h2path(h2tok), http.Header{"Apns-Id": {"0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D"}}, h2payload, 400, "BadMessageId"},
		{"apns-id", h2path(h2tok), http.Header{"Apns-Id": {"42"}}, h2payload, 400, "BadMessageId"},
		{"empty payload", h2path(h2tok), nil, nil, 400, "PayloadEmpty"},
		{"payload too large", h2path(h2tok), nil, big, 413, "PayloadTooLarge"},
		{"voip payload too large", h2path(h2tok), http.Header{"Apns-Push-Type": {"voip"}, "Apns-Topic": {h2topic + ".voip"}}, voipBig, 413, "PayloadTooLarge"},
		{"voip payload 4097", h2path(h2tok), http.Header{"Apns-Push-Type": {"voip"}, "Apns-Topic": {h2topic + ".voip"}}, big, 200, ""},
		{"per-token reason", h2path(tokBusy), nil, h2payload, 429, "TooManyRequests"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			hdr := http.Header{"Authorization": {jwtOK}}
			for k, v := range tt.hdr {
				hdr[k] = v
			}
			r := h2post(t, cl, s, tt.path, hdr, tt.body)
			require.Equal(t, tt.status, r.status)
			require.Equal(t, tt.reason, r.reason)
			require.Zero(t, r.timestamp)
			require.True(t, apns.IsUUID(r.apnsID), r.apnsID)
		})
	}
	t.Run("unregistered", func(t *testing.T) {
		t.Parallel()
		r := h2post(t, cl, s, h2path(tokGone), http.Header{"Authorization": {jwtOK}}, h2payload)
		require.Equal(t, 410, r.status)
		require.Equal(t, "Unregistered", r.reason)
		require.Equal(t, gone.UnixMilli(), r.timestamp)
	})
}

func TestHTTP2ServerJWT(t *testing.T) {
	t.Parallel()
	var nowNs atomic.Int64
	start := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	nowNs.Store(start.UnixNano())
	clock := func() time.Time { return time.Unix(0, nowNs.Load()) }
	s := NewHTTP2Server(HTTP2Clock(clock))
	t.Cleanup(s.Close)
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)

	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		cl := h2client(t, s)
		tests := []struct {
			name   string
			token  string
			status int
			reason string
		}{
			{"other key", h2jwt(t, s, start, func(tk *jwt.Token) { tk.Header["x-test-key"] = otherKey }), 403, "InvalidProviderToken"},
			{"wrong kid", h2jwt(t, s, start, func(tk *jwt.Token) { tk.Header["kid"] = "ABCDEFGHIJ" }), 403, "InvalidProviderToken"},
			{"no kid", h2jwt(t, s, start, func(tk *jwt.Token) { delete(tk.Header, "kid") }), 403, "InvalidProviderToken"},
			{"wrong iss", h2jwt(t, s, start, func(tk *jwt.Token) { tk.Claims.(jwt.MapClaims)["iss"] = "ABCDEFGHIJ" }), 403, "InvalidProviderToken"},
			{"no iat", h2jwt(t, s, start, func(tk *jwt.Token) { delete(tk.Claims.(jwt.MapClaims), "iat") }), 403, "InvalidProviderToken"},
			{"HS256", func() string {
				tk := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": s.TeamID, "iat": start.Unix()})
				tk.Header["kid"] = s.KeyID
				str, err := tk.SignedString([]byte("secret"))
				require.NoError(t, err)
				return str
			}(), 403, "InvalidProviderToken"},
			{"expired", h2jwt(t, s, start.Add(-time.Hour-time.Second)), 403, "ExpiredProviderToken"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				r := h2post(t, cl, s, h2path(h2tok), h2auth(tt.token), h2payload)
				require.Equal(t, tt.status, r.status)
				require.Equal(t, tt.reason, r.reason)
			})
		}
	})

	t.Run("refresh", func(t *testing.T) {
		t.Parallel()
		// One connection: the client has a single stream at a time.
		cl := h2client(t, s)
		tokA := h2jwt(t, s, start)
		require.Equal(t, 200, h2post(t, cl, s, h2path(h2tok), h2auth(tokA), h2payload).status)
		// Another token minted 5 minutes later is too soon on this connection.
		early := h2jwt(t, s, start.Add(5*time.Minute))
		r := h2post(t, cl, s, h2path(h2tok), h2auth(early), h2payload)
		require.Equal(t, h2resp{status: 429, reason: "TooManyProviderTokenUpdates", apnsID: r.apnsID}, r)
		// The old token still works, and expires after an hour.
		require.Equal(t, 200, h2post(t, cl, s, h2path(h2tok), h2auth(tokA), h2payload).status)
		nowNs.Store(start.Add(61 * time.Minute).UnixNano())
		r = h2post(t, cl, s, h2path(h2tok), h2auth(tokA), h2payload)
		require.Equal(t, "ExpiredProviderToken", r.reason)
		require.Equal(t, 403, r.status)
		// A token minted 50 minutes after the first is welcome.
		tokB := h2jwt(t, s, start.Add(50*time.Minute))
		require.Equal(t, 200, h2post(t, cl, s, h2path(h2tok), h2auth(tokB), h2payload).status)
		require.Equal(t, 200, h2post(t, cl, s, h2path(h2tok), h2auth(tokB), h2payload).status)
	})
}

func TestHTTP2ServerMints(t *testing.T) {
	t.Parallel()
	s := NewHTTP2Server()
	t.Cleanup(s.Close)
	tok := h2jwt(t, s, time.Now())
	for i := range 3 { // three clients, three connections, one token
		cl := h2client(t, s)
		require.Equal(t, 200, h2post(t, cl, s, h2path(h2tok), h2auth(tok), h2payload).status, i)
	}
	require.Equal(t, 3, s.Conns())
	require.Equal(t, 1, s.Mints())
	cl := h2client(t, s)
	require.Equal(t, 200, h2post(t, cl, s, h2path(h2tok), h2auth(h2jwt(t, s, time.Now())), h2payload).status)
	require.Equal(t, 2, s.Mints())
}

func TestHTTP2ServerCertAuth(t *testing.T) {
	t.Parallel()
	pki := MustPKI()
	s := NewHTTP2Server(HTTP2PKI(pki), HTTP2ClientCertAuth())
	t.Cleanup(s.Close)
	require.Same(t, pki.RootCAs, s.RootCAs())

	cl := h2client(t, s, s.ClientCert())
	require.Equal(t, 200, h2post(t, cl, s, h2path(h2tok), http.Header{"Apns-Topic": {""}}, h2payload).status)

	t.Run("no certificate", func(t *testing.T) {
		t.Parallel()
		cl := h2client(t, s)
		req, err := http.NewRequest(http.MethodPost, s.URL+h2path(h2tok), bytes.NewReader(h2payload))
		require.NoError(t, err)
		_, err = cl.Do(req)
		require.Error(t, err)
	})
	t.Run("certificate of another CA", func(t *testing.T) {
		t.Parallel()
		cl := h2client(t, s, MustPKI().ClientCert)
		req, err := http.NewRequest(http.MethodPost, s.URL+h2path(h2tok), bytes.NewReader(h2payload))
		require.NoError(t, err)
		_, err = cl.Do(req)
		require.Error(t, err)
	})
}

func TestHTTP2ServerOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opt  HTTP2Option
	}{
		{"nil PKI", HTTP2PKI(nil)},
		{"short key id", HTTP2Key("KEY", "TEAM123456", &ecdsa.PrivateKey{})},
		{"nil key", HTTP2Key("KEY1234567", "TEAM123456", nil)},
		{"max streams", HTTP2MaxStreams(0)},
		{"window", HTTP2Window(0)},
		{"clock", HTTP2Clock(nil)},
		{"latency", HTTP2Latency(-1)},
		{"goaway", HTTP2GoAwayAfter(-1)},
		{"reason status", HTTP2Reason(h2tok, 99, "x")},
		{"inject status", HTTP2Inject(1, 600, "x")},
		{"refuse", HTTP2RefuseStreams(-1)},
		{"listen", HTTP2Listen("256.0.0.1:0")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ListenHTTP2(tt.opt)
			require.Error(t, err)
			require.Panics(t, func() { NewHTTP2Server(tt.opt) })
		})
	}
}

// A server for its own process: listen, then Serve until Close, with a
// key given by the caller.
func TestHTTP2ServerServe(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	s, err := ListenHTTP2(HTTP2Listen("127.0.0.1:0"), HTTP2Key("KEY1234567", "TEAM123456", key))
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	require.Equal(t, "KEY1234567", s.KeyID)
	require.Same(t, key, s.Key)
	cl := h2client(t, s)
	require.Equal(t, 200, h2post(t, cl, s, h2path(h2tok), h2auth(h2jwt(t, s, time.Now())), h2payload).status)
	require.Error(t, s.Serve(), "a second Serve")
	s.Close()
	require.NoError(t, <-served)
}

func TestHTTP2ServerP8(t *testing.T) {
	t.Parallel()
	s := NewHTTP2Server()
	t.Cleanup(s.Close)
	require.Len(t, s.KeyID, 10)
	require.Len(t, s.TeamID, 10)
	key, err := jwt.ParseECPrivateKeyFromPEM(s.P8())
	require.NoError(t, err)
	require.True(t, key.Equal(s.Key))
	require.Contains(t, string(s.P8()), "-----BEGIN PRIVATE KEY-----")
	require.Equal(t, "https://"+s.Addr, s.URL)
}

func TestHTTP2ServerInject(t *testing.T) {
	t.Parallel()
	s := NewHTTP2Server(HTTP2Inject(1, 500, "InternalServerError"))
	t.Cleanup(s.Close)
	s.Inject(2, 503, "ServiceUnavailable")
	s.Inject(1, 429, "TooManyRequests")
	cl := h2client(t, s)
	auth := h2auth(h2jwt(t, s, time.Now()))
	var got []string
	for range 5 {
		r := h2post(t, cl, s, h2path(h2tok), auth, h2payload)
		got = append(got, http.StatusText(r.status)+" "+r.reason)
	}
	require.Equal(t, []string{
		"Internal Server Error InternalServerError",
		"Service Unavailable ServiceUnavailable",
		"Service Unavailable ServiceUnavailable",
		"Too Many Requests TooManyRequests",
		"OK ",
	}, got)
	require.Equal(t, 1, s.Accepted())
}

func TestHTTP2ServerRefuseStreams(t *testing.T) {
	t.Parallel()
	s := NewHTTP2Server()
	t.Cleanup(s.Close)
	s.RefuseStreams(1)
	cl := h2client(t, s)
	// net/http retries a refused stream, which the server did not process.
	require.Equal(t, 200, h2post(t, cl, s, h2path(h2tok), h2auth(h2jwt(t, s, time.Now())), h2payload).status)
	require.Equal(t, 1, s.Refused())
	require.Equal(t, 1, s.Accepted())
}

// h2burst sends n notifications concurrently and returns the statuses.
func h2burst(t *testing.T, cl *http.Client, s *HTTP2Server, n int, auth http.Header) map[int]int {
	t.Helper()
	var (
		mu  sync.Mutex
		got = map[int]int{}
		wg  sync.WaitGroup
	)
	for range n {
		wg.Go(func() {
			r := h2post(t, cl, s, h2path(h2tok), auth, h2payload)
			mu.Lock()
			got[r.status]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return got
}

func TestHTTP2ServerGoAway(t *testing.T) {
	t.Parallel()
	t.Run("sequential", func(t *testing.T) {
		t.Parallel()
		s := NewHTTP2Server(HTTP2GoAwayAfter(3))
		t.Cleanup(s.Close)
		cl := h2client(t, s)
		auth := h2auth(h2jwt(t, s, time.Now()))
		for range 10 {
			require.Equal(t, 200, h2post(t, cl, s, h2path(h2tok), auth, h2payload).status)
		}
		require.Equal(t, 4, s.Conns())
		require.Equal(t, 10, s.Accepted())
	})
	t.Run("burst", func(t *testing.T) {
		t.Parallel()
		// Streams beyond the GOAWAY's last stream id fail on the client,
		// which retries them on a new connection: none is lost, none is
		// processed twice. (Kept small: net/http backs off from the second
		// retry on.)
		s := NewHTTP2Server(HTTP2GoAwayAfter(10), HTTP2Latency(time.Millisecond))
		t.Cleanup(s.Close)
		cl := h2client(t, s)
		auth := h2auth(h2jwt(t, s, time.Now()))
		require.Equal(t, 200, h2post(t, cl, s, h2path(h2tok), auth, h2payload).status)
		require.Equal(t, map[int]int{200: 15}, h2burst(t, cl, s, 15, auth))
		require.Equal(t, 16, s.Accepted())
		require.GreaterOrEqual(t, s.Conns(), 2)
	})
	t.Run("now", func(t *testing.T) {
		t.Parallel()
		s := NewHTTP2Server()
		t.Cleanup(s.Close)
		cl := h2client(t, s)
		auth := h2auth(h2jwt(t, s, time.Now()))
		require.Equal(t, 200, h2post(t, cl, s, h2path(h2tok), auth, h2payload).status)
		s.GoAway()
		require.Equal(t, 200, h2post(t, cl, s, h2path(h2tok), auth, h2payload).status)
		require.Equal(t, 2, s.Conns())
	})
}

func TestHTTP2ServerStreamLimit(t *testing.T) {
	t.Parallel()
	t.Run("from the start", func(t *testing.T) {
		t.Parallel()
		s := NewHTTP2Server(HTTP2MaxStreams(1), HTTP2Latency(2*time.Millisecond))
		t.Cleanup(s.Close)
		cl := h2client(t, s)
		auth := h2auth(h2jwt(t, s, time.Now()))
		// Warm up one connection so the client knows the limit.
		require.Equal(t, 200, h2post(t, cl, s, h2path(h2tok), auth, h2payload).status)
		require.Equal(t, map[int]int{200: 20}, h2burst(t, cl, s, 20, auth))
		require.Equal(t, 1, s.MaxOpenStreams())
		require.Zero(t, s.StreamLimitExceeded())
	})
	t.Run("lowered mid-connection", func(t *testing.T) {
		t.Parallel()
		s := NewHTTP2Server(HTTP2Latency(2 * time.Millisecond))
		t.Cleanup(s.Close)
		cl := h2client(t, s)
		auth := h2auth(h2jwt(t, s, time.Now()))
		require.Equal(t, 200, h2post(t, cl, s, h2path(h2tok), auth, h2payload).status)
		s.SetMaxStreams(1)
		// This response follows the SETTINGS frame, so the client has
		// applied (and acknowledged) it before it sends anything else.
		require.Equal(t, 200, h2post(t, cl, s, h2path(h2tok), auth, h2payload).status)
		require.Equal(t, map[int]int{200: 20}, h2burst(t, cl, s, 20, auth))
		require.Equal(t, 1, s.MaxOpenStreams())
		require.Zero(t, s.StreamLimitExceeded())
	})
	t.Run("concurrent streams", func(t *testing.T) {
		t.Parallel()
		s := NewHTTP2Server(HTTP2Latency(20 * time.Millisecond))
		t.Cleanup(s.Close)
		cl := h2client(t, s)
		auth := h2auth(h2jwt(t, s, time.Now()))
		require.Equal(t, 200, h2post(t, cl, s, h2path(h2tok), auth, h2payload).status)
		require.Equal(t, map[int]int{200: 20}, h2burst(t, cl, s, 20, auth))
		require.Greater(t, s.MaxOpenStreams(), 1)
		require.Equal(t, 1, s.Conns())
	})
}

func TestHTTP2ServerFlowControl(t *testing.T) {
	t.Parallel()
	// A 1 KiB stream window makes the client wait for WINDOW_UPDATEs.
	s := NewHTTP2Server(HTTP2Window(1024), HTTP2Record(true))
	t.Cleanup(s.Close)
	cl := h2client(t, s)
	auth := h2auth(h2jwt(t, s, time.Now()))
	auth.Set("apns-push-type", "voip")
	payload := []byte(`{"aps":{},"x":"` + strings.Repeat("v", 5000) + `"}`)
	require.Len(t, payload, 5017)
	for range 3 {
		require.Equal(t, 200, h2post(t, cl, s, h2path(h2tok), auth, payload).status)
	}
	reqs := s.Requests()
	require.Len(t, reqs, 3)
	require.Equal(t, payload, reqs[2].Payload)
}

func TestHTTP2ServerClose(t *testing.T) {
	t.Parallel()
	s := NewHTTP2Server(HTTP2Latency(time.Hour))
	cl := h2client(t, s)
	auth := h2auth(h2jwt(t, s, time.Now()))
	auth.Set("apns-topic", h2topic)
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, s.URL+h2path(h2tok), bytes.NewReader(h2payload))
		req.Header = auth
		res, err := cl.Do(req)
		if err == nil {
			res.Body.Close()
		}
		errc <- err
	}()
	require.Eventually(t, func() bool { return s.Accepted() == 1 }, 5*time.Second, time.Millisecond)
	s.Close() // with a request in flight; goleak checks its goroutines
	require.Error(t, <-errc)
	s.Close() // idempotent
}

// h2wire is a bare HTTP/2 client for checks below the level net/http
// exposes: frames are written and read one by one.
type h2wire struct {
	t    testing.TB
	conn *tls.Conn
	br   *bufio.Reader
	enc  *hpack.Encoder
	ebuf bytes.Buffer
	dec  *hpack.Decoder
}

type h2frame struct {
	typ, flags byte
	sid        uint32
	p          []byte
}

func h2dial(t testing.TB, s *HTTP2Server) *h2wire {
	t.Helper()
	conn, err := tls.Dial("tcp", s.Addr, &tls.Config{RootCAs: s.RootCAs(), NextProtos: []string{"h2"}})
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	w := &h2wire{t: t, conn: conn, br: bufio.NewReader(conn), dec: hpack.NewDecoder(4096, nil)}
	w.enc = hpack.NewEncoder(&w.ebuf)
	_, err = conn.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	require.NoError(t, err)
	w.write(h2fSettings, 0, 0, nil)
	return w
}

func (w *h2wire) write(typ, flags byte, sid uint32, p []byte) {
	w.t.Helper()
	h := []byte{byte(len(p) >> 16), byte(len(p) >> 8), byte(len(p)), typ, flags, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[5:], sid)
	_, err := w.conn.Write(append(h, p...))
	require.NoError(w.t, err)
}

// read returns the next frame; io.EOF when the server closed.
func (w *h2wire) read() (h2frame, error) {
	var h [9]byte
	if _, err := io.ReadFull(w.br, h[:]); err != nil {
		return h2frame{}, err
	}
	f := h2frame{typ: h[3], flags: h[4], sid: binary.BigEndian.Uint32(h[5:]) & 0x7fffffff}
	f.p = make([]byte, int(h[0])<<16|int(h[1])<<8|int(h[2]))
	_, err := io.ReadFull(w.br, f.p)
	return f, err
}

// next returns the next frame that is not SETTINGS or WINDOW_UPDATE,
// acknowledging the server's SETTINGS unless noAck.
func (w *h2wire) next(noAck bool) h2frame {
	w.t.Helper()
	for {
		f, err := w.read()
		require.NoError(w.t, err)
		switch {
		case f.typ == h2fSettings && f.flags&h2flagAck == 0 && !noAck:
			w.write(h2fSettings, h2flagAck, 0, nil)
		case f.typ == h2fSettings, f.typ == h2fWindowUpdate:
		default:
			return f
		}
	}
}

// settings reads the server's first SETTINGS, acknowledges it and returns
// its values.
func (w *h2wire) settings() map[uint16]uint32 {
	w.t.Helper()
	for {
		f, err := w.read()
		require.NoError(w.t, err)
		if f.typ == h2fSettings && f.flags&h2flagAck == 0 {
			m := map[uint16]uint32{}
			for p := f.p; len(p) >= 6; p = p[6:] {
				m[binary.BigEndian.Uint16(p)] = binary.BigEndian.Uint32(p[2:])
			}
			w.write(h2fSettings, h2flagAck, 0, nil)
			return m
		}
	}
}

// block encodes header fields given as name, value pairs.
func (w *h2wire) block(kv ...string) []byte {
	w.ebuf.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		require.NoError(w.t, w.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]}))
	}
	return bytes.Clone(w.ebuf.Bytes())
}

// post sends a valid notification on stream sid.
func (w *h2wire) post(sid uint32, jwt string) {
	w.t.Helper()
	w.write(h2fHeaders, h2flagEndHeaders, sid, w.block(
		":method", "POST", ":scheme", "https", ":authority", "apns", ":path", h2path(h2tok),
		"authorization", "bearer "+jwt, "apns-topic", h2topic, "apns-push-type", "alert"))
	w.write(h2fData, h2flagEndStream, sid, h2payload)
}

// status decodes a response HEADERS frame's :status.
func (w *h2wire) status(f h2frame) string {
	w.t.Helper()
	require.Equal(w.t, byte(h2fHeaders), f.typ, "frame %+v", f)
	fields, err := w.dec.DecodeFull(f.p)
	require.NoError(w.t, err)
	for _, hf := range fields {
		if hf.Name == ":status" {
			return hf.Value
		}
	}
	return ""
}

func TestHTTP2ServerWire(t *testing.T) {
	t.Parallel()
	s := NewHTTP2Server(HTTP2MaxStreams(7), HTTP2Window(4096))
	t.Cleanup(s.Close)
	jwt := h2jwt(t, s, time.Now())

	t.Run("settings", func(t *testing.T) {
		t.Parallel()
		w := h2dial(t, s)
		set := w.settings()
		require.Equal(t, uint32(7), set[h2setMaxConcurrentStreams])
		require.Equal(t, uint32(4096), set[h2setInitialWindowSize])
	})
	t.Run("ping", func(t *testing.T) {
		t.Parallel()
		w := h2dial(t, s)
		w.write(h2fPing, 0, 0, []byte("12345678"))
		f := w.next(false)
		require.Equal(t, h2frame{typ: h2fPing, flags: h2flagAck, p: []byte("12345678")}, f)
	})
	t.Run("continuation", func(t *testing.T) {
		t.Parallel()
		w := h2dial(t, s)
		b := w.block(":method", "POST", ":scheme", "https", ":path", h2path(h2tok),
			"authorization", "bearer "+jwt, "apns-topic", h2topic)
		w.write(h2fHeaders, 0, 1, b[:5])
		w.write(h2fContinuation, 0, 1, b[5:9])
		w.write(h2fContinuation, h2flagEndHeaders, 1, b[9:])
		w.write(h2fData, h2flagEndStream, 1, h2payload)
		require.Equal(t, "200", w.status(w.next(false)))
	})
	t.Run("stream window updates", func(t *testing.T) {
		t.Parallel()
		w := h2dial(t, s)
		w.settings()
		w.write(h2fHeaders, h2flagEndHeaders, 1, w.block(
			":method", "POST", ":scheme", "https", ":path", h2path(h2tok),
			"authorization", "bearer "+jwt, "apns-topic", h2topic, "apns-push-type", "voip"))
		w.write(h2fData, 0, 1, bytes.Repeat([]byte{' '}, 4000)) // within the 4096 window
		var upd h2frame
		for upd.typ != h2fWindowUpdate || upd.sid != 1 {
			var err error
			upd, err = w.read()
			require.NoError(t, err)
		}
		require.Equal(t, uint32(4000), binary.BigEndian.Uint32(upd.p))
		w.write(h2fData, h2flagEndStream, 1, h2payload)
		require.Equal(t, "200", w.status(w.next(false)))
	})
	t.Run("stream window overrun", func(t *testing.T) {
		t.Parallel()
		w := h2dial(t, s)
		w.settings()
		w.write(h2fHeaders, h2flagEndHeaders, 1, w.block(
			":method", "POST", ":scheme", "https", ":path", h2path(h2tok),
			"authorization", "bearer "+jwt, "apns-topic", h2topic))
		w.write(h2fData, 0, 1, make([]byte, 4097)) // the window is 4096
		f := w.next(false)
		require.Equal(t, h2frame{typ: h2fRSTStream, sid: 1, p: []byte{0, 0, 0, h2errFlowControl}}, f)
	})
	t.Run("even stream id", func(t *testing.T) {
		t.Parallel()
		w := h2dial(t, s)
		w.write(h2fHeaders, h2flagEndHeaders|h2flagEndStream, 2, w.block(":method", "POST", ":path", "/"))
		f := w.next(false)
		require.Equal(t, byte(h2fGoAway), f.typ)
		require.Equal(t, uint32(h2errProtocol), binary.BigEndian.Uint32(f.p[4:]))
	})
	t.Run("frame too large", func(t *testing.T) {
		t.Parallel()
		w := h2dial(t, s)
		w.write(h2fPing, 0, 0, make([]byte, 16385))
		f := w.next(false)
		require.Equal(t, byte(h2fGoAway), f.typ)
		require.Equal(t, uint32(h2errFrameSize), binary.BigEndian.Uint32(f.p[4:]))
	})
}

func TestHTTP2ServerWireStreamLimit(t *testing.T) {
	t.Parallel()
	s := NewHTTP2Server(HTTP2MaxStreams(2), HTTP2Latency(time.Hour))
	t.Cleanup(s.Close)
	jwt := h2jwt(t, s, time.Now())
	w := h2dial(t, s)
	// Before the client acknowledges SETTINGS there is no limit (RFC 9113
	// 6.5.2): streams 1, 3 and 5 are accepted.
	set := w.settings()
	require.Equal(t, uint32(2), set[h2setMaxConcurrentStreams])
	// ... the ack was just sent, so now the limit is 2.
	w.post(1, jwt)
	w.post(3, jwt)
	w.post(5, jwt)
	f := w.next(false)
	require.Equal(t, h2frame{typ: h2fRSTStream, sid: 5, p: []byte{0, 0, 0, h2errRefusedStream}}, f)
	require.Equal(t, 1, s.StreamLimitExceeded())

	// Lowered to 1 mid-connection: enforced once acknowledged.
	s.SetMaxStreams(1)
	f, err := w.read()
	require.NoError(t, err)
	require.Equal(t, h2frame{typ: h2fSettings, p: []byte{0, h2setMaxConcurrentStreams, 0, 0, 0, 1}}, f)
	w.write(h2fRSTStream, 0, 3, []byte{0, 0, 0, 8}) // CANCEL: one stream open
	w.write(h2fSettings, h2flagAck, 0, nil)
	w.post(7, jwt)
	f = w.next(false)
	require.Equal(t, h2frame{typ: h2fRSTStream, sid: 7, p: []byte{0, 0, 0, h2errRefusedStream}}, f)
	require.Equal(t, 2, s.StreamLimitExceeded())
	require.Equal(t, 2, s.MaxOpenStreams())
}

func TestHTTP2ServerWireGoAway(t *testing.T) {
	t.Parallel()
	s := NewHTTP2Server(HTTP2GoAwayAfter(2))
	t.Cleanup(s.Close)
	s.RefuseStreams(1)
	jwt := h2jwt(t, s, time.Now())
	w := h2dial(t, s)
	w.settings()
	w.post(1, jwt)
	w.post(3, jwt)
	w.post(5, jwt)
	var got []string
	for {
		f, err := w.read()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		switch f.typ {
		case h2fGoAway:
			got = append(got, fmt.Sprintf("GOAWAY last=%d code=%d %s",
				binary.BigEndian.Uint32(f.p), binary.BigEndian.Uint32(f.p[4:]), f.p[8:]))
		case h2fRSTStream:
			got = append(got, fmt.Sprintf("RST_STREAM %d code=%d", f.sid, binary.BigEndian.Uint32(f.p)))
		case h2fHeaders:
			got = append(got, fmt.Sprintf("HEADERS %d %s", f.sid, w.status(f)))
		}
	}
	// Stream 1 ends before stream 3 begins; the GOAWAY follows stream 3's
	// HEADERS, which make the second request; stream 5 is ignored.
	require.Equal(t, []string{
		"RST_STREAM 1 code=7",
		`GOAWAY last=3 code=0 {"reason":"Shutdown"}`,
		"HEADERS 3 200",
	}, got)
	require.Equal(t, 1, s.Accepted())
	require.Equal(t, 1, s.Refused())
}

// BenchmarkHTTP2Server measures the server alone: the load comes from a
// bare HTTP/2 client in a child process (this test binary, running
// TestHTTP2LoadHelper), so this process's CPU time is the server's.
// Metrics: requests/s, server CPU µs per request, client CPU µs per request.
func BenchmarkHTTP2Server(b *testing.B) {
	for _, bc := range []struct {
		conns, streams int
		flush          bool // a flush (a TLS record, a write) per request
		latency        time.Duration
	}{
		{1, 1, true, 0},
		{1, 100, false, 0},
		{1, 100, true, 0},
		{2, 200, true, 0},
		{2, 200, true, time.Millisecond},
		{4, 1000, false, 0},
	} {
		name := fmt.Sprintf("conns=%d/streams=%d", bc.conns, bc.streams)
		if bc.flush {
			name += "/flush"
		}
		if bc.latency > 0 {
			name += "/latency=" + bc.latency.String()
		}
		b.Run(name, func(b *testing.B) {
			s := NewHTTP2Server(HTTP2Latency(bc.latency))
			defer s.Close()
			cmd := exec.Command(os.Args[0], "-test.run=^TestHTTP2LoadHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(),
				"APNSTEST_H2LOAD_ADDR="+s.Addr,
				"APNSTEST_H2LOAD_CA="+string(s.PKI.CAPEM),
				"APNSTEST_H2LOAD_JWT="+h2jwt(b, s, time.Now()),
				fmt.Sprintf("APNSTEST_H2LOAD_N=%d", b.N),
				fmt.Sprintf("APNSTEST_H2LOAD_CONNS=%d", bc.conns),
				fmt.Sprintf("APNSTEST_H2LOAD_STREAMS=%d", bc.streams),
				fmt.Sprintf("APNSTEST_H2LOAD_FLUSH=%t", bc.flush),
			)
			cpu0 := h2cpu()
			b.ResetTimer()
			out, err := cmd.CombinedOutput()
			b.StopTimer()
			cpu := h2cpu() - cpu0
			require.NoError(b, err, "%s", out)
			var res h2loadResult
			_, line, ok := strings.Cut(string(out), "H2LOAD ")
			require.True(b, ok, "%s", out)
			line, _, _ = strings.Cut(line, "\n")
			require.NoError(b, json.Unmarshal([]byte(line), &res))
			require.Equal(b, b.N, res.Done)
			require.Equal(b, b.N, s.Accepted())
			b.ReportMetric(float64(res.Done)/res.Wall.Seconds(), "requests/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(res.Done), "server-µs/req")
			b.ReportMetric(float64(res.CPU.Microseconds())/float64(res.Done), "client-µs/req")
		})
	}
}

type h2loadResult struct {
	Done int
	Wall time.Duration
	CPU  time.Duration
}

// h2cpu is this process's CPU time (user and system) so far.
func h2cpu() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestHTTP2LoadHelper is the load generator of BenchmarkHTTP2Server, run in
// a child process; it does nothing in a normal test run.
func TestHTTP2LoadHelper(t *testing.T) {
	addr := os.Getenv("APNSTEST_H2LOAD_ADDR")
	if addr == "" {
		return
	}
	atoi := func(k string) int {
		n, err := strconv.Atoi(os.Getenv(k))
		require.NoError(t, err, k)
		return n
	}
	n, conns, streams := atoi("APNSTEST_H2LOAD_N"), atoi("APNSTEST_H2LOAD_CONNS"), atoi("APNSTEST_H2LOAD_STREAMS")
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM([]byte(os.Getenv("APNSTEST_H2LOAD_CA"))))
	jwt := os.Getenv("APNSTEST_H2LOAD_JWT")
	flush := os.Getenv("APNSTEST_H2LOAD_FLUSH") == "true"

	cpu0, start := h2cpu(), time.Now()
	var (
		wg   sync.WaitGroup
		done atomic.Int64
		errs = make(chan error, conns)
	)
	for i := range conns {
		share := n / conns
		if i < n%conns {
			share++
		}
		wg.Go(func() {
			k, err := h2loadConn(addr, roots, jwt, share, max(1, streams/conns), flush)
			done.Add(int64(k))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	res := h2loadResult{Done: int(done.Load()), Wall: time.Since(start), CPU: h2cpu() - cpu0}
	b, err := json.Marshal(res)
	require.NoError(t, err)
	fmt.Printf("H2LOAD %s\n", b)
}

// h2loadConn sends n notifications on one connection, keeping up to
// streams in flight (flushing after each one if flush), and returns how
// many were answered 200.
func h2loadConn(addr string, roots *x509.CertPool, jwt string, n, streams int, flush bool) (int, error) {
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, NextProtos: []string{"h2"}})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Minute))
	bw := bufio.NewWriterSize(conn, 64<<10)
	var ebuf bytes.Buffer
	enc := hpack.NewEncoder(&ebuf)
	frame := func(typ, flags byte, sid uint32, p []byte) {
		h := [9]byte{byte(len(p) >> 16), byte(len(p) >> 8), byte(len(p)), typ, flags}
		binary.BigEndian.PutUint32(h[5:], sid)
		bw.Write(h[:])
		bw.Write(p)
	}
	bw.WriteString("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	frame(h2fSettings, 0, 0, nil)

	credits := make(chan struct{}, streams)
	var needAck atomic.Int32
	rerr := make(chan error, 1)
	ok := 0
	go func() { // reader
		br := bufio.NewReaderSize(conn, 64<<10)
		dec := hpack.NewDecoder(4096, nil)
		var h [9]byte
		p := make([]byte, 16384)
		for got := 0; got < n; {
			if _, err := io.ReadFull(br, h[:]); err != nil {
				rerr <- err
				return
			}
			l := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
			if _, err := io.ReadFull(br, p[:l]); err != nil {
				rerr <- err
				return
			}
			switch h[3] {
			case h2fSettings:
				if h[4]&h2flagAck == 0 {
					needAck.Add(1)
				}
			case h2fHeaders:
				fields, err := dec.DecodeFull(p[:l])
				if err != nil {
					rerr <- err
					return
				}
				if len(fields) > 0 && fields[0].Value == "200" {
					ok++
				}
				if h[4]&h2flagEndStream != 0 {
					got++
					credits <- struct{}{}
				}
			case h2fData:
				if h[4]&h2flagEndStream != 0 {
					got++
					credits <- struct{}{}
				}
			case h2fGoAway, h2fRSTStream:
				rerr <- fmt.Errorf("unexpected frame type %d", h[3])
				return
			}
		}
		rerr <- nil
	}()
	path := h2path(h2tok)
	sid := uint32(1)
	for sent, inflight := 0, 0; sent < n; {
		for inflight >= streams {
			if err := bw.Flush(); err != nil {
				return ok, err
			}
			select {
			case <-credits:
				inflight--
			case err := <-rerr:
				return ok, fmt.Errorf("reader ended early: %v", err)
			}
		}
	drain:
		for {
			select {
			case <-credits:
				inflight--
			default:
				break drain
			}
		}
		for needAck.Load() > 0 {
			needAck.Add(-1)
			frame(h2fSettings, h2flagAck, 0, nil)
		}
		ebuf.Reset()
		for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":path", path},
			{"authorization", "bearer " + jwt}, {"apns-topic", h2topic}, {"apns-push-type", "alert"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		frame(h2fHeaders, h2flagEndHeaders, sid, ebuf.Bytes())
		frame(h2fData, h2flagEndStream, sid, h2payload)
		if flush {
			if err := bw.Flush(); err != nil {
				return ok, err
			}
		}
		sid += 2
		sent++
		inflight++
	}
	if err := bw.Flush(); err != nil {
		return ok, err
	}
	if err := <-rerr; err != nil {
		return ok, err
	}
	return ok, nil
}
