package apnstest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2/hpack"
)

// BenchmarkHTTP2Server measures the server alone: the load comes from a
// bare HTTP/2 client in a child process (this test binary, running
// TestHTTP2LoadHelper), so this process's CPU time is the server's.
// Metrics: requests/s, server CPU µs per request, client CPU µs per request.
func BenchmarkHTTP2Server(b *testing.B) {
	for _, bc := range []struct {
		conns, streams int
		flush          bool // a flush (a TLS record, a write) per request
		latency        time.Duration
	}{
		{1, 1, true, 0},
		{1, 100, false, 0},
		{1, 100, true, 0},
		{2, 200, true, 0},
		{2, 200, true, time.Millisecond},
		{4, 1000, false, 0},
	} {
		name := fmt.Sprintf("conns=%d/streams=%d", bc.conns, bc.streams)
		if bc.flush {
			name += "/flush"
		}
		if bc.latency > 0 {
			name += "/latency=" + bc.latency.String()
		}
		b.Run(name, func(b *testing.B) {
			s := NewHTTP2Server(HTTP2Latency(bc.latency))
			defer s.Close()
			cmd := exec.Command(os.Args[0], "-test.run=^TestHTTP2LoadHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(),
				"APNSTEST_H2LOAD_ADDR="+s.Addr,
				"APNSTEST_H2LOAD_CA="+string(s.PKI.CAPEM),
				"APNSTEST_H2LOAD_JWT="+h2jwt(b, s, time.Now()),
				fmt.Sprintf("APNSTEST_H2LOAD_N=%d", b.N),
				fmt.Sprintf("APNSTEST_H2LOAD_CONNS=%d", bc.conns),
				fmt.Sprintf("APNSTEST_H2LOAD_STREAMS=%d", bc.streams),
				fmt.Sprintf("APNSTEST_H2LOAD_FLUSH=%t", bc.flush),
			)
			cpu0 := h2cpu()
			b.ResetTimer()
			out, err := cmd.CombinedOutput()
			b.StopTimer()
			cpu := h2cpu() - cpu0
			require.NoError(b, err, "%s", out)
			var res h2loadResult
			_, line, ok := strings.Cut(string(out), "H2LOAD ")
			require.True(b, ok, "%s", out)
			line, _, _ = strings.Cut(line, "\n")
			require.NoError(b, json.Unmarshal([]byte(line), &res))
			require.Equal(b, b.N, res.Done)
			require.Equal(b, b.N, s.Accepted())
			b.ReportMetric(float64(res.Done)/res.Wall.Seconds(), "requests/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(res.Done), "server-µs/req")
			b.ReportMetric(float64(res.CPU.Microseconds())/float64(res.Done), "client-µs/req")
		})
	}
}

type h2loadResult struct {
	Done int
	Wall time.Duration
	CPU  time.Duration
}

// h2cpu is this process's CPU time (user and system) so far.
func h2cpu() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestHTTP2LoadHelper is the load generator of BenchmarkHTTP2Server, run in
// a child process; it does nothing in a normal test run.
func TestHTTP2LoadHelper(t *testing.T) {
	addr := os.Getenv("APNSTEST_H2LOAD_ADDR")
	if addr == "" {
		return
	}
	atoi := func(k string) int {
		n, err := strconv.Atoi(os.Getenv(k))
		require.NoError(t, err, k)
		return n
	}
	n, conns, streams := atoi("APNSTEST_H2LOAD_N"), atoi("APNSTEST_H2LOAD_CONNS"), atoi("APNSTEST_H2LOAD_STREAMS")
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM([]byte(os.Getenv("APNSTEST_H2LOAD_CA"))))
	jwt := os.Getenv("APNSTEST_H2LOAD_JWT")
	flush := os.Getenv("APNSTEST_H2LOAD_FLUSH") == "true"

	cpu0, start := h2cpu(), time.Now()
	var (
		wg   sync.WaitGroup
		done atomic.Int64
		errs = make(chan error, conns)
	)
	for i := range conns {
		share := n / conns
		if i < n%conns {
			share++
		}
		wg.Go(func() {
			k, err := h2loadConn(addr, roots, jwt, share, max(1, streams/conns), flush)
			done.Add(int64(k))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	res := h2loadResult{Done: int(done.Load()), Wall: time.Since(start), CPU: h2cpu() - cpu0}
	b, err := json.Marshal(res)
	require.NoError(t, err)
	fmt.Printf("H2LOAD %s\n", b)
}

// h2loadConn sends n notifications on one connection, keeping up to
// streams in flight (flushing after each one if flush), and returns how
// many were answered 200.
func h2loadConn(addr string, roots *x509.CertPool, jwt string, n, streams int, flush bool) (int, error) {
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, NextProtos: []string{"h2"}})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Minute))
	bw := bufio.NewWriterSize(conn, 64<<10)
	var ebuf bytes.Buffer
	enc := hpack.NewEncoder(&ebuf)
	frame := func(typ, flags byte, sid uint32, p []byte) {
		h := [9]byte{byte(len(p) >> 16), byte(len(p) >> 8), byte(len(p)), typ, flags}
		binary.BigEndian.PutUint32(h[5:], sid)
		bw.Write(h[:])
		bw.Write(p)
	}
	bw.WriteString("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	frame(h2fSettings, 0, 0, nil)

	credits := make(chan struct{}, streams)
	var needAck atomic.Int32
	rerr := make(chan error, 1)
	ok := 0
	go func() { // reader
		br := bufio.NewReaderSize(conn, 64<<10)
		dec := hpack.NewDecoder(4096, nil)
		var h [9]byte
		p := make([]byte, 16384)
		for got := 0; got < n; {
			if _, err := io.ReadFull(br, h[:]); err != nil {
				rerr <- err
				return
			}
			l := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
			if _, err := io.ReadFull(br, p[:l]); err != nil {
				rerr <- err
				return
			}
			switch h[3] {
			case h2fSettings:
				if h[4]&h2flagAck == 0 {
					needAck.Add(1)
				}
			case h2fHeaders:
				fields, err := dec.DecodeFull(p[:l])
				if err != nil {
					rerr <- err
					return
				}
				if len(fields) > 0 && fields[0].Value == "200" {
					ok++
				}
				if h[4]&h2flagEndStream != 0 {
					got++
					credits <- struct{}{}
				}
			case h2fData:
				if h[4]&h2flagEndStream != 0 {
					got++
					credits <- struct{}{}
				}
			case h2fGoAway, h2fRSTStream:
				rerr <- fmt.Errorf("unexpected frame type %d", h[3])
				return
			}
		}
		rerr <- nil
	}()
	path := h2path(h2tok)
	sid := uint32(1)
	for sent, inflight := 0, 0; sent < n; {
		for inflight >= streams {
			if err := bw.Flush(); err != nil {
				return ok, err
			}
			select {
			case <-credits:
				inflight--
			case err := <-rerr:
				return ok, fmt.Errorf("reader ended early: %v", err)
			}
		}
	drain:
		for {
			select {
			case <-credits:
				inflight--
			default:
				break drain
			}
		}
		for needAck.Load() > 0 {
			needAck.Add(-1)
			frame(h2fSettings, h2flagAck, 0, nil)
		}
		ebuf.Reset()
		for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":path", path},
			{"authorization", "bearer " + jwt}, {"apns-topic", h2topic}, {"apns-push-type", "alert"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		frame(h2fHeaders, h2flagEndHeaders, sid, ebuf.Bytes())
		frame(h2fData, h2flagEndStream, sid, h2payload)
		if flush {
			if err := bw.Flush(); err != nil {
				return ok, err
			}
		}
		sid += 2
		sent++
		inflight++
	}
	if err := bw.Flush(); err != nil {
		return ok, err
	}
	if err := <-rerr; err != nil {
		return ok, err
	}
	return ok, nil
}
