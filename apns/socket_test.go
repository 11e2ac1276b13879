package apns

import (
	"net"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSocketConn: an engine's connections make direct socket calls unless
// WithDirectSocketCalls(false) (on Linux; elsewhere the net package's).
func TestSocketConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()

	o := defaultOptions()
	_, plain := o.socketConn(c).(*net.TCPConn)
	require.Equal(t, runtime.GOOS != "linux", plain, "direct by default on Linux")

	require.NoError(t, applyOptions(&o, []Option{WithDirectSocketCalls(false)}))
	require.Same(t, c, o.socketConn(c), "off: the connection as net made it")
	require.NoError(t, o.checkFor(stdEngine), "every engine takes it")
}
