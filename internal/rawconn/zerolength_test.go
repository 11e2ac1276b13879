package rawconn_test

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestZeroLengthMatchesTCPConn: a zero-length read or write on a closed
// connection, or a zero-length write past its deadline, fails as on a
// plain *net.TCPConn (whose zero-length read ignores the deadline).
func TestZeroLengthMatchesTCPConn(t *testing.T) {
	requireSameErrors(t, []failure{
		{"zero-length read after close", func(t *testing.T, c net.Conn, _ *net.TCPConn) error {
			require.NoError(t, c.Close())
			_, err := c.Read(nil)
			return err
		}},
		{"zero-length write after close", func(t *testing.T, c net.Conn, _ *net.TCPConn) error {
			require.NoError(t, c.Close())
			_, err := c.Write(nil)
			return err
		}},
		{"zero-length read past deadline", func(t *testing.T, c net.Conn, _ *net.TCPConn) error {
			require.NoError(t, c.SetReadDeadline(time.Now().Add(-time.Second)))
			_, err := c.Read(nil)
			return err
		}},
		{"zero-length write past deadline", func(t *testing.T, c net.Conn, _ *net.TCPConn) error {
			require.NoError(t, c.SetWriteDeadline(time.Now().Add(-time.Second)))
			_, err := c.Write(nil)
			return err
		}},
	})
}
