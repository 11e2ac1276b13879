package rawconn_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/internal/rawconn"
)

// testTimeout bounds every wait in these tests.
const testTimeout = 20 * time.Second

// tcpPair returns a connected pair of TCP connections on 127.0.0.1: the
// dialed one and the accepted one. Both are closed when the test ends.
func tcpPair(t *testing.T) (dialed, accepted *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer ln.Close()
	type result struct {
		c   *net.TCPConn
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.AcceptTCP()
		done <- result{c, err}
	}()
	d, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	require.NoError(t, err)
	r := <-done
	require.NoError(t, r.err)
	t.Cleanup(func() {
		_ = d.Close()
		_ = r.c.Close()
	})
	// No read or write waits forever, even a broken one.
	require.NoError(t, d.SetDeadline(time.Now().Add(testTimeout)))
	require.NoError(t, r.c.SetDeadline(time.Now().Add(testTimeout)))
	return d, r.c
}

// wrappedPair returns the dialed end wrapped by rawconn.Wrap and the
// accepted end, a plain *net.TCPConn.
func wrappedPair(t *testing.T) (w net.Conn, peer *net.TCPConn) {
	t.Helper()
	d, a := tcpPair(t)
	return rawconn.Wrap(d), a
}

// smallWrappedPair is wrappedPair with small socket buffers.
func smallWrappedPair(t *testing.T) (w net.Conn, peer *net.TCPConn) {
	t.Helper()
	d, a := tcpPair(t)
	smallBuffers(t, d, a)
	return rawconn.Wrap(d), a
}

// smallBuffers shrinks the kernel's socket buffers of c so that large
// writes fill them and wait for the reader (the EAGAIN path).
func smallBuffers(t *testing.T, cs ...*net.TCPConn) {
	t.Helper()
	for _, c := range cs {
		require.NoError(t, c.SetReadBuffer(64<<10))
		require.NoError(t, c.SetWriteBuffer(64<<10))
	}
}

// pattern returns n bytes of seeded pseudo-random data.
func pattern(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)})
	_, _ = r.Read(b)
	return b
}

// received is what a reader got from a stream: its length, its checksum
// and the error that ended it.
type received struct {
	n   int
	sum [32]byte
	err error
}

// readStream reads r in reads of at most chunk bytes until want bytes
// arrived or a read fails; it returns what it got.
func readStream(r io.Reader, want, chunk int) received {
	return readSizes(r, want, []int{chunk})
}

// readSizes reads r as readStream does, its reads cycling through sizes.
func readSizes(r io.Reader, want int, sizes []int) received {
	h := sha256.New()
	buf := make([]byte, slices.Max(sizes))
	var got received
	for i, empty := 0, 0; got.n < want; i++ {
		n, err := r.Read(buf[:min(sizes[i%len(sizes)], want-got.n)])
		h.Write(buf[:n])
		got.n += n
		if err == nil && n == 0 {
			if empty++; empty == 100 {
				err = io.ErrNoProgress
			}
		}
		if err != nil {
			got.err = err
			break
		}
	}
	copy(got.sum[:], h.Sum(nil))
	return got
}

// write writes all of b to c, or fails.
func write(c io.Writer, b []byte) error {
	n, err := c.Write(b)
	if err == nil && n != len(b) {
		err = fmt.Errorf("wrote %d of %d without an error", n, len(b))
	}
	return err
}

// readToEOF reads r in reads of chunk bytes until a read fails; it
// returns what it got and the failure (io.EOF at a clean end).
func readToEOF(r io.Reader, chunk int) received {
	return readStream(r, int(^uint(0)>>1), chunk)
}

// async runs f in a goroutine; the returned function waits for its
// result, failing the test if it takes longer than testTimeout.
func async[T any](t *testing.T, f func() T) func() T {
	t.Helper()
	ch := make(chan T, 1)
	go func() { ch <- f() }()
	return func() T {
		t.Helper()
		select {
		case v := <-ch:
			return v
		case <-time.After(testTimeout):
			t.Fatal("timed out")
			panic("unreachable")
		}
	}
}

// requireOpError asserts that err is a *net.OpError as net reports a
// failed read or write on c, and returns it.
func requireOpError(t *testing.T, err error, op string, c net.Conn) *net.OpError {
	t.Helper()
	var oe *net.OpError
	require.Truef(t, errors.As(err, &oe), "error %v (%T) is not a *net.OpError", err, err)
	require.Equal(t, op, oe.Op)
	require.Equal(t, "tcp", oe.Net)
	require.NotNil(t, oe.Source)
	require.NotNil(t, oe.Addr)
	require.Equal(t, c.LocalAddr().String(), oe.Source.String())
	require.Equal(t, c.RemoteAddr().String(), oe.Addr.String())
	return oe
}
