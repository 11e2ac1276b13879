package h2conn_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/jetpush/apns-worker/apns/internal/h2conn"
)

var payload = []byte(`{"hello":"world"}`)

// requireGoAway runs a peer that sends settings, reads one request, then
// does misbehave: the client must answer with GOAWAY carrying code, end
// Serve with that connection error and hand the request back as lost.
func requireGoAway(t *testing.T, cfg h2conn.Config[*testReq], settings []http2.Setting, misbehave func(p *peer, id uint32), code http2.ErrCode) {
	t.Helper()
	got := make(chan http2.ErrCode, 1)
	c, err := startPair(t, cfg, func(p *peer) {
		p.settings(settings...)
		ids, _ := p.requests(1)
		misbehave(p, ids[0])
		got <- p.goAway()
		p.drain()
	})
	require.NoError(t, err)
	c.send("/1", payload)
	require.Equal(t, code, <-got)
	requireConnError(t, c.ended(), code)
	require.ErrorIs(t, c.wait(1)["/1"].err, h2conn.ErrConnLost)
}

// TestInvalidSettings: each SETTINGS value RFC 9113 §6.5.2 forbids is a
// connection error answered with GOAWAY and its code, whether it comes in
// the server preface (Handshake fails) or later (Serve ends, the requests
// in flight are handed back), and the connection ends at once.
func TestInvalidSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		setting http2.Setting
		code    http2.ErrCode
	}{
		{"MAX_FRAME_SIZE 0", http2.Setting{ID: http2.SettingMaxFrameSize, Val: 0}, http2.ErrCodeProtocol},
		{"MAX_FRAME_SIZE 16383", http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16383}, http2.ErrCodeProtocol},
		{"MAX_FRAME_SIZE 2^24", http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 24}, http2.ErrCodeProtocol},
		{"INITIAL_WINDOW_SIZE 2^31", http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31}, http2.ErrCodeFlowControl},
		{"ENABLE_PUSH 2", http2.Setting{ID: http2.SettingEnablePush, Val: 2}, http2.ErrCodeProtocol},
		{"ENABLE_PUSH 1 from a server", http2.Setting{ID: http2.SettingEnablePush, Val: 1}, http2.ErrCodeProtocol},
	}
	for _, tt := range tests {
		t.Run("preface "+tt.name, func(t *testing.T) {
			t.Parallel()
			got := make(chan http2.ErrCode, 1)
			_, err := startPair(t, h2conn.Config[*testReq]{}, func(p *peer) {
				p.settings(tt.setting)
				got <- p.goAway()
			})
			requireConnError(t, err, tt.code)
			require.Equal(t, tt.code, <-got)
		})
		t.Run("later "+tt.name, func(t *testing.T) {
			t.Parallel()
			requireGoAway(t, h2conn.Config[*testReq]{}, nil, func(p *peer, _ uint32) {
				p.settings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 10}, tt.setting)
			}, tt.code)
		})
	}
}

// TestSettingsWindowOverflow: a new INITIAL_WINDOW_SIZE that pushes an open
// stream's window past 2^31-1 is a FLOW_CONTROL_ERROR.
func TestSettingsWindowOverflow(t *testing.T) {
	t.Parallel()
	requireGoAway(t, h2conn.Config[*testReq]{}, nil, func(p *peer, id uint32) {
		require.NoError(t, p.fr.WriteWindowUpdate(id, 1<<31-1-65535)) // the stream's window near the maximum
		p.settings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535 + 100})
	}, http2.ErrCodeFlowControl)
}

