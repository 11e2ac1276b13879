package integration

import (
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
)

// TestStopWhileAPNsDown is the README's quick-start promise checked from
// outside: "Stop it with Ctrl-C (SIGINT) or SIGTERM: it stops pulling, lets
// the engine finish, acks or naks every job it holds, and exits 0 within
// APNS_WORKER_SHUTDOWN_GRACE" (and *Operations*: exit 0 after a clean stop).
// Here APNs is down while the worker holds jobs: its address refuses TCP,
// or accepts TCP and never says a word (no TLS handshake). A SIGTERM must
// still end within the grace period with exit code 0, every held job naked
// (none stranded until ACK_WAIT).
//
// Observed (2026-12-07, outside10): the worker exits 1 within the grace,
// logging `stopped with an error` with "consumer: close engine: apns:
// close: 5 notifications failed: context deadline exceeded\nconsumer:
// flush acks: context deadline exceeded": the engine's Close takes the
// whole grace waiting for a connection that cannot come, which leaves no
// time to flush the naks (they still reach the server as the connection
// drains, so nothing is lost). The same happens against a server that
// completes TLS but never sends SETTINGS, one without h2 in ALPN, and one
// whose certificate the worker does not trust.
func TestStopWhileAPNsDown(t *testing.T) {
	t.Skip("defect: SIGTERM while APNs is unreachable exits 1 (close engine: context deadline exceeded; flush acks: context deadline exceeded), README promises exit 0 within APNS_WORKER_SHUTDOWN_GRACE")
	t.Run("refused", func(t *testing.T) { testStopWhileAPNsDown(t, freeAddr(t)) })
	t.Run("silent", func(t *testing.T) { testStopWhileAPNsDown(t, silentListener(t)) })
}

func testStopWhileAPNsDown(t *testing.T, apnsAddr string) {
	const (
		n     = 5
		grace = 3 * time.Second
	)
	h2 := startHTTP2(t) // for its CA and .p8 key only: the worker never reaches it
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	env := http2Env(t, ns.ClientURL(), h2)
	env["APNS_WORKER_APNS_ADDR"] = (&url.URL{Scheme: "https", Host: apnsAddr}).String()
	env["APNS_WORKER_SHUTDOWN_GRACE"] = grace.String()
	env["APNS_WORKER_JOBS_ACK_WAIT"] = "60s" // a stranded job would wait this long
	w := startWorker(t, "apns-down", env)
	publishJobs(t, js, "down", n, func(i int) apns.Token { return token(0x0d, i) })
	waitFor(t, 30*time.Second, "the worker to hold every job", func() bool {
		return consumerInfo(t, js).NumAckPending == n
	})

	start := time.Now()
	code := w.stop(grace + 30*time.Second)
	took := time.Since(start)
	t.Logf("stopped in %s with exit code %d", took.Round(time.Millisecond), code)
	require.Less(t, took, grace+5*time.Second, "shutdown overran the grace period")
	_, ci := waitAcksSettled(t, js, 10*time.Second)
	require.Equal(t, n, ci.NumAckPending+int(ci.NumPending), "every job still in the stream")
	requireNotStranded(t, js, ci)
	require.Equal(t, 0, code, "exit code after SIGTERM\n%s", w.log.tail())
}

// silentListener accepts TCP connections on loopback and never writes or
// closes them until the test ends: an APNs address behind a black hole.
func silentListener(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	var (
		mu    sync.Mutex
		conns []net.Conn
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}
