package rawconn

import (
	"bytes"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// loopbackPair returns a wrapped dialed connection and the plain
// accepted one, each with small socket buffers and a deadline that bounds
// the test; both are closed when the test ends.
func loopbackPair(t *testing.T) (*conn, *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan *net.TCPConn, 1)
	go func() {
		c, _ := ln.AcceptTCP() // nil on failure
		accepted <- c
	}()
	d, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	require.NoError(t, err)
	a := <-accepted
	require.NotNil(t, a)
	t.Cleanup(func() {
		_ = d.Close()
		_ = a.Close()
	})
	for _, c := range []*net.TCPConn{d, a} {
		require.NoError(t, c.SetDeadline(time.Now().Add(20*time.Second)))
		require.NoError(t, c.SetReadBuffer(64<<10))
		require.NoError(t, c.SetWriteBuffer(64<<10))
	}
	w, ok := Wrap(d).(*conn)
	require.True(t, ok, "Wrap of a *net.TCPConn on Linux is the raw conn")
	return w, a
}

// TestWrapTakesRawPath: on Linux, Wrap of a *net.TCPConn is not the
// *net.TCPConn itself, and its Read and Write go through the raw calls.
func TestWrapTakesRawPath(t *testing.T) {
	w, _ := loopbackPair(t)
	var c net.Conn = w
	_, plain := c.(*net.TCPConn)
	require.False(t, plain)
	require.NotNil(t, w.rc)
	require.NotNil(t, w.readFn)
	require.NotNil(t, w.writeFn)
}

// countCalls makes w's raw read and write count their calls and the
// times they reported EAGAIN (false: wait for readiness).
func countCalls(w *conn) (reads, readWaits, writes, writeWaits *int) {
	reads, readWaits, writes, writeWaits = new(int), new(int), new(int), new(int)
	w.readFn = func(fd uintptr) bool {
		*reads++
		done := w.rawRead(fd)
		if !done {
			*readWaits++
		}
		return done
	}
	w.writeFn = func(fd uintptr) bool {
		*writes++
		done := w.rawWrite(fd)
		if !done {
			*writeWaits++
		}
		return done
	}
	return reads, readWaits, writes, writeWaits
}

// TestRawWriteWaitsForRoom: a write far larger than the socket buffers
// reports EAGAIN, waits in the poller, and continues where it stopped
// until the slow reader has every byte.
func TestRawWriteWaitsForRoom(t *testing.T) {
	w, peer := loopbackPair(t)
	_, _, writes, writeWaits := countCalls(w)
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	got := make(chan []byte, 1)
	go func() {
		var b bytes.Buffer
		buf := make([]byte, 1000)
		for {
			n, err := peer.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				got <- b.Bytes()
				return
			}
		}
	}()
	n, err := w.Write(data)
	require.NoError(t, err)
	require.Equal(t, len(data), n)
	require.NoError(t, w.CloseWrite())
	require.Equal(t, data, <-got)
	require.Positive(t, *writeWaits, "the write waited for room")
	require.Equal(t, *writes, *writeWaits+1, "one raw write call after each wait")
}

// TestRawReadWaitsForData: a read with no data reports EAGAIN and waits
// in the poller, until the deadline or until data arrives.
func TestRawReadWaitsForData(t *testing.T) {
	w, peer := loopbackPair(t)
	reads, readWaits, _, _ := countCalls(w)
	require.NoError(t, w.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	_, err := w.Read(make([]byte, 8))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	require.Equal(t, 1, *reads)
	require.Equal(t, 1, *readWaits)

	require.NoError(t, w.SetReadDeadline(time.Time{}))
	_, err = peer.Write([]byte("ping"))
	require.NoError(t, err)
	require.NoError(t, peer.CloseWrite()) // bounds the read below
	buf := make([]byte, 4)
	_, err = io.ReadFull(w, buf)
	require.NoError(t, err)
	require.Equal(t, "ping", string(buf))
	require.Greater(t, *reads, 1)
}