// TestAdvertisesMaxHeaderListSize: the client's SETTINGS carry the limit,
// push off, and its receive window.
func TestAdvertisesMaxHeaderListSize(t *testing.T) {
	t.Parallel()
	got := make(chan map[http2.SettingID]uint32, 1)
	_, err := startPair(t, h2conn.Config[*testReq]{MaxHeaderListSize: 12345}, func(p *peer) {
		p.settings()
		for {
			if sf, ok := p.next().(*http2.SettingsFrame); ok && !sf.IsAck() {
				m := map[http2.SettingID]uint32{}
				_ = sf.ForeachSetting(func(s http2.Setting) error { m[s.ID] = s.Val; return nil })
				got <- m
				break
			}
		}
		p.drain()
	})
	require.NoError(t, err)
	require.Equal(t, map[http2.SettingID]uint32{
		http2.SettingMaxHeaderListSize: 12345,
		http2.SettingEnablePush:        0,
		http2.SettingInitialWindowSize: 1 << 20,
	}, <-got)
}

// TestOversizedHeaderFailsOneStream: a response header block over the
// advertised MAX_HEADER_LIST_SIZE fails that stream only (RST_STREAM, a
// StreamError); the streams around it complete, and the hpack table stays
// in sync (a field indexed inside the oversized block is used after it).
func TestOversizedHeaderFailsOneStream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		limit uint32
		size  int
	}{
		{"20 KB over a 16 KiB limit", 16 << 10, 20 << 10},
		{"100 KB over the default limit", 0, 100 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reset := make(chan http2.ErrCode, 1)
			c, err := startPair(t, h2conn.Config[*testReq]{MaxHeaderListSize: tt.limit, KeepHeaders: []string{"x-after"}}, func(p *peer) {
				p.settings()
				ids, _ := p.requests(3)
				big := strings.Repeat("b", tt.size)
				p.headers(ids[1], p.block("200",
					hpack.HeaderField{Name: "x-after", Value: "kept"},
					hpack.HeaderField{Name: "x-big", Value: big}), true)
				p.respond(ids[0], "200", nil, hpack.HeaderField{Name: "x-after", Value: "kept"})
				p.respond(ids[2], "400", []byte("after"), hpack.HeaderField{Name: "x-after", Value: "kept"})
				for {
					if rs, ok := p.next().(*http2.RSTStreamFrame); ok {
						require.Equal(t, ids[1], rs.StreamID)
						reset <- rs.ErrCode
						break
					}
				}
				p.drain()
			})
			require.NoError(t, err)
			c.send("/a", payload)
			c.send("/big", payload)
			c.send("/c", payload)
			got := c.wait(3)
			var se *h2conn.StreamError
			require.ErrorAs(t, got["/big"].err, &se)
			require.ErrorIs(t, se, h2conn.ErrHeaderListTooLarge)
			require.Equal(t, http2.ErrCodeProtocol, <-reset)
			for _, path := range []string{"/a", "/c"} {
				require.NoError(t, got[path].err, path)
				require.Equal(t, "kept", got[path].r.Header(0), "hpack in sync")
			}
			require.Equal(t, 200, got["/a"].r.Status)
			require.Equal(t, 400, got["/c"].r.Status)
			require.Equal(t, "after", string(got["/c"].r.Body))
		})
	}
}

// TestHeaderBlockBeyondDecodingIsConnError: a header field too large to
// decode at all (beyond 4 × the list limit) cannot be skipped without
// losing hpack's state: a connection error COMPRESSION_ERROR, with GOAWAY.
func TestHeaderBlockBeyondDecodingIsConnError(t *testing.T) {
	t.Parallel()
	requireGoAway(t, h2conn.Config[*testReq]{MaxHeaderListSize: 1024}, nil, func(p *peer, id uint32) {
		p.headers(id, p.block("200", hpack.HeaderField{Name: "x-big", Value: strings.Repeat("b", 5000)}), true)
	}, http2.ErrCodeCompression)
}

