package rawconn_test

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// requireTimeout asserts that err is a deadline's failure of op on c, as
// net reports it.
func requireTimeout(t *testing.T, err error, op string, c net.Conn) {
	t.Helper()
	require.Error(t, err)
	var ne net.Error
	require.True(t, errors.As(err, &ne), "a net.Error")
	require.True(t, ne.Timeout(), "Timeout()")
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	requireOpError(t, err, op, c)
}

// TestReset: the peer resets the connection (SO_LINGER 0); a read or a
// write then fails with the system call's error, ECONNRESET or EPIPE,
// wrapped as net wraps it.
func TestReset(t *testing.T) {
	t.Run("read", func(t *testing.T) {
		w, peer := wrappedPair(t)
		require.NoError(t, peer.SetLinger(0))
		require.NoError(t, peer.Close())
		require.NoError(t, w.SetReadDeadline(time.Now().Add(testTimeout)))

		n, err := w.Read(make([]byte, 16))
		require.Equal(t, 0, n)
		requireSyscallError(t, err, "read", w, syscall.ECONNRESET)
	})
	t.Run("write", func(t *testing.T) {
		w, peer := wrappedPair(t)
		require.NoError(t, peer.SetLinger(0))
		require.NoError(t, peer.Close())
		require.NoError(t, w.SetWriteDeadline(time.Now().Add(testTimeout)))

		// Writes may succeed until the reset has been received.
		var err error
		for i := 0; err == nil; i++ {
			require.Less(t, i, 100000, "writes after a reset keep succeeding")
			_, err = w.Write([]byte("x"))
		}
		requireSyscallError(t, err, "write", w, syscall.ECONNRESET, syscall.EPIPE)
	})
}

// requireSyscallError asserts that err is a failure of op on c whose Err
// is an *os.SyscallError of that system call with one of errnos.
func requireSyscallError(t *testing.T, err error, op string, c net.Conn, errnos ...syscall.Errno) {
	t.Helper()
	require.Error(t, err)
	require.NotErrorIs(t, err, io.EOF)
	oe := requireOpError(t, err, op, c)
	var se *os.SyscallError
	require.Truef(t, errors.As(oe.Err, &se), "Err %v (%T) is not an *os.SyscallError", oe.Err, oe.Err)
	require.Equal(t, op, se.Syscall)
	require.Contains(t, errnos, se.Err)
}

// TestReadDeadline: a read with no data fails at its deadline, whether the
// deadline had passed before the read or passes during it; the connection
// reads again once the deadline is cleared.
func TestReadDeadline(t *testing.T) {
	set := map[string]func(c net.Conn) error{
		"past": func(c net.Conn) error { return c.SetReadDeadline(time.Now().Add(-time.Second)) },
		"near": func(c net.Conn) error { return c.SetReadDeadline(time.Now().Add(30 * time.Millisecond)) },
		"now":  func(c net.Conn) error { return c.SetDeadline(time.Now()) },
	}
	for name, setDeadline := range set {
		t.Run(name, func(t *testing.T) {
			w, peer := wrappedPair(t)
			require.NoError(t, setDeadline(w))
			n, err := w.Read(make([]byte, 16))
			require.Equal(t, 0, n)
			requireTimeout(t, err, "read", w)

			require.NoError(t, w.SetReadDeadline(time.Time{}))
			_, err = peer.Write([]byte("later"))
			require.NoError(t, err)
			require.NoError(t, peer.CloseWrite()) // bounds the read below
			buf := make([]byte, 5)
			_, err = io.ReadFull(w, buf)
			require.NoError(t, err)
			require.Equal(t, "later", string(buf))
		})
	}
	t.Run("set while blocked", func(t *testing.T) {
		w, _ := wrappedPair(t)
		started := make(chan struct{})
		read := async(t, func() error {
			close(started)
			_, err := w.Read(make([]byte, 16))
			return err
		})
		<-started
		// Whether the read is waiting yet or not, the deadline ends it.
		require.NoError(t, w.SetReadDeadline(time.Now()))
		requireTimeout(t, read(), "read", w)
	})
}

// TestWriteDeadline: the peer never reads; writes fail at the deadline,
// and n counts exactly the bytes that went out: the peer reads them all,
// and no more, once the writer closes.
func TestWriteDeadline(t *testing.T) {
	t.Run("one large write", func(t *testing.T) {
		w, peer := smallWrappedPair(t)
		data := pattern(9, 64<<20)
		require.NoError(t, w.SetWriteDeadline(time.Now().Add(50*time.Millisecond)))
		n, err := w.Write(data)
		requireTimeout(t, err, "write", w)
		require.Greater(t, n, 0)
		require.Less(t, n, len(data))
		requireDelivered(t, w, peer, data[:n])
	})
	t.Run("many writes", func(t *testing.T) {
		w, peer := smallWrappedPair(t)
		data := pattern(10, 64<<20)
		require.NoError(t, w.SetWriteDeadline(time.Now().Add(50*time.Millisecond)))
		total, chunk := 0, 10000
		var err error
		for err == nil {
			require.Less(t, total+chunk, len(data), "writes to a peer that never reads never time out")
			var n int
			n, err = w.Write(data[total : total+chunk])
			if err == nil {
				require.Equal(t, chunk, n)
			}
			total += n
		}
		requireTimeout(t, err, "write", w)
		requireDelivered(t, w, peer, data[:total])
	})
}

// requireDelivered closes w and asserts that the peer then reads exactly
// want and EOF.
func requireDelivered(t *testing.T, w net.Conn, peer net.Conn, want []byte) {
	t.Helper()
	require.NoError(t, w.Close())
	got, err := io.ReadAll(peer)
	require.NoError(t, err)
	require.Equal(t, len(want), len(got), "bytes the peer read")
	require.Equal(t, want, got)
}

