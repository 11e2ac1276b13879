package apnstest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"

	"github.com/jetpush/apns-worker/apns"
)

// h2raw is what a client sees of one response, read off the wire.
type h2raw struct {
	status string
	header map[string]string
	body   []byte
	rst    uint32 // RST_STREAM code, with reset
	reset  bool
	frames int  // HEADERS and CONTINUATION frames of the header block
	flags  byte // of the HEADERS frame
}

// events reads frames until the connection ends, no frame comes for idle,
// or it has max events (0: no limit), and describes them in order:
// "HEADERS <sid> <status>" (once the response, body included, is whole),
// "RST <sid> <code>", "GOAWAY <last> <code>",
// "SETTINGS <id>=<val>…", "EOF", "TIMEOUT". Responses are collected into
// got by stream.
func (w *h2wire) events(idle time.Duration, got map[uint32]*h2raw, max int) []string {
	w.t.Helper()
	if got == nil {
		got = map[uint32]*h2raw{}
	}
	var ev []string
	var cont []byte // header block awaiting CONTINUATION
	for max == 0 || len(ev) < max {
		require.NoError(w.t, w.conn.SetReadDeadline(time.Now().Add(idle)))
		f, err := w.read()
		var ne net.Error
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
			return append(ev, "EOF")
		case errors.As(err, &ne) && ne.Timeout():
			return append(ev, "TIMEOUT")
		case err != nil:
			return append(ev, "ERR "+err.Error())
		}
		r := got[f.sid]
		if r == nil && f.sid != 0 {
			r = &h2raw{header: map[string]string{}}
			got[f.sid] = r
		}
		switch f.typ {
		case h2fSettings:
			if f.flags&h2flagAck != 0 {
				continue
			}
			w.write(h2fSettings, h2flagAck, 0, nil)
			s := "SETTINGS"
			for p := f.p; len(p) >= 6; p = p[6:] {
				s += fmt.Sprintf(" %d=%d", binary.BigEndian.Uint16(p), binary.BigEndian.Uint32(p[2:]))
			}
			ev = append(ev, s)
		case h2fHeaders, h2fContinuation:
			if f.typ == h2fHeaders {
				r.flags = f.flags
			}
			cont = append(cont, f.p...)
			r.frames++
			if f.flags&h2flagEndHeaders == 0 {
				continue
			}
			w.dec.SetMaxStringLength(1 << 20)
			fields, err := w.dec.DecodeFull(cont)
			require.NoError(w.t, err)
			cont = nil
			for _, hf := range fields {
				r.header[hf.Name] = hf.Value
			}
			r.status = r.header[":status"]
			if r.flags&h2flagEndStream != 0 {
				ev = append(ev, fmt.Sprintf("HEADERS %d %s", f.sid, r.status))
			}
		case h2fData:
			r.body = append(r.body, f.p...)
			if len(f.p) > 0 {
				w.write(h2fWindowUpdate, 0, 0, binary.BigEndian.AppendUint32(nil, uint32(len(f.p))))
				w.write(h2fWindowUpdate, 0, f.sid, binary.BigEndian.AppendUint32(nil, uint32(len(f.p))))
			}
			if f.flags&h2flagEndStream != 0 {
				ev = append(ev, fmt.Sprintf("HEADERS %d %s", f.sid, r.status))
			}
		case h2fRSTStream:
			r.reset, r.rst = true, binary.BigEndian.Uint32(f.p)
			ev = append(ev, fmt.Sprintf("RST %d %d", f.sid, r.rst))
		case h2fGoAway:
			ev = append(ev, fmt.Sprintf("GOAWAY %d %d", binary.BigEndian.Uint32(f.p), binary.BigEndian.Uint32(f.p[4:])))
		}
	}
	return ev
}

// take reads the next n events, waiting up to ten seconds for each frame.
func (w *h2wire) take(n int, got map[uint32]*h2raw) []string {
	return w.events(10*time.Second, got, n)
}