// TestResponseBodyLimit: an error body is kept whole up to MaxBody (64 KiB
// by default) and cut there, without error, beyond it; the window is
// granted back as it is read, so a body larger than the initial window
// flows.
func TestResponseBodyLimit(t *testing.T) {
	t.Parallel()
	body20 := bytes.Repeat([]byte("p"), 20<<10)
	body2M := bytes.Repeat([]byte("q"), 2<<20) // > the 1 MiB windows the client grants
	c, err := startPair(t, h2conn.Config[*testReq]{}, func(p *peer) {
		p.settings()
		ids, _ := p.requests(2)
		p.respond(ids[0], "400", body20)
		p.respond(ids[1], "400", body2M)
		p.drain()
	})
	require.NoError(t, err)
	c.send("/20k", payload)
	c.send("/2m", payload)
	got := c.wait(2)
	require.NoError(t, got["/20k"].err)
	require.Equal(t, body20, got["/20k"].r.Body)
	require.NoError(t, got["/2m"].err)
	require.Len(t, got["/2m"].r.Body, h2conn.DefaultMaxBody)
}

// TestPingAnswered: a PING gets its ACK with the same data.
func TestPingAnswered(t *testing.T) {
	t.Parallel()
	acked := make(chan [8]byte, 1)
	_, err := startPair(t, h2conn.Config[*testReq]{}, func(p *peer) {
		p.settings()
		require.NoError(t, p.fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8}))
		for {
			if pf, ok := p.next().(*http2.PingFrame); ok && pf.IsAck() {
				acked <- pf.Data
				break
			}
		}
		p.drain()
	})
	require.NoError(t, err)
	select {
	case d := <-acked:
		require.Equal(t, [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, d)
	case <-time.After(10 * time.Second):
		t.Fatal("PING not answered")
	}
}

// TestGoAwaySplitsStreams: after GOAWAY(NO_ERROR, last stream id), streams
// above it are handed back as refused (not processed), those up to it
// complete, and the drained connection ends cleanly.
func TestGoAwaySplitsStreams(t *testing.T) {
	t.Parallel()
	c, err := startPair(t, h2conn.Config[*testReq]{}, func(p *peer) {
		p.settings()
		ids, _ := p.requests(4)
		require.NoError(t, p.fr.WriteGoAway(ids[1], http2.ErrCodeNo, []byte("bye")))
		p.respond(ids[0], "200", nil)
		p.respond(ids[1], "200", nil)
		p.drain()
	})
	require.NoError(t, err)
	for _, path := range []string{"/1", "/2", "/3", "/4"} {
		c.send(path, payload)
	}
	got := c.wait(4)
	require.NoError(t, got["/1"].err)
	require.NoError(t, got["/2"].err)
	require.ErrorIs(t, got["/3"].err, h2conn.ErrRefused)
	require.ErrorIs(t, got["/4"].err, h2conn.ErrRefused)
	require.NoError(t, c.ended())
	require.True(t, c.conn.Clean())
	require.Equal(t, 2, c.conn.Answered())
}

// TestTinyWindows: with a 10-byte stream window and WINDOW_UPDATEs of a few
// bytes, the payload still arrives whole and in order.
func TestTinyWindows(t *testing.T) {
	t.Parallel()
	big := bytes.Repeat([]byte("0123456789"), 50)
	got := make(chan []byte, 1)
	c, err := startPair(t, h2conn.Config[*testReq]{}, func(p *peer) {
		p.settings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
		var body []byte
		var id uint32
		for len(body) < len(big) {
			switch f := p.next().(type) {
			case *http2.HeadersFrame:
				id = f.StreamID
			case *http2.DataFrame:
				body = append(body, f.Data()...)
				require.LessOrEqual(t, len(f.Data()), 10)
				require.NoError(t, p.fr.WriteWindowUpdate(id, uint32(len(f.Data()))))
				require.NoError(t, p.fr.WriteWindowUpdate(0, uint32(len(f.Data()))))
			}
		}
		got <- body
		p.respond(id, "200", nil)
		p.drain()
	})
	require.NoError(t, err)
	c.send("/big", big)
	require.NoError(t, c.wait(1)["/big"].err)
	require.Equal(t, big, <-got)
}

