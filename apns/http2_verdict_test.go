package apns_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// newStdEngine starts a token-auth engine against a startStdAPNs server.
func newStdEngine(t *testing.T, url string, pki *apnstest.PKI, opts ...apns.Option) *apns.HTTP2Engine {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	opts = append([]apns.Option{apns.WithRootCAs(pki.RootCAs), apns.WithTopic(h2Topic),
		apns.WithRetryBackoff(time.Millisecond, 5*time.Millisecond)}, opts...)
	e, err := apns.NewHTTP2Engine(url, apns.TokenAuth(key, "ABCDE12345", "TEAM123456"), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { closeH2Engine(t, e) })
	return e
}

// answerFunc is a handler that reads the request body and answers with
// status, content type and body.
func answerFunc(f func(r *http.Request) (status int, ctype, body string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = r.Body.Read(make([]byte, 4096))
		status, ctype, body := f(r)
		if ctype != "" {
			w.Header().Set("Content-Type", ctype)
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

// TestHTTP2NonAPNsAnswersAreFaults: answers that are not Apple's verdict
// (a proxy's 502 or 504, an HTML 404 from a wrong URL or a captive portal,
// a 400 or 403 whose body is not Apple's JSON with a reason) are engine
// faults: retried with back-off, counted in Stats.Faults by status, never
// a rejection; once the path is right again the notification is delivered.
func TestHTTP2NonAPNsAnswersAreFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, ctype, body string
		status            int
	}{
		{"404 HTML", "text/html", "<html><body><h1>Not Found</h1></body></html>", 404},
		{"502 from a proxy", "text/plain", "Bad Gateway", 502},
		{"504 empty", "", "", 504},
		{"400 not JSON", "text/plain", "Bad Request", 400},
		{"400 JSON without reason", "application/json", `{"error":"BadDeviceToken"}`, 400},
		{"400 JSON reason not a string", "application/json", `{"reason":42}`, 400},
		{"400 empty reason", "application/json", `{"reason":""}`, 400},
		{"403 HTML", "text/html", "<html>Forbidden</html>", 403},
		{"410 known reason of another status", "application/json", `{"reason":"BadDeviceToken"}`, 410},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const faulty = 2
			var n atomic.Int64
			url, pki := startStdAPNs(t, answerFunc(func(*http.Request) (int, string, string) {
				if n.Add(1) <= faulty {
					return tt.status, tt.ctype, tt.body
				}
				return 200, "", ""
			}))
			col := newH2Collector(t, 1)
			e := newStdEngine(t, url, pki, apns.WithOutcomeFunc(col.fn), apns.WithMaxRetries(faulty))
			require.NoError(t, e.Send(context.Background(), &apns.Notification{Token: h2Token(1), Payload: h2Payload}, 1))
			o := col.wait(1)[0]
			require.NoError(t, o.Err)
			require.Equal(t, faulty+1, o.Attempts)
			require.Equal(t, map[int]uint64{tt.status: faulty}, e.Stats().Faults)
		})
	}
}

