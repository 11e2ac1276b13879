package rawconn_test

import (
	"context"
	"crypto/sha256"
	"io"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/internal/rawconn"
)

// TestRaceDetectorSeesBuffers: the race detector sees a Read write into
// its buffer and a Write read from its buffer, as it does for
// net.TCPConn's, so a goroutine that touches the buffer meanwhile is
// reported. Each case runs in a child process (a reported race fails the
// process) and the child's report must name the conn's method.
func TestRaceDetectorSeesBuffers(t *testing.T) {
	if !raceDetector {
		t.Skip("only the race detector sees the buffers")
	}
	if os.Getenv("RAWCONN_RACE_CHILD") != "" {
		t.Skip("in the child")
	}
	for _, tc := range []struct{ child, method string }{
		{"plain read", "net.(*conn).Read"},
		{"plain write", "net.(*conn).Write"},
		{"read", "rawconn.(*conn).Read"},
		{"write", "rawconn.(*conn).Write"},
	} {
		t.Run(tc.child, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestRaceChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), "RAWCONN_RACE_CHILD="+tc.child)
			out, err := cmd.CombinedOutput()
			require.Error(t, err, "the child must fail with a race report:\n%s", out)
			require.Contains(t, string(out), "WARNING: DATA RACE")
			require.Contains(t, string(out), tc.method)
		})
	}
}

// TestRaceChild is TestRaceDetectorSeesBuffers's child: a goroutine
// touches a buffer, without any order against the Read or Write that
// uses it.
func TestRaceChild(t *testing.T) {
	child := os.Getenv("RAWCONN_RACE_CHILD")
	if child == "" {
		t.Skip("run by TestRaceDetectorSeesBuffers")
	}
	d, a := tcpPair(t)
	var c net.Conn = d
	if child == "read" || child == "write" {
		c = rawconn.Wrap(d)
	}
	buf := make([]byte, 64)
	touched := make(chan byte, 1)
	switch child {
	case "read", "plain read":
		_, err := a.Write([]byte("data"))
		require.NoError(t, err)
		go func() { touched <- buf[0] }()
		_, err = io.ReadFull(c, buf[:4])
		require.NoError(t, err)
	default:
		go func() { buf[0] = 1; touched <- 0 }()
		_, err := c.Write(buf)
		require.NoError(t, err)
	}
	<-touched
}

// TestSharedWriteBuffer: writing one buffer to two wrapped connections at
// once is no race (both only read it); under -race nothing is reported.
func TestSharedWriteBuffer(t *testing.T) {
	shared := pattern(13, 1<<20)
	var ends []func() received
	var wrote []func() error
	for range 2 {
		d, a := tcpPair(t)
		smallBuffers(t, d, a)
		w := rawconn.Wrap(d)
		ends = append(ends, async(t, func() received { return readStream(a, len(shared), 8192) }))
		wrote = append(wrote, async(t, func() error {
			_, err := w.Write(shared)
			return err
		}))
	}
	for i := range ends {
		require.NoError(t, wrote[i]())
		got := ends[i]()
		require.NoError(t, got.err)
		require.Equal(t, sha256.Sum256(shared), got.sum)
	}
}
