package apnstest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

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
