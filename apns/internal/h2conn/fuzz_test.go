package h2conn_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/jetpush/apns-worker/apns/internal/h2conn"
)

// countingOwner counts each request's ends; a second end is a bug.
type countingOwner struct {
	mu   sync.Mutex
	ends map[*testReq]int
}

func (o *countingOwner) Prepare(*testReq) bool { return true }

func (o *countingOwner) EncodeHeaders(r *testReq, h *h2conn.HeaderEncoder) {
	(&testOwner{}).EncodeHeaders(r, h)
}

func (o *countingOwner) Done(r *testReq, _ error) {
	o.mu.Lock()
	o.ends[r]++
	o.mu.Unlock()
}

// fuzzSeeds are server byte streams (after its SETTINGS) worth starting
// from: a good answer, a bad SETTINGS, a GOAWAY, DATA without HEADERS,
// PING, a header block cut short.
func fuzzSeeds() [][]byte {
	var seeds [][]byte
	frames := func(write func(fr *http2.Framer, block []byte)) {
		var buf, hb bytes.Buffer
		_ = hpack.NewEncoder(&hb).WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
		write(http2.NewFramer(&buf, nil), hb.Bytes())
		seeds = append(seeds, buf.Bytes())
	}
	seeds = append(seeds, nil)
	frames(func(fr *http2.Framer, block []byte) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndHeaders: true, EndStream: true})
	})
	frames(func(fr *http2.Framer, block []byte) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block, EndHeaders: true})
		_ = fr.WriteData(3, true, []byte(`{"reason":"BadDeviceToken"}`))
	})
	frames(func(fr *http2.Framer, _ []byte) {
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 0})
	})
	frames(func(fr *http2.Framer, _ []byte) { _ = fr.WriteGoAway(1, http2.ErrCodeNo, []byte("bye")) })
	frames(func(fr *http2.Framer, _ []byte) { _ = fr.WriteData(1, true, []byte("x")) })
	frames(func(fr *http2.Framer, _ []byte) { _ = fr.WritePing(false, [8]byte{1}) })
	frames(func(fr *http2.Framer, block []byte) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:len(block)/2+1]})
		_ = fr.WriteRSTStream(1, http2.ErrCodeRefusedStream)
	})
	return seeds
}

// FuzzPeer feeds arbitrary bytes as the server's frames: the connection
// never panics or hangs, and every request it took ends exactly once.
func FuzzPeer(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cli, srv := net.Pipe()
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, _ = io.Copy(io.Discard, srv) // the client's frames
		}()
		go func() {
			defer wg.Done()
			_ = http2.NewFramer(srv, nil).WriteSettings()
			_, _ = srv.Write(data)
			srv.Close()
		}()
		defer wg.Wait()

		owner := &countingOwner{ends: map[*testReq]int{}}
		queue := make(chan *testReq, 3)
		reqs := make([]*testReq, cap(queue))
		for i := range reqs {
			reqs[i] = &testReq{path: "/" + string(rune('a'+i))}
			reqs[i].Payload = payload
			queue <- reqs[i]
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := h2conn.Handshake(ctx, cli, h2conn.Config[*testReq]{Queue: queue, Owner: owner,
			RequestTimeout: 50 * time.Millisecond, MaxHeaderListSize: 1024})
		if err != nil {
			return
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = c.Serve(ctx)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return")
		}
		cli.Close()
		untaken := len(queue)
		owner.mu.Lock()
		defer owner.mu.Unlock()
		for r, n := range owner.ends {
			if n != 1 {
				t.Fatalf("%s ended %d times", r.path, n)
			}
		}
		if len(owner.ends)+untaken != len(reqs) {
			t.Fatalf("%d ended, %d untaken, of %d", len(owner.ends), untaken, len(reqs))
		}
	})
}
