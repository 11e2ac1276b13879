package apnstest

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
)

func gwTok(i int) apns.Token {
	t := make(apns.Token, 32)
	binary.BigEndian.PutUint64(t[24:], uint64(i))
	return t
}

func frame(id uint32, tok apns.Token) []byte {
	return apns.AppendFrame(nil, id, &apns.Notification{Token: tok, Payload: []byte(`{"aps":{}}`)})
}

// dialGateway connects to gw with cert (the gateway's own by default).
func dialGateway(t *testing.T, gw *Gateway, cert ...tls.Certificate) *tls.Conn {
	t.Helper()
	c := gw.ClientCert()
	if len(cert) > 0 {
		c = cert[0]
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", gw.Addr,
		&tls.Config{Certificates: []tls.Certificate{c}, RootCAs: gw.RootCAs(), ServerName: "127.0.0.1"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	return conn
}

// readAnswer reads what the gateway says before it closes: an error
// response, or nothing (ok false) for a silent close.
func readAnswer(t *testing.T, c *tls.Conn) (r apns.ErrorResponse, ok bool) {
	t.Helper()
	r, err := apns.ReadErrorResponse(c)
	if err != nil {
		require.Falsef(t, errors.Is(err, apns.ErrMalformed), "bad answer: %v", err)
		var ne net.Error
		require.Falsef(t, errors.As(err, &ne) && ne.Timeout(), "gateway neither answered nor closed: %v", err)
		return r, false
	}
	return r, true
}

func TestGatewayAccepts(t *testing.T) {
	t.Parallel()
	gw := NewGateway()
	t.Cleanup(gw.Close)
	c := dialGateway(t, gw)
	var b []byte
	for i := 1; i <= 10; i++ {
		b = append(b, frame(uint32(i), gwTok(i%5))...)
	}
	_, err := c.Write(b)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return gw.Stats().Accepted == 10 }, 5*time.Second, time.Millisecond)
	require.Equal(t, 2, gw.Count(gwTok(0)))
	require.Equal(t, 0, gw.Count(gwTok(7)))
	st := gw.Stats()
	require.Equal(t, 5, st.Duplicates)
	require.Equal(t, 1, st.Conns)
	require.Zero(t, st.ResentAfterError)
	require.Zero(t, st.OutOfOrderIDs)

	// Identifiers that do not count up are counted.
	_, err = c.Write(append(frame(11, gwTok(11)), frame(11, gwTok(12))...))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return gw.Stats().Accepted == 12 }, 5*time.Second, time.Millisecond)
	require.Equal(t, 1, gw.Stats().OutOfOrderIDs)
}

func TestGatewayErrorResponses(t *testing.T) {
	t.Parallel()
	bad := gwTok(99)
	short := apns.AppendFrame(nil, 7, &apns.Notification{Token: bad[:16], Payload: []byte(`{"aps":{}}`)})
	big := apns.AppendFrame(nil, 8, &apns.Notification{Token: bad, Payload: bytes.Repeat([]byte{'x'}, 300)})
	tests := []struct {
		name     string
		opts     []GatewayOption
		in       []byte
		want     apns.ErrorResponse
		accepted int
	}{
		{"rejected token", []GatewayOption{Reject(bad, apns.StatusInvalidToken)},
			append(frame(1, gwTok(1)), frame(2, bad)...), apns.ErrorResponse{Status: apns.StatusInvalidToken, ID: 2}, 1},
		{"any status", []GatewayOption{Reject(bad, apns.StatusProcessingError)},
			frame(5, bad), apns.ErrorResponse{Status: apns.StatusProcessingError, ID: 5}, 0},
		{"reject func", []GatewayOption{RejectFunc(func(tok []byte) (apns.Status, bool) { return apns.StatusMissingTopic, tok[31] == 3 })},
			append(frame(1, gwTok(1)), frame(2, gwTok(3))...), apns.ErrorResponse{Status: apns.StatusMissingTopic, ID: 2}, 1},
		{"token size", nil, short, apns.ErrorResponse{Status: apns.StatusInvalidTokenSize, ID: 7}, 0},
		{"payload size", []GatewayOption{MaxPayload(256)}, big, apns.ErrorResponse{Status: apns.StatusInvalidPayloadSize, ID: 8}, 0},
		{"bad command", nil, []byte{1, 0, 0, 0, 0}, apns.ErrorResponse{Status: apns.StatusProtocolError}, 0},
		{"shutdown", []GatewayOption{ShutdownAfter(2)},
			append(append(frame(1, gwTok(1)), frame(2, gwTok(2))...), frame(3, gwTok(3))...), apns.ErrorResponse{Status: apns.StatusShutdown, ID: 2}, 2},
	}
	for _, tt := range tests {
		for _, drain := range []bool{false, true} {
			name := tt.name + "/close at once"
			opts := tt.opts
			if drain {
				name = tt.name + "/drain"
				opts = append(opts[:len(opts):len(opts)], DrainAfterError(50*time.Millisecond))
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				gw := NewGateway(opts...)
				t.Cleanup(gw.Close)
				c := dialGateway(t, gw)
				_, err := c.Write(tt.in)
				require.NoError(t, err)
				r, ok := readAnswer(t, c)
				require.True(t, ok)
				require.Equal(t, tt.want, r)
				// Then the connection ends.
				_, err = c.Read(make([]byte, 1))
				require.Error(t, err)
				require.Equal(t, tt.accepted, gw.Stats().Accepted)
			})
		}
	}
}

