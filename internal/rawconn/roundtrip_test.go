package rawconn_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/internal/rawconn"
)

// TestRoundTrip writes one buffer of each size through a wrapped
// connection to a plain peer and back the other way; the reader gets every
// byte, in order.
func TestRoundTrip(t *testing.T) {
	sizes := []int{1, 2, 100, 1460, 64 << 10, 256<<10 + 3, 4<<20 + 7}
	for _, size := range sizes {
		for _, dir := range []string{"wrapped to plain", "plain to wrapped"} {
			t.Run(fmt.Sprintf("%s/%d", dir, size), func(t *testing.T) {
				w, peer := wrappedPair(t)
				var src io.Writer = w
				var dst io.Reader = peer
				if dir == "plain to wrapped" {
					src, dst = peer, w
				}
				data := pattern(uint64(size), size)
				wrote := async(t, func() error { return write(src, data) })
				got := readStream(dst, size, 32<<10)
				require.NoError(t, wrote())
				require.NoError(t, got.err)
				require.Equal(t, size, got.n)
				require.Equal(t, sha256.Sum256(data), got.sum)
			})
		}
	}
}

// TestRoundTripSlowReader writes far more than the socket buffers hold in
// one Write while the peer reads in small chunks: the write waits for room
// many times and still delivers every byte in order.
func TestRoundTripSlowReader(t *testing.T) {
	for _, dir := range []string{"wrapped to plain", "plain to wrapped"} {
		t.Run(dir, func(t *testing.T) {
			d, a := tcpPair(t)
			smallBuffers(t, d, a)
			w := rawconn.Wrap(d)
			var src io.Writer = w
			var dst io.Reader = a
			if dir == "plain to wrapped" {
				src, dst = a, w
			}
			data := pattern(7, 3<<20+11)
			wrote := async(t, func() error { return write(src, data) })
			got := readStream(dst, len(data), 1000)
			require.NoError(t, wrote())
			require.NoError(t, got.err)
			require.Equal(t, len(data), got.n)
			require.Equal(t, sha256.Sum256(data), got.sum)
		})
	}
}

// TestConcurrentReadWrite reads and writes the same wrapped connection
// at once, each way more than the socket buffers hold: neither side can
// finish unless the other direction keeps moving.
func TestConcurrentReadWrite(t *testing.T) {
	d, a := tcpPair(t)
	smallBuffers(t, d, a)
	w := rawconn.Wrap(d)
	out, in := pattern(1, 2<<20), pattern(2, 2<<20+5)

	wrappedWrote := async(t, func() error { return write(w, out) })
	peerWrote := async(t, func() error { return write(a, in) })
	peerGot := async(t, func() received { return readStream(a, len(out), 4096) })
	wrappedGot := readStream(w, len(in), 3000)

	require.NoError(t, wrappedWrote())
	require.NoError(t, peerWrote())
	require.NoError(t, wrappedGot.err)
	require.Equal(t, sha256.Sum256(in), wrappedGot.sum)
	pg := peerGot()
	require.NoError(t, pg.err)
	require.Equal(t, sha256.Sum256(out), pg.sum)
}

// TestEOF: the peer sends some bytes and closes; the wrapped connection
// reads the bytes first, then (0, io.EOF), and io.EOF again after that.
func TestEOF(t *testing.T) {
	w, peer := wrappedPair(t)
	_, err := peer.Write([]byte("last words"))
	require.NoError(t, err)
	require.NoError(t, peer.Close())

	buf := make([]byte, len("last words"))
	_, err = io.ReadFull(w, buf)
	require.NoError(t, err)
	require.Equal(t, "last words", string(buf))
	for range 2 {
		n, err := w.Read(make([]byte, 64))
		require.Equal(t, 0, n)
		require.Equal(t, io.EOF, err, "a read at the end of the stream is io.EOF itself, unwrapped")
	}
}

// TestNotTCP: Wrap returns any other connection as it is.
func TestNotTCP(t *testing.T) {
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	require.Same(t, p1, rawconn.Wrap(p1))
	require.Nil(t, rawconn.Wrap(nil))

	dir := t.TempDir()
	ln, err := net.Listen("unix", dir+"/s")
	require.NoError(t, err)
	defer ln.Close()
	accepted := async(t, func() error {
		c, err := ln.Accept()
		if err == nil {
			err = c.Close()
		}
		return err
	})
	uc, err := net.Dial("unix", dir+"/s")
	require.NoError(t, err)
	defer uc.Close()
	require.Same(t, uc, rawconn.Wrap(uc))
	require.NoError(t, accepted())
}

// TestPromotedMethods: everything but Read and Write is the wrapped
// *net.TCPConn's: addresses, options, half close, io.Copy's fast paths.
func TestPromotedMethods(t *testing.T) {
	d, peer := tcpPair(t)
	w := rawconn.Wrap(d)
	require.Equal(t, d.LocalAddr(), w.LocalAddr())
	require.Equal(t, d.RemoteAddr(), w.RemoteAddr())
	require.Equal(t, peer.RemoteAddr().String(), w.LocalAddr().String())

	tcp, ok := w.(interface {
		SetNoDelay(bool) error
		SetKeepAlive(bool) error
		SetLinger(int) error
		CloseWrite() error
		CloseRead() error
	})
	require.True(t, ok, "the TCP methods are promoted")
	require.NoError(t, tcp.SetNoDelay(false))
	require.NoError(t, tcp.SetKeepAlive(true))

	// Half close: the peer sees EOF and can still answer.
	_, err := w.Write([]byte("question"))
	require.NoError(t, err)
	require.NoError(t, tcp.CloseWrite())
	got := readToEOF(peer, 64)
	require.Equal(t, io.EOF, got.err)
	require.Equal(t, len("question"), got.n)
	require.Equal(t, sha256.Sum256([]byte("question")), got.sum)
	_, err = peer.Write([]byte("answer"))
	require.NoError(t, err)
	require.NoError(t, peer.Close())
	answer, err := io.ReadAll(w)
	require.NoError(t, err)
	require.Equal(t, "answer", string(answer))
}

// TestIOCopy: io.Copy to and from a wrapped connection (which uses the
// promoted ReadFrom and WriteTo) delivers every byte.
func TestIOCopy(t *testing.T) {
	d, peer := tcpPair(t)
	smallBuffers(t, d, peer)
	w := rawconn.Wrap(d)
	out, in := pattern(4, 1<<20+1), pattern(5, 1<<20+2)

	copiedOut := async(t, func() error {
		_, err := io.Copy(w, struct{ io.Reader }{bytes.NewReader(out)})
		if err == nil {
			err = w.(interface{ CloseWrite() error }).CloseWrite()
		}
		return err
	})
	peerGot := async(t, func() received { return readToEOF(peer, 4096) })
	copiedIn := async(t, func() error {
		_, err := peer.Write(in)
		if err == nil {
			err = peer.CloseWrite()
		}
		return err
	})
	sink := sha256.New()
	n, err := io.Copy(sink, w)
	require.NoError(t, err)
	require.Equal(t, int64(len(in)), n)
	require.Equal(t, sha256.Sum256(in), [32]byte(sink.Sum(nil)))
	require.NoError(t, copiedOut())
	require.NoError(t, copiedIn())
	pg := peerGot()
	require.Equal(t, io.EOF, pg.err)
	require.Equal(t, sha256.Sum256(out), pg.sum)
}
