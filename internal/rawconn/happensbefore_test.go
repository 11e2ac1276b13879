package rawconn_test

import (
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/internal/rawconn"
)

// TestIOHappensBefore: the race detector takes a write to a connection
// as happening before the read that gets its bytes, as it does for
// net.TCPConn (through the syscall package's reads and writes). A
// goroutine that sets a variable and then sends a byte, and another that
// reads the byte and then the variable, do not race: with a wrapped
// connection on either end, as with plain ones. Only -race can fail it.
func TestIOHappensBefore(t *testing.T) {
	if !raceDetector {
		t.Skip("only the race detector sees the order")
	}
	// Each case has its own set and get: the race detector reports a
	// pair of racing lines once per process.
	t.Run("plain to plain", func(t *testing.T) {
		var v string
		handOver(t, false, false, func() { v = "set" }, func() string { return v })
	})
	t.Run("wrapped to plain", func(t *testing.T) {
		var v string
		handOver(t, true, false, func() { v = "set" }, func() string { return v })
	})
	t.Run("plain to wrapped", func(t *testing.T) {
		var v string
		handOver(t, false, true, func() { v = "set" }, func() string { return v })
	})
	t.Run("wrapped to wrapped", func(t *testing.T) {
		var v string
		handOver(t, true, true, func() { v = "set" }, func() string { return v })
	})
}

// handOver calls set and then writes a byte on one end of a connection,
// in a goroutine, while the test reads the byte on the other end and then
// calls get; no lock orders set and get, only the connection.
func handOver(t *testing.T, wrapSrc, wrapDst bool, set func(), get func() string) {
	t.Helper()
	d, a := tcpPair(t)
	var src, dst net.Conn = d, a
	if wrapSrc {
		src = rawconn.Wrap(d)
	}
	if wrapDst {
		dst = rawconn.Wrap(a)
	}
	sent := async(t, func() error {
		set()
		_, err := src.Write([]byte{1})
		return err
	})
	_, err := io.ReadFull(dst, make([]byte, 1))
	require.NoError(t, err)
	require.Equal(t, "set", get())
	require.NoError(t, sent())
}