func TestGatewayDrainsAfterError(t *testing.T) {
	t.Parallel()
	bad := gwTok(99)
	gw := NewGateway(Reject(bad, apns.StatusInvalidToken), DrainAfterError(time.Minute))
	t.Cleanup(gw.Close)
	c := dialGateway(t, gw)
	_, err := c.Write(frame(1, bad))
	require.NoError(t, err)
	r, ok := readAnswer(t, c)
	require.True(t, ok)
	require.Equal(t, uint32(1), r.ID)
	// The gateway keeps reading (and discarding): writes go through and
	// nothing more is accepted.
	for i := 0; i < 100; i++ {
		_, err = c.Write(frame(uint32(i+2), gwTok(i)))
		require.NoError(t, err)
	}
	require.Zero(t, gw.Stats().Accepted)
}

func TestGatewaySilentClose(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		opt    GatewayOption
		frames int
		closes func(n int) bool // whether the n-th accepted frame closes
	}{
		{"close after 3", CloseAfter(3), 10, func(n int) bool { return n == 3 }},
		{"close every 2", CloseEvery(2), 7, func(n int) bool { return n%2 == 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			gw := NewGateway(tt.opt)
			t.Cleanup(gw.Close)
			c := dialGateway(t, gw)
			closes := 0
			for n := 1; n <= tt.frames; n++ {
				_, err := c.Write(frame(uint32(n), gwTok(n)))
				require.NoError(t, err)
				require.Eventually(t, func() bool { return gw.Stats().Accepted == n }, 5*time.Second, time.Millisecond)
				if !tt.closes(n) {
					continue
				}
				closes++
				require.Eventually(t, func() bool { return gw.Stats().SilentCloses == closes }, 5*time.Second, time.Millisecond)
				_, ok := readAnswer(t, c)
				require.False(t, ok, "a silent close sends nothing")
				c = dialGateway(t, gw)
			}
			require.Equal(t, closes, gw.Stats().SilentCloses)
			require.Zero(t, gw.Stats().Duplicates)
		})
	}
}

func TestGatewayStalls(t *testing.T) {
	t.Parallel()
	t.Run("handshake", func(t *testing.T) {
		t.Parallel()
		gw := NewGateway(StallHandshake())
		t.Cleanup(gw.Close)
		raw, err := net.Dial("tcp", gw.Addr)
		require.NoError(t, err)
		defer raw.Close()
		c := tls.Client(raw, &tls.Config{RootCAs: gw.RootCAs(), ServerName: "127.0.0.1"})
		require.NoError(t, c.SetDeadline(time.Now().Add(100*time.Millisecond)))
		err = c.Handshake()
		var ne net.Error
		require.ErrorAs(t, err, &ne)
		require.True(t, ne.Timeout())
	})
	t.Run("reading", func(t *testing.T) {
		t.Parallel()
		gw := NewGateway(StallAfter(2))
		t.Cleanup(gw.Close)
		c := dialGateway(t, gw)
		require.NoError(t, c.SetWriteDeadline(time.Now().Add(time.Second)))
		var err error
		for i := 0; i < 1_000_000 && err == nil; i++ { // at most 80 MB
			_, err = c.Write(frame(uint32(i+1), gwTok(i)))
		}
		var ne net.Error
		require.ErrorAs(t, err, &ne, "writes block once the gateway stops reading")
		require.True(t, ne.Timeout())
		require.Equal(t, 2, gw.Stats().Accepted)
	})
}