// TestHTTP2NonAPNsAnswerExhaustsRetries: a fault that lasts fails the
// notification with ErrRetriesExhausted wrapping a *StatusError that
// matches ErrNotAPNs and carries the status and the body's first 128
// bytes, sanitized; the WARN log says so, not once per request.
func TestHTTP2NonAPNsAnswerExhaustsRetries(t *testing.T) {
	t.Parallel()
	body := "<html>\x1b[31m" + strings.Repeat("portal ", 100) + "</html>"
	url, pki := startStdAPNs(t, answerFunc(func(*http.Request) (int, string, string) {
		return 404, "text/html", body
	}))
	const n = 50
	col := newH2Collector(t, n)
	var logs syncBuffer
	e := newStdEngine(t, url, pki, apns.WithOutcomeFunc(col.fn), apns.WithMaxRetries(2),
		apns.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	for i := range n {
		require.NoError(t, e.Send(context.Background(), &apns.Notification{Token: h2Token(i), Payload: h2Payload}, i))
	}
	start := time.Now()
	for _, o := range col.wait(n) {
		require.ErrorIs(t, o.Err, apns.ErrRetriesExhausted)
		require.ErrorIs(t, o.Err, apns.ErrNotAPNs)
		_, rejected := o.Rejection()
		require.False(t, rejected, "a proxy's answer is no verdict")
		var se *apns.StatusError
		require.ErrorAs(t, o.Err, &se)
		require.Equal(t, 404, se.HTTPStatus)
		require.True(t, se.NotAPNs)
		require.Len(t, se.Body, 128)
		require.True(t, strings.HasPrefix(se.Body, "<html>?[31mportal portal"), se.Body)
		require.Equal(t, 3, o.Attempts)
	}
	elapsed := time.Since(start)
	require.Equal(t, map[int]uint64{404: 3 * n}, e.Stats().Faults)
	lines := strings.Count(logs.String(), `msg="apns answer is not an apns verdict: retrying"`)
	require.GreaterOrEqual(t, lines, 1)
	require.LessOrEqual(t, lines, 2+int(elapsed/time.Second), "at most one a second, not %d for %d faults", lines, 3*n)
	require.Contains(t, logs.String(), "status=404")
	require.Contains(t, logs.String(), `body="<html>?[31mportal`)
}

// TestHTTP2ErrorBodyBehindPadding: Apple's reason after 20 KB of other JSON
// is still read (bodies are kept up to 64 KiB): a bad-token rejection.
func TestHTTP2ErrorBodyBehindPadding(t *testing.T) {
	t.Parallel()
	body := `{"pad":"` + strings.Repeat("x", 20<<10) + `","reason":"BadDeviceToken"}`
	url, pki := startStdAPNs(t, answerFunc(func(*http.Request) (int, string, string) {
		return 400, "application/json", body
	}))
	col := newH2Collector(t, 1)
	e := newStdEngine(t, url, pki, apns.WithOutcomeFunc(col.fn))
	require.NoError(t, e.Send(context.Background(), &apns.Notification{Token: h2Token(1), Payload: h2Payload}, 1))
	o := col.wait(1)[0]
	rej, ok := o.Rejection()
	require.True(t, ok, "%v", o.Err)
	require.Equal(t, "BadDeviceToken", rej.Reason)
	require.ErrorIs(t, o.Err, apns.ErrBadDeviceToken)
	require.Nil(t, e.Stats().Faults)
}

// TestHTTP2CredentialsGateDoesNotFlap: after a 403 InvalidProviderToken,
// 200s for requests written before it do not reopen the gate; only the
// probe, written after it closed, does, and the probe's period runs on the
// engine's clock (WithClock).
func TestHTTP2CredentialsGateDoesNotFlap(t *testing.T) {
	t.Parallel()
	const inFlight = 20
	var (
		release  = make(chan struct{})
		arrived  atomic.Int64
		refused  atomic.Bool
		mu       sync.Mutex
		afterGen []string // paths answered 200 after the refusal
	)
	bad := h2Token(666)
	badPath := "/3/device/" + bad.String()
	url, pki := startStdAPNs(t, answerFunc(func(r *http.Request) (int, string, string) {
		if r.URL.Path == badPath {
			refused.Store(true)
			return 403, "application/json", `{"reason":"InvalidProviderToken"}`
		}
		if !refused.Load() {
			arrived.Add(1)
			<-release // in flight across the refusal
		}
		mu.Lock()
		afterGen = append(afterGen, r.URL.Path)
		mu.Unlock()
		return 200, "", ""
	}))
	clock := newH2Clock()
	col := newH2Collector(t, inFlight+2)
	e := newStdEngine(t, url, pki, apns.WithOutcomeFunc(col.fn), apns.WithConns(1), apns.WithClock(clock.Now))
	ctx := context.Background()
	for i := range inFlight {
		require.NoError(t, e.Send(ctx, &apns.Notification{Token: h2Token(i), Payload: h2Payload}, i))
	}
	require.Eventually(t, func() bool { return arrived.Load() == inFlight }, 10*time.Second, time.Millisecond)
	require.NoError(t, e.Send(ctx, &apns.Notification{Token: bad, Payload: h2Payload}, "bad"))
	o := col.wait(1)[0]
	require.Equal(t, "bad", o.Ref)
	require.ErrorIs(t, o.Err, apns.ErrCredentials)

	close(release) // the 200s of requests written before the refusal
	for _, o := range col.wait(inFlight) {
		require.NoError(t, o.Err, "delivered: the 200 stands")
	}
	require.ErrorIs(t, e.Stats().CredentialsErr, apns.ErrCredentials, "old 200s do not reopen the gate")
	require.ErrorIs(t, e.Send(ctx, &apns.Notification{Token: h2Token(100), Payload: h2Payload}, 100), apns.ErrCredentials)

	// No probe until the engine's clock passes the probe period; then one
	// goes, is answered 200, and opens the gate.
	clock.Advance(29 * time.Second)
	require.ErrorIs(t, e.Send(ctx, &apns.Notification{Token: h2Token(101), Payload: h2Payload}, 101), apns.ErrCredentials)
	clock.Advance(2 * time.Second)
	require.NoError(t, e.Send(ctx, &apns.Notification{Token: h2Token(102), Payload: h2Payload}, 102))
	o = col.wait(1)[0]
	require.Equal(t, 102, o.Ref)
	require.NoError(t, o.Err)
	require.NoError(t, e.Stats().CredentialsErr)
	require.NoError(t, e.Send(ctx, &apns.Notification{Token: h2Token(103), Payload: h2Payload}, 103))
	require.NoError(t, col.wait(1)[0].Err)
}

// TestHTTP2GracefulGoAwayIsNotAFailure: a GOAWAY(NO_ERROR) drain is logged
// at INFO, nothing is lost, and the engine logs no WARN "apns connection
// failed" for it.
func TestHTTP2GracefulGoAwayIsNotAFailure(t *testing.T) {
	t.Parallel()
	s := newH2Server(t)
	col := newH2Collector(t, 10)
	var logs syncBuffer
	e := newH2Engine(t, s, apns.WithOutcomeFunc(col.fn), apns.WithConns(1),
		apns.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	ctx := context.Background()
	for round := range 3 {
		for i := range 10 {
			require.NoError(t, e.Send(ctx, &apns.Notification{Token: h2Token(i), Payload: h2Payload}, round*10+i))
		}
		for _, o := range col.wait(10) {
			require.NoError(t, o.Err)
		}
		s.GoAway()
		require.Eventually(t, func() bool { return s.Conns() == round+2 }, 10*time.Second, time.Millisecond,
			"the drained connection is replaced")
	}
	require.Contains(t, logs.String(), `level=INFO msg="http2 goaway received"`)
	require.Contains(t, logs.String(), "code=NO_ERROR")
	require.NotContains(t, logs.String(), "level=WARN")
}

// rawAnswerer is a raw HTTP/2 server over TLS for the engine: each
// connection gets the SETTINGS settings(serial) returns (a connection whose
// settings are invalid is expected to be dropped by the client), then each
// request is answered 200 with the extra header fields fields(serial,
// stream) returns.
func rawAnswerer(t *testing.T, settings func(serial int) []http2.Setting,
	fields func(serial int, stream uint32) []hpack.HeaderField) (string, *apnstest.PKI) {
	t.Helper()
	pki := apnstest.MustPKI()
	cfg := pki.ServerTLS(false)
	cfg.NextProtos = []string{"h2"}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	serveRaw(t, ln, func(serial int, c net.Conn) {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		p := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(c, p); err != nil {
			return
		}
		fr := http2.NewFramer(c, c)
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		if fr.WriteSettings(settings(serial)...) != nil {
			return
		}
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			var id uint32
			switch f := f.(type) {
			case *http2.HeadersFrame:
				if f.StreamEnded() {
					id = f.StreamID
				}
			case *http2.DataFrame:
				if f.StreamEnded() {
					id = f.StreamID
				}
			case *http2.SettingsFrame:
				if !f.IsAck() {
					_ = fr.WriteSettingsAck()
				}
			}
			if id == 0 {
				continue
			}
			hb.Reset()
			_ = enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
			for _, hf := range fields(serial, id) {
				_ = enc.WriteField(hf)
			}
			block := hb.Bytes()
			first := block[:min(len(block), 16384)]
			rest := block[len(first):]
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first,
				EndHeaders: len(rest) == 0, EndStream: true})
			for len(rest) > 0 {
				frag := rest[:min(len(rest), 16384)]
				rest = rest[len(frag):]
				_ = fr.WriteContinuation(id, len(rest) == 0, frag)
			}
		}
	})
	return "https://" + ln.Addr().String(), pki
}