// TestCloseWhileBlocked: Close ends a read or a write that waits, with
// net.ErrClosed; later reads and writes fail likewise.
func TestCloseWhileBlocked(t *testing.T) {
	for _, op := range []string{"read", "write"} {
		t.Run(op, func(t *testing.T) {
			w, _ := smallWrappedPair(t)
			started := make(chan struct{})
			blocked := async(t, func() error {
				close(started)
				if op == "read" {
					_, err := w.Read(make([]byte, 16))
					return err
				}
				_, err := w.Write(make([]byte, 64<<20)) // far more than the buffers hold
				return err
			})
			<-started
			// Whether the call is waiting yet or not, Close ends it.
			require.NoError(t, w.Close())
			err := blocked()
			require.ErrorIs(t, err, net.ErrClosed)
			requireOpError(t, err, op, w)

			_, err = w.Read(make([]byte, 16))
			require.ErrorIs(t, err, net.ErrClosed)
			requireOpError(t, err, "read", w)
			_, err = w.Write([]byte("x"))
			require.ErrorIs(t, err, net.ErrClosed)
			requireOpError(t, err, "write", w)
		})
	}
}

// TestZeroLength: a zero-length read or write returns (0, nil) at once,
// with no data pending and nothing written.
func TestZeroLength(t *testing.T) {
	w, peer := wrappedPair(t)
	done := async(t, func() error {
		if n, err := w.Read(nil); n != 0 || err != nil {
			return errors.Join(errors.New("read"), err)
		}
		if n, err := w.Read([]byte{}); n != 0 || err != nil {
			return errors.Join(errors.New("read"), err)
		}
		if n, err := w.Write(nil); n != 0 || err != nil {
			return errors.Join(errors.New("write"), err)
		}
		return nil
	})
	require.NoError(t, done())

	// Nothing reached the peer: the next byte it reads is the first real one.
	_, err := w.Write([]byte("a"))
	require.NoError(t, err)
	b := make([]byte, 1)
	_, err = io.ReadFull(peer, b)
	require.NoError(t, err)
	require.Equal(t, "a", string(b))
}

// TestErrorsMatchTCPConn: in the same situation a wrapped connection
// and a plain *net.TCPConn fail with the same error: the same Op, Net and
// Err, with the connection's own addresses.
func TestErrorsMatchTCPConn(t *testing.T) {
	cases := []failure{
		{"read deadline", func(t *testing.T, c net.Conn, _ *net.TCPConn) error {
			require.NoError(t, c.SetReadDeadline(time.Now().Add(-time.Second)))
			_, err := c.Read(make([]byte, 8))
			return err
		}},
		{"write deadline", func(t *testing.T, c net.Conn, _ *net.TCPConn) error {
			require.NoError(t, c.SetWriteDeadline(time.Now().Add(-time.Second)))
			_, err := c.Write([]byte("x"))
			return err
		}},
		{"read after close", func(t *testing.T, c net.Conn, _ *net.TCPConn) error {
			require.NoError(t, c.Close())
			_, err := c.Read(make([]byte, 8))
			return err
		}},
		{"write after close", func(t *testing.T, c net.Conn, _ *net.TCPConn) error {
			require.NoError(t, c.Close())
			_, err := c.Write([]byte("x"))
			return err
		}},
		{"read deadline with data waiting", func(t *testing.T, c net.Conn, peer *net.TCPConn) error {
			_, err := peer.Write([]byte("data"))
			require.NoError(t, err)
			require.NoError(t, c.SetReadDeadline(time.Now().Add(-time.Second)))
			_, err = c.Read(make([]byte, 8))
			return err
		}},
		{"read after CloseRead", func(t *testing.T, c net.Conn, _ *net.TCPConn) error {
			require.NoError(t, c.(interface{ CloseRead() error }).CloseRead())
			_, err := c.Read(make([]byte, 8))
			return err
		}},
		{"write after CloseWrite", func(t *testing.T, c net.Conn, _ *net.TCPConn) error {
			require.NoError(t, c.(interface{ CloseWrite() error }).CloseWrite())
			_, err := c.Write([]byte("x"))
			return err
		}},
		{"read reset", func(t *testing.T, c net.Conn, peer *net.TCPConn) error {
			require.NoError(t, peer.SetLinger(0))
			require.NoError(t, peer.Close())
			_, err := c.Read(make([]byte, 8))
			return err
		}},
	}
	requireSameErrors(t, cases)
}

// failure is one situation in which a read or a write fails.
type failure struct {
	name string
	do   func(t *testing.T, c net.Conn, peer *net.TCPConn) error
}

// requireSameErrors runs each case on a plain *net.TCPConn and on a
// wrapped one and asserts that both return the same error.
func requireSameErrors(t *testing.T, cases []failure) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, peer := tcpPair(t)
			want := tc.do(t, d, peer)
			w, peer := wrappedPair(t)
			got := tc.do(t, w, peer)
			if want == nil {
				require.NoError(t, got)
				return
			}
			require.Error(t, got, "net.TCPConn fails with %v", want)
			var wantOE, gotOE *net.OpError
			if !errors.As(want, &wantOE) {
				require.Equal(t, want, got)
				return
			}
			requireOpError(t, got, wantOE.Op, w)
			require.True(t, errors.As(got, &gotOE))
			require.Equal(t, wantOE.Net, gotOE.Net)
			require.Equal(t, wantOE.Err, gotOE.Err)
			require.Equal(t, wantOE.Timeout(), gotOE.Timeout())
		})
	}
}