// TestProtocolErrorsGoAway: the peer's protocol errors end the connection
// with GOAWAY and the right code; the requests in flight are handed back.
func TestProtocolErrorsGoAway(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		write func(p *peer, id uint32)
		code  http2.ErrCode
	}{
		{"DATA on a stream never opened", func(p *peer, id uint32) {
			require.NoError(t, p.fr.WriteData(id+100, true, []byte("x")))
		}, http2.ErrCodeProtocol},
		{"HEADERS on a server stream id", func(p *peer, id uint32) {
			p.headers(2, p.block("200"), true)
		}, http2.ErrCodeProtocol},
		{"CONTINUATION without HEADERS", func(p *peer, id uint32) {
			require.NoError(t, p.fr.WriteContinuation(id, true, p.block("200")))
		}, http2.ErrCodeProtocol},
		{"DATA inside a header block", func(p *peer, id uint32) {
			require.NoError(t, p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.block("200")}))
			require.NoError(t, p.fr.WriteData(id, true, []byte("x")))
		}, http2.ErrCodeProtocol},
		{"PUSH_PROMISE", func(p *peer, id uint32) {
			require.NoError(t, p.fr.WritePushPromise(http2.PushPromiseParam{StreamID: id, PromiseID: 2,
				BlockFragment: p.block("200"), EndHeaders: true}))
		}, http2.ErrCodeProtocol},
		{"frame over 16 KiB", func(p *peer, id uint32) {
			require.NoError(t, p.fr.WriteData(id, true, make([]byte, 20000)))
		}, http2.ErrCodeFrameSize},
		{"connection window overflow", func(p *peer, id uint32) {
			require.NoError(t, p.fr.WriteWindowUpdate(0, 1<<31-1))
		}, http2.ErrCodeFlowControl},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			requireGoAway(t, h2conn.Config[*testReq]{}, nil, tt.write, tt.code)
		})
	}
}

// TestPeerResetAndRefused: RST_STREAM REFUSED_STREAM is ErrRefused, any
// other code a remote StreamError; the connection goes on.
func TestPeerResetAndRefused(t *testing.T) {
	t.Parallel()
	c, err := startPair(t, h2conn.Config[*testReq]{}, func(p *peer) {
		p.settings()
		ids, _ := p.requests(3)
		require.NoError(t, p.fr.WriteRSTStream(ids[0], http2.ErrCodeRefusedStream))
		require.NoError(t, p.fr.WriteRSTStream(ids[1], http2.ErrCodeInternal))
		p.respond(ids[2], "200", nil)
		p.drain()
	})
	require.NoError(t, err)
	c.send("/1", payload)
	c.send("/2", payload)
	c.send("/3", payload)
	got := c.wait(3)
	require.ErrorIs(t, got["/1"].err, h2conn.ErrRefused)
	var se *h2conn.StreamError
	require.True(t, errors.As(got["/2"].err, &se))
	require.True(t, se.Remote)
	require.Equal(t, http2.ErrCodeInternal, se.Code)
	require.NoError(t, got["/3"].err)
}

// TestRequestTimeout: an unanswered stream is reset and handed back with
// ErrTimeout, and the connection is probed with a PING.
func TestRequestTimeout(t *testing.T) {
	t.Parallel()
	events := make(chan string, 2)
	c, err := startPair(t, h2conn.Config[*testReq]{RequestTimeout: 100 * time.Millisecond}, func(p *peer) {
		p.settings()
		p.requests(1)
		for n := 0; n < 2; {
			switch f := p.next().(type) {
			case *http2.RSTStreamFrame:
				events <- "rst " + f.ErrCode.String()
				n++
			case *http2.PingFrame:
				if !f.IsAck() {
					events <- "ping"
					n++
					_ = p.fr.WritePing(true, f.Data)
				}
			}
		}
		p.drain()
	})
	require.NoError(t, err)
	c.send("/1", payload)
	require.ErrorIs(t, c.wait(1)["/1"].err, h2conn.ErrTimeout)
	require.ElementsMatch(t, []string{"rst CANCEL", "ping"}, []string{<-events, <-events})
}