// untilIdle reads events until none comes for half a second: for checks
// that nothing (more) comes.
func (w *h2wire) untilIdle(got map[uint32]*h2raw) []string {
	ev := w.events(500*time.Millisecond, got, 0)
	require.Equal(w.t, "TIMEOUT", ev[len(ev)-1], "%v", ev)
	return ev[:len(ev)-1]
}

// h2ready starts a server with opts, connects to it with a bare client that
// has exchanged SETTINGS, and returns a provider token it accepts.
func h2ready(t *testing.T, opts ...HTTP2Option) (*HTTP2Server, *h2wire, string) {
	t.Helper()
	s := NewHTTP2Server(opts...)
	t.Cleanup(s.Close)
	w := h2dial(t, s)
	w.settings()
	return s, w, h2jwt(t, s, time.Now())
}

func TestHTTP2ServerCloseEvery(t *testing.T) {
	t.Parallel()
	s, w, jwt := h2ready(t, HTTP2CloseEvery(3))
	w.post(1, jwt)
	w.post(3, jwt)
	require.Equal(t, []string{"HEADERS 1 200", "HEADERS 3 200"}, w.take(2, nil))
	w.post(5, jwt)
	// No GOAWAY, no answer: the connection just ends (without close_notify,
	// which a TLS client reads as an unexpected EOF).
	require.Equal(t, []string{"EOF"}, w.events(5*time.Second, nil, 0))

	w = h2dial(t, s) // the count is server-wide
	w.settings()
	w.post(1, jwt)
	w.post(3, jwt)
	w.post(5, jwt)
	ev := w.events(5*time.Second, nil, 0)
	require.Equal(t, []string{"HEADERS 1 200", "HEADERS 3 200", "EOF"}, ev)
	require.Equal(t, 4, s.Accepted())
	require.Equal(t, HTTP2FaultStats{SilentCloses: 2}, s.FaultStats())
}

func TestHTTP2ServerCloseRandom(t *testing.T) {
	t.Parallel()
	// Which requests close a connection: replayed by the seed, spaced by
	// [n/2, 3n/2].
	run := func(seed uint64) []int {
		s := NewHTTP2Server(HTTP2CloseRandom(6, seed))
		t.Cleanup(s.Close)
		jwt := h2jwt(t, s, time.Now())
		var closes []int
		w := h2dial(t, s)
		w.settings()
		sid := uint32(1)
		for i := 1; i <= 40; i++ {
			w.post(sid, jwt)
			sid += 2
			if ev := w.events(5*time.Second, nil, 1); ev[0] == "EOF" {
				closes = append(closes, i)
				w = h2dial(t, s)
				w.settings()
				sid = 1
			} else {
				require.Equal(t, fmt.Sprintf("HEADERS %d 200", sid-2), ev[0])
			}
		}
		require.Equal(t, 40-len(closes), s.Accepted())
		return closes
	}
	a := run(42)
	require.Equal(t, a, run(42))
	require.GreaterOrEqual(t, len(a), 40/9)
	prev := 0
	for _, c := range a {
		require.True(t, c-prev >= 3 && c-prev <= 9, "intervals in [3, 9]: %v", a)
		prev = c
	}
}

func TestHTTP2ServerGoAwayCode(t *testing.T) {
	t.Parallel()
	t.Run("internal error, last read", func(t *testing.T) {
		t.Parallel()
		s, w, jwt := h2ready(t, HTTP2GoAwayCode(2, http2.ErrCodeInternal, GoAwayLastRead))
		w.post(1, jwt)
		require.Equal(t, []string{"HEADERS 1 200"}, w.take(1, nil))
		w.post(3, jwt)
		require.Equal(t, []string{"GOAWAY 3 2", "EOF"}, w.events(5*time.Second, nil, 0))
		require.Equal(t, 1, s.Accepted())
		require.Equal(t, HTTP2FaultStats{GoAways: 1}, s.FaultStats())
	})
	t.Run("no error, last zero", func(t *testing.T) {
		t.Parallel()
		s, w, jwt := h2ready(t, HTTP2GoAwayCode(2, http2.ErrCodeNo, GoAwayLastZero), HTTP2Latency(time.Hour))
		w.post(1, jwt) // waits an hour for its answer
		w.post(3, jwt)
		require.Equal(t, []string{"GOAWAY 0 0", "EOF"}, w.events(5*time.Second, nil, 0))
		require.Zero(t, s.Accepted(), "stream 3 was dropped before it was processed")
	})
}

