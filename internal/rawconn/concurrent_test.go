package rawconn_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/internal/rawconn"
)

// TestConcurrentWriters writes framed messages from several goroutines
// at once through one wrapped connection. As with net.TCPConn, each Write
// reaches the peer whole, not interleaved with another, and nothing is
// lost or repeated.
func TestConcurrentWriters(t *testing.T) {
	const writers, messages = 4, 200
	d, a := tcpPair(t)
	smallBuffers(t, d, a)
	w := rawconn.Wrap(d)

	// A message: writer, sequence number, payload length, payload.
	message := func(writer, seq int) []byte {
		size := 1 + (writer*7919+seq*104729)%20000
		m := make([]byte, 12+size)
		binary.BigEndian.PutUint32(m[0:], uint32(writer))
		binary.BigEndian.PutUint32(m[4:], uint32(seq))
		binary.BigEndian.PutUint32(m[8:], uint32(size))
		copy(m[12:], pattern(uint64(writer<<16|seq), size))
		return m
	}

	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for wr := range writers {
		wg.Go(func() {
			for seq := range messages {
				m := message(wr, seq)
				if err := write(w, m); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	closed := async(t, func() error {
		wg.Wait()
		close(errs)
		return w.(interface{ CloseWrite() error }).CloseWrite()
	})

	next := make([]int, writers)
	header := make([]byte, 12)
	for {
		_, err := io.ReadFull(a, header)
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		wr := int(binary.BigEndian.Uint32(header[0:]))
		seq := int(binary.BigEndian.Uint32(header[4:]))
		require.Less(t, wr, writers, "writer id of a torn message")
		require.Equal(t, next[wr], seq, "writer %d: message out of order or torn", wr)
		m := message(wr, seq)
		require.Equal(t, m[:12], header)
		payload := make([]byte, len(m)-12)
		_, err = io.ReadFull(a, payload)
		require.NoError(t, err)
		require.Equal(t, m[12:], payload, "writer %d message %d: payload", wr, seq)
		next[wr]++
	}
	require.NoError(t, closed())
	for err := range errs {
		require.NoError(t, err)
	}
	for wr := range writers {
		require.Equal(t, messages, next[wr], "writer %d: messages received", wr)
	}
}

// TestConcurrentReaders reads one wrapped connection from several
// goroutines at once. As with net.TCPConn, every byte the peer sent is
// read exactly once, by one of them.
func TestConcurrentReaders(t *testing.T) {
	const readers = 4
	d, a := tcpPair(t)
	smallBuffers(t, d, a)
	w := rawconn.Wrap(d)
	data := pattern(3, 2<<20)
	var sent uint64
	for _, b := range data {
		sent += uint64(b)
	}

	type tally struct {
		n   int
		sum uint64
		err error
	}
	results := make([]func() tally, readers)
	for i := range readers {
		results[i] = async(t, func() tally {
			var got tally
			buf := make([]byte, 1000+i*777)
			for {
				n, err := w.Read(buf)
				if n < 0 || n > len(buf) {
					got.err = fmt.Errorf("read returned n=%d for a %d-byte buffer", n, len(buf))
					return got
				}
				for _, b := range buf[:n] {
					got.sum += uint64(b)
				}
				got.n += n
				if err != nil {
					if err != io.EOF {
						got.err = err
					}
					return got
				}
			}
		})
	}
	n, err := a.Write(data)
	require.NoError(t, err)
	require.Equal(t, len(data), n)
	require.NoError(t, a.CloseWrite())

	var total tally
	for _, result := range results {
		got := result()
		require.NoError(t, got.err)
		total.n += got.n
		total.sum += got.sum
	}
	require.Equal(t, len(data), total.n, "bytes read by all readers")
	require.Equal(t, sent, total.sum, "sum of the bytes read by all readers")
}

// TestWaitingCallsEnd: several reads and several writes wait on one
// wrapped connection (no data, peer not reading); a deadline, or Close,
// ends every one of them, as on net.TCPConn.
func TestWaitingCallsEnd(t *testing.T) {
	const callers = 3
	for _, end := range []string{"deadline", "close"} {
		t.Run(end, func(t *testing.T) {
			d, a := tcpPair(t)
			smallBuffers(t, d, a)
			w := rawconn.Wrap(d)
			var started sync.WaitGroup
			var calls []func() error
			for range callers {
				started.Add(2)
				calls = append(calls, async(t, func() error {
					started.Done()
					_, err := w.Read(make([]byte, 16))
					return err
				}), async(t, func() error {
					started.Done()
					_, err := w.Write(make([]byte, 16<<20)) // far more than the buffers hold
					return err
				}))
			}
			started.Wait()
			// Whether each call waits yet or not, the end reaches it.
			if end == "close" {
				require.NoError(t, w.Close())
			} else {
				require.NoError(t, w.SetDeadline(time.Now()))
			}
			for i, call := range calls {
				op := []string{"read", "write"}[i%2]
				err := call()
				if end == "close" {
					require.ErrorIs(t, err, net.ErrClosed, op)
				} else {
					require.ErrorIs(t, err, os.ErrDeadlineExceeded, op)
				}
				var oe *net.OpError
				require.ErrorAs(t, err, &oe)
				require.Equal(t, op, oe.Op)
			}
		})
	}
}