// TestMalformedResponseFailsOneStream: a response without :status, or with
// DATA before its HEADERS, fails its own stream (RST_STREAM PROTOCOL_ERROR,
// ErrMalformed); the other stream completes.
func TestMalformedResponseFailsOneStream(t *testing.T) {
	t.Parallel()
	resets := make(chan uint32, 2)
	c, err := startPair(t, h2conn.Config[*testReq]{}, func(p *peer) {
		p.settings()
		ids, _ := p.requests(3)
		p.hb.Reset()
		_ = p.enc.WriteField(hpack.HeaderField{Name: "x-no-status", Value: "1"})
		p.headers(ids[0], bytes.Clone(p.hb.Bytes()), true)
		require.NoError(t, p.fr.WriteData(ids[1], true, []byte("body first")))
		p.respond(ids[2], "200", nil)
		for n := 0; n < 2; {
			if rs, ok := p.next().(*http2.RSTStreamFrame); ok && rs.ErrCode == http2.ErrCodeProtocol {
				resets <- rs.StreamID
				n++
			}
		}
		p.drain()
	})
	require.NoError(t, err)
	c.send("/no-status", payload)
	c.send("/data-first", payload)
	c.send("/ok", payload)
	got := c.wait(3)
	for _, path := range []string{"/no-status", "/data-first"} {
		var se *h2conn.StreamError
		require.ErrorAs(t, got[path].err, &se, path)
		require.ErrorIs(t, se, h2conn.ErrMalformed)
	}
	require.NoError(t, got["/ok"].err)
	require.ElementsMatch(t, []uint32{1, 3}, []uint32{<-resets, <-resets})
}

