package apns_test

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// benchServerEnv makes the test binary run only an apnstest.HTTP2Server
// (see TestMain), so that the benchmark measures the client's CPU alone.
const benchServerEnv = "APNS_HTTP2_BENCH_SERVER"

// benchServerInfo is what the server process tells the benchmark.
type benchServerInfo struct {
	URL    string
	KeyID  string
	TeamID string
	P8     []byte
	CAPEM  []byte
}

// runBenchServer serves until stdin closes; it is the whole life of the
// server process.
func runBenchServer() {
	s := apnstest.NewHTTP2Server()
	info, _ := json.Marshal(benchServerInfo{URL: s.URL, KeyID: s.KeyID, TeamID: s.TeamID, P8: s.P8(), CAPEM: s.PKI.CAPEM})
	fmt.Println(string(info))
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the benchmark ends
	s.Close()
}

// startBenchServer runs the HTTP/2 test server in its own process.
func startBenchServer(b *testing.B) benchServerInfo {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchServerEnv+"=1")
	stdin, err := cmd.StdinPipe()
	require.NoError(b, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(b, err)
	cmd.Stderr = os.Stderr
	require.NoError(b, cmd.Start())
	b.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	require.NoError(b, err)
	var info benchServerInfo
	require.NoError(b, json.Unmarshal(line, &info))
	return info
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHTTP2 sends through the HTTP/2 engine to an
// apnstest.HTTP2Server in another process, at several concurrencies (the
// engine's max in flight). It reports notifications/s and the client's
// CPU time per notification (this process only).
func BenchmarkHTTP2(b *testing.B) {
	info := startBenchServer(b)
	key, err := apns.ParseP8(info.P8)
	require.NoError(b, err)
	roots := x509.NewCertPool()
	require.True(b, roots.AppendCertsFromPEM(info.CAPEM))
	ns := make([]*apns.Notification, 4096)
	for i := range ns {
		ns[i] = &apns.Notification{Token: h2Token(i), Payload: h2Payload, PushType: apns.PushTypeAlert}
	}
	conns := 2
	if v := os.Getenv("APNS_HTTP2_BENCH_CONNS"); v != "" {
		_, _ = fmt.Sscan(v, &conns)
	}
	for _, conc := range []int{50, 200, 1000} {
		b.Run(fmt.Sprintf("concurrency-%d", conc), func(b *testing.B) {
			var done, failed atomic.Int64
			var target atomic.Int64
			finished := make(chan struct{}, 1)
			e, err := apns.NewHTTP2Engine(info.URL, apns.TokenAuth(key, info.KeyID, info.TeamID),
				apns.WithRootCAs(roots), apns.WithTopic(h2Topic), apns.WithConns(conns),
				apns.WithMaxInFlight(conc),
				apns.WithOutcomeFunc(func(o apns.Outcome) {
					if o.Err != nil {
						failed.Add(1)
					}
					if done.Add(1) == target.Load() {
						finished <- struct{}{}
					}
				}))
			require.NoError(b, err)
			defer closeH2Engine(b, e)
			ctx := context.Background()
			run := func(n int) {
				done.Store(0)
				target.Store(int64(n))
				for i := range n {
					if err := e.Send(ctx, ns[i%len(ns)], nil); err != nil {
						b.Fatal(err)
					}
				}
				<-finished
			}
			run(2 * conc) // connect and warm up
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			run(b.N)
			b.StopTimer()
			cpu := cpuTime() - cpu0
			require.Zero(b, failed.Load())
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "notifications/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "client-cpu-µs/notification")
		})
	}
}
