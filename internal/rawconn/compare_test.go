package rawconn_test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/internal/rawconn"
)

// script is a seeded random sequence of operations for one direction of
// a connection: the sizes of the writer's writes, the sizes of the
// reader's buffers.
type script struct {
	writes []int
	reads  []int
}

func newScript(r *rand.Rand) script {
	var s script
	for range 1 + r.IntN(40) {
		// Mostly small writes, some far larger than the socket buffers.
		s.writes = append(s.writes, 1+r.IntN(1<<(r.IntN(21)+1)))
	}
	for range 1 + r.IntN(20) {
		s.reads = append(s.reads, 1+r.IntN(1<<(r.IntN(17)+1)))
	}
	return s
}

// stream is what the writes of s send: each a prefix of the pattern.
func (s script) stream(seed uint64) []byte {
	data := pattern(seed, 1<<21)
	var b []byte
	for _, size := range s.writes {
		b = append(b, data[:size]...)
	}
	return b
}

// transcript is what one direction of a connection carried.
type transcript struct {
	written []int // n of each write
	got     received
}

// play runs s from src to dst: src makes its writes and closes its
// side; dst reads, cycling through its buffer sizes, until io.EOF.
func play(t *testing.T, s script, seed uint64, src, dst net.Conn) (func() []int, func() received) {
	t.Helper()
	wrote := async(t, func() []int {
		data := pattern(seed, 1<<21)
		var ns []int
		for _, size := range s.writes {
			n, err := src.Write(data[:size])
			if err != nil {
				n = -1
			}
			ns = append(ns, n)
		}
		if err := src.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			ns = append(ns, -1)
		}
		return ns
	})
	read := async(t, func() received { return readSizes(dst, int(^uint(0)>>1), s.reads) })
	return wrote, read
}

// TestSameStreamsAsTCPConn: for seeded random sequences of writes and
// reads both ways at once, a wrapped connection (to a plain peer) and a
// plain connection carry the same byte streams, end them with the same
// io.EOF, and report the same n for every write.
func TestSameStreamsAsTCPConn(t *testing.T) {
	for seed := range uint64(12) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 0x5eed))
			up, down := newScript(r), newScript(r)
			small := r.IntN(2) == 0

			run := func(wrap bool) (upT, downT transcript) {
				d, a := tcpPair(t)
				if small {
					smallBuffers(t, d, a)
				}
				var c net.Conn = d
				if wrap {
					c = rawconn.Wrap(d)
				}
				upWrote, upRead := play(t, up, seed, c, a)
				downWrote, downRead := play(t, down, seed+1000, a, c)
				upT = transcript{upWrote(), upRead()}
				downT = transcript{downWrote(), downRead()}
				return upT, downT
			}
			plainUp, plainDown := run(false)
			wrappedUp, wrappedDown := run(true)

			// The plain connection is the reference: it carried everything.
			for _, c := range []struct {
				s    script
				seed uint64
				got  transcript
			}{{up, seed, plainUp}, {down, seed + 1000, plainDown}} {
				require.Equal(t, c.s.writes, c.got.written)
				want := c.s.stream(c.seed)
				require.Equal(t, received{len(want), sha256.Sum256(want), io.EOF}, c.got.got)
			}
			require.Equal(t, wrappedUp, plainUp, "client to server")
			require.Equal(t, wrappedDown, plainDown, "server to client")
		})
	}
}