func TestGatewayWrongClientCert(t *testing.T) {
	t.Parallel()
	gw := NewGateway()
	t.Cleanup(gw.Close)
	other := MustPKI()
	conn, err := tls.Dial("tcp", gw.Addr, &tls.Config{Certificates: []tls.Certificate{other.ClientCert},
		RootCAs: gw.RootCAs(), ServerName: "127.0.0.1"})
	if err == nil { // TLS 1.3: the server's verdict comes with the first read
		defer conn.Close()
		require.NoError(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
		_, err = conn.Read(make([]byte, 1))
	}
	require.True(t, apns.CertificateRefused(err), "%v", err)
	require.Eventually(t, func() bool { return gw.Stats().HandshakeErrors == 1 }, 5*time.Second, time.Millisecond)
}

func TestGatewayClose(t *testing.T) {
	t.Parallel()
	gw := NewGateway(StallHandshake())
	raw, err := net.Dial("tcp", gw.Addr)
	require.NoError(t, err)
	defer raw.Close()
	gw2 := NewGateway()
	c := dialGateway(t, gw2)
	// Close ends held connections and waits for them (goleak checks).
	gw.Close()
	gw.Close()
	gw2.Close()
	_, err = io.ReadFull(c, make([]byte, 1))
	require.Error(t, err)
	_, err = net.Dial("tcp", gw.Addr)
	require.Error(t, err, "not listening after Close")
}

func TestListenGatewayError(t *testing.T) {
	t.Parallel()
	gw := NewGateway()
	t.Cleanup(gw.Close)
	_, err := ListenGateway(GatewayAddr(gw.Addr))
	require.Error(t, err, "address in use")
	require.Panics(t, func() { NewGateway(GatewayAddr(gw.Addr)) })
}

// FuzzGatewayFrames feeds arbitrary bytes to the gateway's connection loop
// (over loopback TCP, without TLS) and checks its answer against a model
// built on apns.FrameReader: frames are accepted until the first malformed
// one (answered with its status), a rejected token (status 8), or the third
// accepted frame (status 10, ShutdownAfter(3)); an incomplete frame at the
// end gets no answer.
func FuzzGatewayFrames(f *testing.F) {
	bad := gwTok(99)
	f.Add(frame(1, gwTok(1)))
	f.Add(append(frame(1, gwTok(1)), frame(2, bad)...))
	f.Add(append(append(append(frame(1, gwTok(1)), frame(2, gwTok(2))...), frame(3, gwTok(3))...), frame(4, gwTok(4))...))
	f.Add(apns.AppendFrame(nil, 5, &apns.Notification{Token: gwTok(1), Payload: bytes.Repeat([]byte{'x'}, 300)}))
	f.Add(append(frame(1, gwTok(1)), 2, 0, 0))
	f.Add([]byte{1, 0, 0, 0, 0})
	f.Add([]byte{})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(f, err)
	defer ln.Close()
	f.Fuzz(func(t *testing.T, b []byte) {
		// The model.
		var (
			want     []byte
			accepted int
			fr       = apns.NewFrameReader(bytes.NewReader(b), 256)
		)
		for {
			fm, err := fr.ReadFrame()
			var fe *apns.FrameError
			if errors.As(err, &fe) {
				want = apns.AppendErrorResponse(nil, apns.ErrorResponse{Status: fe.Status, ID: fe.ID})
			}
			if err != nil {
				break
			}
			if bytes.Equal(fm.Token, bad) {
				want = apns.AppendErrorResponse(nil, apns.ErrorResponse{Status: apns.StatusInvalidToken, ID: fm.ID})
				break
			}
			if accepted++; accepted == 3 {
				want = apns.AppendErrorResponse(nil, apns.ErrorResponse{Status: apns.StatusShutdown, ID: fm.ID})
				break
			}
		}

		g := newGateway(gatewayOptions([]GatewayOption{Reject(bad, apns.StatusInvalidToken), ShutdownAfter(3), MaxPayload(256)}))
		cli, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		defer cli.Close()
		srv, err := ln.Accept()
		require.NoError(t, err)
		served := make(chan struct{})
		go func() {
			defer close(served)
			defer srv.Close()
			g.frames(srv, g.newConn())
		}()
		var got []byte
		read := make(chan struct{})
		go func() {
			defer close(read)
			got, _ = io.ReadAll(cli)
		}()
		_, _ = cli.Write(b) // fails if the gateway answered and closed first
		_ = cli.(*net.TCPConn).CloseWrite()
		<-served
		<-read
		if len(want) == 0 {
			want = nil
		}
		if len(got) == 0 {
			got = nil
		}
		require.Equal(t, want, got)
		require.Equal(t, accepted, g.Stats().Accepted)
	})
}