func TestHTTP2ServerResetAnswer(t *testing.T) {
	t.Parallel()
	s := NewHTTP2Server(
		HTTP2InjectAnswer(1, HTTP2Answer{}), // a pass
		HTTP2InjectAnswer(2, ResetAnswer(http2.ErrCodeInternal)),
	)
	t.Cleanup(s.Close)
	s.InjectAnswer(1, ResetAnswer(http2.ErrCodeRefusedStream))
	jwt := h2jwt(t, s, time.Now())
	w := h2dial(t, s)
	w.settings()
	for sid := uint32(1); sid <= 9; sid += 2 {
		w.post(sid, jwt)
	}
	require.Equal(t, []string{"HEADERS 1 200", "RST 3 2", "RST 5 2", "RST 7 7", "HEADERS 9 200"}, w.take(5, nil))
	require.Equal(t, 2, s.Accepted())
	require.Equal(t, HTTP2FaultStats{Answers: 3}, s.FaultStats(), "passes are not faults")
}

// h2get posts a notification with net/http and returns the raw response.
func h2do(t *testing.T, cl *http.Client, s *HTTP2Server, auth http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL+h2path(h2tok), bytes.NewReader(h2payload))
	require.NoError(t, err)
	req.Header = auth.Clone()
	req.Header.Set("apns-topic", h2topic)
	res, err := cl.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res, b
}

