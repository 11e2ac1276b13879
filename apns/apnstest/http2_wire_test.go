package apnstest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2/hpack"
)

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