// TestHTTP2HostileConnections: a server whose first connection sends an
// invalid SETTINGS (MAX_FRAME_SIZE 0, which once made the writer loop
// forever) is dropped and replaced; on the next one, a 100 KB response
// header fails only its stream, which is sent again; every notification is
// delivered once, and no rejection.
func TestHTTP2HostileConnections(t *testing.T) {
	t.Parallel()
	url, pki := rawAnswerer(t, func(serial int) []http2.Setting {
		if serial == 1 {
			return []http2.Setting{{ID: http2.SettingMaxFrameSize, Val: 0}}
		}
		return nil
	}, func(serial int, stream uint32) []hpack.HeaderField {
		if serial == 2 && stream == 3 {
			return []hpack.HeaderField{{Name: "x-big", Value: strings.Repeat("b", 100<<10)}}
		}
		return []hpack.HeaderField{{Name: "apns-id", Value: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"}}
	})
	const n = 20
	col := newH2Collector(t, n)
	e := newStdEngine(t, url, pki, apns.WithOutcomeFunc(col.fn), apns.WithConns(1))
	for i := range n {
		require.NoError(t, e.Send(context.Background(), &apns.Notification{Token: h2Token(i), Payload: h2Payload}, i))
	}
	attempts := 0
	for _, o := range col.wait(n) {
		require.NoError(t, o.Err, o.Ref)
		require.Equal(t, "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", o.APNsID)
		attempts += o.Attempts
	}
	require.Equal(t, n+1, attempts, "one stream failed by its header, sent again")
	require.Zero(t, col.dups)
}

// TestHTTP2CredentialsGateOpensOnNewerToken: a 200 for a request written
// before the gate closed opens it when that request carried a newer
// provider token than the one APNs refused.
func TestHTTP2CredentialsGateOpensOnNewerToken(t *testing.T) {
	t.Parallel()
	oldTok, newTok := h2Token(1), h2Token(2)
	release := map[string]chan struct{}{oldTok.String(): make(chan struct{}), newTok.String(): make(chan struct{})}
	arrived := make(chan string, 2)
	url, pki := startStdAPNs(t, answerFunc(func(r *http.Request) (int, string, string) {
		tok := strings.TrimPrefix(r.URL.Path, "/3/device/")
		arrived <- tok
		<-release[tok]
		if tok == oldTok.String() {
			return 403, "application/json", `{"reason":"InvalidProviderToken"}`
		}
		return 200, "", ""
	}))
	clock := newH2Clock()
	col := newH2Collector(t, 2)
	e := newStdEngine(t, url, pki, apns.WithOutcomeFunc(col.fn), apns.WithConns(1), apns.WithClock(clock.Now))
	ctx := context.Background()
	require.NoError(t, e.Send(ctx, &apns.Notification{Token: oldTok, Payload: h2Payload}, "old"))
	require.Equal(t, oldTok.String(), <-arrived)
	clock.Advance(apns.TokenRefreshAfter + time.Minute) // the next request mints a new token
	require.NoError(t, e.Send(ctx, &apns.Notification{Token: newTok, Payload: h2Payload}, "new"))
	require.Equal(t, newTok.String(), <-arrived)

	close(release[oldTok.String()])
	o := col.wait(1)[0]
	require.ErrorIs(t, o.Err, apns.ErrCredentials)
	require.ErrorIs(t, e.Stats().CredentialsErr, apns.ErrCredentials)
	close(release[newTok.String()])
	require.NoError(t, col.wait(1)[0].Err)
	require.NoError(t, e.Stats().CredentialsErr, "the newer token works: intake resumes")
}