// TestMalformedFieldsFailOneStream: a response RFC 9113 calls malformed
// (§8.1.1, §8.2.1, §8.2.2, §8.3.2) fails its stream alone with
// ErrMalformed and RST_STREAM PROTOCOL_ERROR, however APNs-like the bytes
// that came, so that no one takes it for an answer; the well-formed ones
// beside them, including a 204 whose content-length is not its DATA and a
// response with trailers, are answers.
func TestMalformedFieldsFailOneStream(t *testing.T) {
	t.Parallel()
	type answer struct {
		fields   []hpack.HeaderField // after :status 400, unless it has :status
		body     []string            // DATA frames, the last with END_STREAM
		trailers []hpack.HeaderField // a HEADERS with END_STREAM after the DATA, if any
	}
	hf := func(kv ...string) []hpack.HeaderField {
		var fs []hpack.HeaderField
		for i := 0; i < len(kv); i += 2 {
			fs = append(fs, hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return fs
	}
	reason := `{"reason":"BadDeviceToken"}`
	malformed := map[string]answer{
		"/upper-case-name":     {fields: hf("Content-Type", "application/json"), body: []string{reason}},
		"/space-in-name":       {fields: hf("apns id", "x"), body: []string{reason}},
		"/empty-name":          {fields: hf("", "x"), body: []string{reason}},
		"/value-with-lf":       {fields: hf("apns-id", "a\nb"), body: []string{reason}},
		"/value-padded":        {fields: hf("apns-id", " a"), body: []string{reason}},
		"/connection":          {fields: hf("connection", "close"), body: []string{reason}},
		"/transfer-encoding":   {fields: hf("transfer-encoding", "chunked"), body: []string{reason}},
		"/te-gzip":             {fields: hf("te", "gzip"), body: []string{reason}},
		"/pseudo-after":        {fields: append(hf("apns-id", "x"), hpack.HeaderField{Name: ":status", Value: "400"}), body: []string{reason}},
		"/unknown-pseudo":      {fields: hf(":path", "/"), body: []string{reason}},
		"/length-short":        {fields: hf("content-length", "500"), body: []string{reason}},
		"/length-long":         {fields: hf("content-length", "5"), body: []string{reason}},
		"/length-long-frames":  {fields: hf("content-length", "20"), body: []string{reason[:10], reason[10:]}},
		"/length-no-data":      {fields: hf("content-length", "3")},
		"/length-not-a-number": {fields: hf("content-length", "-1"), body: []string{reason}},
		"/length-two-values":   {fields: hf("content-length", "27", "content-length", "28"), body: []string{reason}},
		"/pseudo-in-trailers":  {body: []string{reason}, trailers: hf(":status", "200")},
	}
	wellFormed := map[string]answer{
		"/length-right":       {fields: hf("content-length", "27"), body: []string{reason[:10], reason[10:]}},
		"/length-twice-equal": {fields: hf("content-length", "27", "content-length", "27"), body: []string{reason}},
		"/204-length":         {fields: hf(":status", "204", "content-length", "10")},
		"/te-trailers":        {fields: hf("te", "trailers"), body: []string{reason}},
		"/trailers":           {body: []string{reason}, trailers: hf("x-trailer", "1")},
	}
	var paths []string
	for path := range malformed {
		paths = append(paths, path)
	}
	for path := range wellFormed {
		paths = append(paths, path)
	}
	resets := make(chan uint32, len(paths))
	c, err := startPair(t, h2conn.Config[*testReq]{}, func(p *peer) {
		p.settings()
		ids, _ := p.requests(len(paths))
		for i, id := range ids {
			a, ok := malformed[paths[i]]
			if !ok {
				a = wellFormed[paths[i]]
			}
			p.hb.Reset()
			if len(a.fields) == 0 || a.fields[0].Name != ":status" {
				_ = p.enc.WriteField(hpack.HeaderField{Name: ":status", Value: "400"})
			}
			for _, f := range a.fields {
				_ = p.enc.WriteField(f)
			}
			p.headers(id, bytes.Clone(p.hb.Bytes()), len(a.body) == 0 && len(a.trailers) == 0)
			for j, d := range a.body {
				require.NoError(t, p.fr.WriteData(id, j == len(a.body)-1 && len(a.trailers) == 0, []byte(d)))
			}
			if len(a.trailers) > 0 {
				p.hb.Reset()
				for _, f := range a.trailers {
					_ = p.enc.WriteField(f)
				}
				p.headers(id, bytes.Clone(p.hb.Bytes()), true)
			}
		}
		for n := 0; n < len(malformed); {
			if rs, ok := p.next().(*http2.RSTStreamFrame); ok && rs.ErrCode == http2.ErrCodeProtocol {
				resets <- rs.StreamID
				n++
			}
		}
		p.drain()
	})
	require.NoError(t, err)
	for _, path := range paths {
		c.send(path, payload)
	}
	got := c.wait(len(paths))
	for path := range malformed {
		var se *h2conn.StreamError
		require.ErrorAs(t, got[path].err, &se, path)
		require.ErrorIs(t, se, h2conn.ErrMalformed, path)
		require.Equal(t, http2.ErrCodeProtocol, se.Code, path)
	}
	for path, a := range wellFormed {
		require.NoError(t, got[path].err, path)
		if len(a.body) > 0 {
			require.Equal(t, reason, string(got[path].r.Body), path)
		}
	}
	seen := map[uint32]bool{}
	for range malformed {
		seen[<-resets] = true
	}
	require.Len(t, seen, len(malformed), "one RST_STREAM a malformed response")
}

// TestResponseBeforeRequestBody: a complete response that comes while the
// payload still waits for window ends the request, and the rest of the
// payload is cancelled with RST_STREAM instead of left hanging.
func TestResponseBeforeRequestBody(t *testing.T) {
	t.Parallel()
	reset := make(chan http2.ErrCode, 1)
	c, err := startPair(t, h2conn.Config[*testReq]{}, func(p *peer) {
		p.settings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
		for {
			if h, ok := p.next().(*http2.HeadersFrame); ok {
				p.respond(h.StreamID, "413", []byte(`too large`))
				break
			}
		}
		for {
			if rs, ok := p.next().(*http2.RSTStreamFrame); ok {
				reset <- rs.ErrCode
				break
			}
		}
		p.drain()
	})
	require.NoError(t, err)
	c.send("/big", bytes.Repeat([]byte("x"), 1000))
	res := c.wait(1)["/big"]
	require.NoError(t, res.err)
	require.Equal(t, 413, res.r.Status)
	require.Equal(t, http2.ErrCodeCancel, <-reset)
}