func TestHTTP2ServerForeignAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		ans    HTTP2Answer
		status int
		ctype  string
		body   string // a substring
	}{
		{"html 404", HTMLAnswer(404), 404, "text/html; charset=utf-8", "<html>"},
		{"html 200", HTMLAnswer(200), 200, "text/html; charset=utf-8", "<html>"},
		{"proxy 502", ProxyAnswer(502), 502, "text/plain; charset=utf-8", "502 upstream"},
		{"proxy 504", ProxyAnswer(504), 504, "text/plain; charset=utf-8", "504 upstream"},
		{"400 not json", TextAnswer(400, "Bad Request"), 400, "text/plain", "Bad Request"},
		{"apple 503", ReasonAnswer(503, "ServiceUnavailable"), 503, "application/json", `{"reason":"ServiceUnavailable"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := NewHTTP2Server(HTTP2InjectAnswer(2, tt.ans))
			t.Cleanup(s.Close)
			cl := h2client(t, s)
			auth := h2auth(h2jwt(t, s, time.Now()))
			for range 2 {
				res, b := h2do(t, cl, s, auth)
				require.Equal(t, tt.status, res.StatusCode)
				require.Equal(t, tt.ctype, res.Header.Get("content-type"))
				require.Contains(t, string(b), tt.body)
			}
			res, b := h2do(t, cl, s, auth)
			require.Equal(t, 200, res.StatusCode, "%s", b)
			require.Empty(t, b)
			require.Equal(t, 1, s.Accepted(), "a foreign answer is not an acceptance")
			want := 2
			if tt.status == 200 {
				want++ // and the server's own
			}
			require.Equal(t, want, s.Statuses()[tt.status])
		})
	}
}

func TestHTTP2ServerAnswerWindow(t *testing.T) {
	t.Parallel()
	const window = 200 * time.Millisecond
	s := NewHTTP2Server(HTTP2InjectAnswerFor(window, ProxyAnswer(502)))
	t.Cleanup(s.Close)
	cl := h2client(t, s)
	auth := h2auth(h2jwt(t, s, time.Now()))
	start := time.Now() // the window opens at the first request, a bit later
	res, _ := h2do(t, cl, s, auth)
	require.Equal(t, 502, res.StatusCode)
	var statuses []int
	require.Eventually(t, func() bool {
		res, _ := h2do(t, cl, s, auth)
		statuses = append(statuses, res.StatusCode)
		return res.StatusCode == 200
	}, 5*time.Second, 10*time.Millisecond)
	require.GreaterOrEqual(t, time.Since(start), window)
	for _, st := range statuses[:len(statuses)-1] {
		require.Equal(t, 502, st, "502 until the window closes, then 200: %v", statuses)
	}
}

func TestHTTP2ServerOversized(t *testing.T) {
	t.Parallel()
	s, w, jwt := h2ready(t,
		HTTP2InjectAnswer(1, PaddedAnswer(20<<10)),
		HTTP2InjectAnswer(1, PaddedReasonAnswer(400, "BadDeviceToken", 20<<10, true)),
		HTTP2InjectAnswer(1, PaddedReasonAnswer(400, "BadDeviceToken", 100<<10, false)),
	)
	for sid := uint32(1); sid <= 7; sid += 2 {
		w.post(sid, jwt)
	}
	got := map[uint32]*h2raw{}
	// Stream 7 may overtake stream 5, whose 100 KB body waits for windows.
	require.ElementsMatch(t, []string{"HEADERS 1 200", "HEADERS 3 400", "HEADERS 5 400", "HEADERS 7 200"}, w.take(4, got))

	require.Equal(t, 20<<10, len(got[1].header["x-padding"]))
	require.Equal(t, 2, s.Accepted(), "a padded 200 is APNs taking the notification")
	require.Equal(t, 2, got[1].frames, "a 20 KB block takes HEADERS and CONTINUATION")
	for sid, n := range map[uint32]int{3: 20 << 10, 5: 100 << 10} {
		var j struct{ Reason string }
		require.NoError(t, json.Unmarshal(got[sid].body, &j))
		require.Equal(t, "BadDeviceToken", j.Reason)
		require.Equal(t, n+len(`{"reason":"BadDeviceToken"}`), len(got[sid].body))
	}
	require.True(t, strings.HasPrefix(string(got[3].body), "    "), "padding before")
	require.True(t, strings.HasPrefix(string(got[5].body), "{"), "padding after")
	require.Empty(t, got[7].header["x-padding"])
}

func TestHTTP2ServerAnswerFunc(t *testing.T) {
	t.Parallel()
	s, w, jwt := h2ready(t, HTTP2AnswerFunc(func(tok apns.Token) (HTTP2Answer, bool) {
		return PaddedReasonAnswer(400, "BadDeviceToken", 20<<10, true), tok[0] == h2tok[0]
	}))
	w.post(1, jwt)
	got := map[uint32]*h2raw{}
	require.Equal(t, []string{"HEADERS 1 400"}, w.take(1, got))
	require.Equal(t, 20<<10+len(`{"reason":"BadDeviceToken"}`), len(got[1].body))
	require.Zero(t, s.Accepted())
}

func TestHTTP2ServerSendSettings(t *testing.T) {
	t.Parallel()
	maxFrame0 := []http2.Setting{{ID: http2.SettingMaxFrameSize, Val: 0}}
	t.Run("at start, first connection", func(t *testing.T) {
		t.Parallel()
		s := NewHTTP2Server(HTTP2SendSettings(HTTP2SettingsFault{Settings: maxFrame0, Conns: 1}))
		t.Cleanup(s.Close)
		w := h2dial(t, s)
		ev := w.take(2, nil)
		require.Equal(t, "SETTINGS 5=0", ev[1])
		w = h2dial(t, s)
		require.Len(t, w.take(1, nil), 1) // its SETTINGS
		require.Empty(t, w.untilIdle(nil), "the second connection is spared")
		require.Equal(t, HTTP2FaultStats{Settings: 1}, s.FaultStats())
	})
	t.Run("mid-connection", func(t *testing.T) {
		t.Parallel()
		s := NewHTTP2Server(HTTP2SendSettings(HTTP2SettingsFault{
			Settings: []http2.Setting{
				{ID: http2.SettingInitialWindowSize, Val: 1 << 31},
				{ID: http2.SettingEnablePush, Val: 2},
				{ID: http2.SettingMaxFrameSize, Val: 1 << 24},
			},
			AfterRequests: 2,
			Conns:         1, // the first connection to read 2 requests
		}))
		t.Cleanup(s.Close)
		jwt := h2jwt(t, s, time.Now())
		idle := h2dial(t, s) // the first connection opened never gets there
		idle.settings()
		w := h2dial(t, s)
		w.settings()
		require.Eventually(t, func() bool { return s.Conns() == 2 }, 5*time.Second, time.Millisecond)
		w.post(1, jwt)
		require.Equal(t, []string{"HEADERS 1 200"}, w.take(1, nil))
		w.post(3, jwt)
		require.Equal(t, []string{"SETTINGS 4=2147483648 2=2 5=16777216", "HEADERS 3 200"}, w.take(2, nil))
		w.write(h2fGoAway, 0, 0, []byte{0, 0, 0, 3, 0, 0, 0, byte(http2.ErrCodeFlowControl)})
		require.Equal(t, []string{"GOAWAY 3 0", "EOF"}, w.events(5*time.Second, nil, 0))
		require.Equal(t, map[http2.ErrCode]int{http2.ErrCodeFlowControl: 1}, s.ClientGoAways())
		require.Empty(t, idle.untilIdle(nil), "the idle connection got nothing")
	})
}

func TestHTTP2ServerCredentialsPhase(t *testing.T) {
	t.Parallel()
	// Requests read before the phase wait for the latency; the 403s go at
	// once, so 200s arrive after them, as from APNs with requests in flight.
	_, w, jwt := h2ready(t,
		HTTP2Latency(100*time.Millisecond),
		HTTP2InjectAnswer(2, HTTP2Answer{}),
		HTTP2InjectAnswer(2, CredentialsAnswer("ExpiredProviderToken")),
	)
	for sid := uint32(1); sid <= 9; sid += 2 {
		w.post(sid, jwt)
	}
	got := map[uint32]*h2raw{}
	require.Equal(t, []string{"HEADERS 5 403", "HEADERS 7 403", "HEADERS 1 200", "HEADERS 3 200", "HEADERS 9 200"},
		w.take(5, got))
	require.JSONEq(t, `{"reason":"ExpiredProviderToken"}`, string(got[5].body))
}

func TestHTTP2ServerStallAfter(t *testing.T) {
	t.Parallel()
	s, w, jwt := h2ready(t, HTTP2StallAfter(2))
	w.post(1, jwt)
	require.Equal(t, []string{"HEADERS 1 200"}, w.take(1, nil))
	w.post(3, jwt)
	w.write(h2fPing, 0, 0, []byte("12345678"))
	w.post(5, jwt)
	require.Empty(t, w.untilIdle(nil), "a stalled connection answers nothing, not even PING")

	w = h2dial(t, s) // once: the next connection is served
	w.settings()
	w.post(1, jwt)
	require.Equal(t, []string{"HEADERS 1 200"}, w.take(1, nil))
	require.Equal(t, 2, s.Accepted())
	require.Equal(t, HTTP2FaultStats{Stalls: 1}, s.FaultStats())
}

func TestHTTP2AnswerCheck(t *testing.T) {
	t.Parallel()
	_, err := ListenHTTP2(HTTP2InjectAnswer(1, HTTP2Answer{Status: 99, Body: []byte("x")}))
	require.Error(t, err)
	_, err = ListenHTTP2(HTTP2InjectAnswerFor(0, HTMLAnswer(404)))
	require.Error(t, err)
	_, err = ListenHTTP2(HTTP2SendSettings(HTTP2SettingsFault{}))
	require.Error(t, err)
	_, err = ListenHTTP2(HTTP2CloseEvery(0))
	require.Error(t, err)
	require.Panics(t, func() { (&HTTP2Server{}).InjectAnswer(1, HTTP2Answer{Status: 700}) })
}
