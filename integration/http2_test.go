package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
	"github.com/jetpush/apns-worker/consumer"
)

// TestHTTP2Mode runs the worker in HTTP/2 mode with token auth (the test
// server's .p8 key, key id, team id and topic) against the HTTP/2 test
// server: jobs are delivered; 410 Unregistered and 400 BadDeviceToken reach
// the rejected and the bad-tokens subjects; 400 DeviceTokenNotForTopic is a
// rejection but not a bad token. It runs with both HTTP/2 engines
// (APNS_WORKER_APNS_ENGINE h2 and std): the same jobs, the same events.
func TestHTTP2Mode(t *testing.T) {
	for _, engine := range []string{"h2", "std"} {
		t.Run(engine, func(t *testing.T) { testHTTP2Mode(t, engine, "direct") })
	}
	// Go's net calls on every socket, to NATS and to APNs.
	t.Run("h2 runtime socket calls", func(t *testing.T) { testHTTP2Mode(t, "h2", "runtime") })
}

func testHTTP2Mode(t *testing.T, engine, socketCalls string) {
	const n = 500
	tok := func(i int) apns.Token { return token(0xc0, i) }
	type reject struct {
		status   int
		reason   string
		badToken bool
	}
	rejects := map[int]reject{
		100: {410, "Unregistered", true},
		200: {400, "BadDeviceToken", true},
		300: {400, "DeviceTokenNotForTopic", false},
	}
	var opts []apnstest.HTTP2Option
	for i, r := range rejects {
		opts = append(opts, apnstest.HTTP2Reason(tok(i), r.status, r.reason))
	}
	h2 := startHTTP2(t, opts...)
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	env := http2Env(t, ns.ClientURL(), h2)
	env["APNS_WORKER_EVENTS_RECEIPTS"] = "true"
	env["APNS_WORKER_APNS_ENGINE"] = engine
	env["APNS_WORKER_SOCKET_CALLS"] = socketCalls
	w := startWorker(t, "http2-"+engine+"-"+socketCalls, env)
	jobs := publishJobs(t, js, "h2", n, tok)
	waitDrained(t, js, 90*time.Second)

	byID := map[string]int{}
	for i, j := range jobs {
		byID[j.ID] = i
		if _, ok := rejects[i]; ok {
			require.Zero(t, h2.AcceptedFor(j.Token), "job %s", j.ID)
			continue
		}
		require.GreaterOrEqual(t, h2.AcceptedFor(j.Token), 1, "job %s not delivered", j.ID)
	}
	st := h2.Statuses()
	require.Equal(t, 1, st[410], "statuses %v", st)
	require.Equal(t, 2, st[400], "statuses %v", st)
	require.Equal(t, 1, h2.Mints(), "one JWT for the process")

	rej := readEvents[consumer.RejectionEvent](t, js, subjRejected)
	require.Len(t, rej, len(rejects))
	for _, ev := range rej {
		i, ok := byID[ev.JobID]
		require.True(t, ok, "event for unknown job %q", ev.JobID)
		r, ok := rejects[i]
		require.True(t, ok, "rejection event for job %s", ev.JobID)
		require.Equal(t, r.reason, ev.Reason)
		require.Equal(t, r.status, ev.HTTPStatus)
		require.Equal(t, "http2", ev.Protocol)
		require.Equal(t, jobs[i].Token.String(), ev.Token)
		require.JSONEq(t, jobJSON(t, jobs[i]), string(ev.Job))
		if r.status == 410 {
			require.False(t, ev.Timestamp.IsZero(), "410 carries APNs' timestamp")
		}
	}
	var wantBad, gotBad []string
	for i, r := range rejects {
		if r.badToken {
			wantBad = append(wantBad, tok(i).String())
		}
	}
	for _, ev := range readEvents[consumer.BadTokenEvent](t, js, subjBadTokens) {
		gotBad = append(gotBad, ev.Token)
		require.Equal(t, consumer.SourceRejection, ev.Source)
		require.Equal(t, rejects[byID[ev.JobID]].reason, ev.Reason)
	}
	require.ElementsMatch(t, wantBad, gotBad, "410 Unregistered and 400 BadDeviceToken are bad tokens")

	receipts := readEvents[consumer.ReceiptEvent](t, js, eventsPrefix+"."+consumer.KindDelivered)
	require.Len(t, receipts, n-len(rejects), "one receipt per delivered job")
	for _, ev := range receipts {
		i, ok := byID[ev.JobID]
		require.True(t, ok, "receipt for unknown job %q", ev.JobID)
		_, rejected := rejects[i]
		require.False(t, rejected, "receipt for rejected job %s", ev.JobID)
		require.Equal(t, jobs[i].Token.String(), ev.Token)
		require.Equal(t, jobs[i].Seq, ev.Seq)
		require.NotEmpty(t, ev.APNsID, "receipt carries the apns-id")
	}
	require.Equal(t, 0, w.stop(60*time.Second), "exit code")
}

// startHTTP2 starts an HTTP/2 test server, closed at cleanup.
func startHTTP2(tb testing.TB, opts ...apnstest.HTTP2Option) *apnstest.HTTP2Server {
	tb.Helper()
	h2 := apnstest.NewHTTP2Server(opts...)
	tb.Cleanup(h2.Close)
	return h2
}

// http2Env is the environment of a worker in HTTP/2 mode with token auth
// (the server's .p8 key, key id and team id) sending to h2.
func http2Env(tb testing.TB, natsURL string, h2 *apnstest.HTTP2Server) map[string]string {
	tb.Helper()
	dir := tb.TempDir()
	ca, p8 := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "AuthKey.p8")
	require.NoError(tb, os.WriteFile(ca, h2.PKI.CAPEM, 0o600))
	require.NoError(tb, os.WriteFile(p8, h2.P8(), 0o600))
	return map[string]string{
		"APNS_WORKER_NATS_URL":      natsURL,
		"APNS_WORKER_APNS_MODE":     "http2",
		"APNS_WORKER_APNS_ADDR":     h2.URL,
		"APNS_WORKER_APNS_CA_FILE":  ca,
		"APNS_WORKER_APNS_P8_FILE":  p8,
		"APNS_WORKER_APNS_KEY_ID":   h2.KeyID,
		"APNS_WORKER_APNS_TEAM_ID":  h2.TeamID,
		"APNS_WORKER_APNS_TOPIC":    "com.example.app",
		"APNS_WORKER_JOBS_BACKOFF":  "200ms,1s",
		"APNS_WORKER_MAX_IN_FLIGHT": "1000",
	}
}

// TestDeadLetter: a job APNs keeps answering 503 is retried by the engine,
// naked with back-off by the worker, and after APNS_WORKER_JOBS_MAX_DELIVER
// deliveries dead-lettered exactly once, then terminated; other jobs flow.
func TestDeadLetter(t *testing.T) {
	const n = 20
	doomed := token(0xdd, 0)
	h2 := startHTTP2(t, apnstest.HTTP2Reason(doomed, 503, "ServiceUnavailable"))
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	env := http2Env(t, ns.ClientURL(), h2)
	env["APNS_WORKER_JOBS_MAX_DELIVER"] = "3"
	env["APNS_WORKER_JOBS_BACKOFF"] = "100ms"
	w := startWorker(t, "deadletter", env)
	jobs := publishJobs(t, js, "dl", n, func(i int) apns.Token {
		if i == 7 {
			return doomed
		}
		return token(0xd1, i)
	})
	waitDrained(t, js, 90*time.Second)
	requireAllAccepted(t, h2Counter{h2}, jobs, func(tk apns.Token) bool { return tk.String() == doomed.String() })

	dl := readEvents[consumer.DeadLetterEvent](t, js, eventsPrefix+"."+consumer.KindDeadLetter)
	require.Len(t, dl, 1)
	require.Equal(t, jobs[7].ID, dl[0].JobID)
	require.Equal(t, jobs[7].Seq, dl[0].Seq)
	require.Equal(t, uint64(3), dl[0].Deliveries)
	require.Equal(t, consumer.ReasonMaxDeliver, dl[0].Reason)
	require.NotEmpty(t, dl[0].Error)
	require.JSONEq(t, jobJSON(t, jobs[7]), string(dl[0].Job))
	require.Zero(t, subjectCount(t, js, subjRejected))
	require.Zero(t, subjectCount(t, js, subjBadTokens))
	require.Equal(t, 3*(1+3), h2.Statuses()[503], "3 deliveries, each sent once and retried 3 times by the engine")
	require.Equal(t, 0, w.stop(60*time.Second), "exit code")
}

// TestHTTP2GracefulStop: SIGTERM while HTTP/2 requests are in flight (the
// server answers after 100ms): the worker exits 0, every job it took is
// acked (the server accepted it) or naked, none stranded; a restart
// finishes the rest.
func TestHTTP2GracefulStop(t *testing.T) {
	const n = 5000
	h2 := startHTTP2(t, apnstest.HTTP2Latency(100*time.Millisecond))
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	env := http2Env(t, ns.ClientURL(), h2)
	w1 := startWorker(t, "h2-graceful-1", env)

	termed := signalWhen(t, w1, syscall.SIGTERM, func() bool { return h2.Accepted() >= n/4 })
	jobs := publishJobs(t, js, "h2g", n, func(i int) apns.Token { return token(0x62, i) })
	awaitSignal(t, termed, 120*time.Second)
	require.Equal(t, 0, w1.wait(60*time.Second), "exit code after SIGTERM")

	requireStoppedCleanly(t, js, h2Counter{h2}, jobs)

	w2 := startWorker(t, "h2-graceful-2", env)
	waitDrained(t, js, 120*time.Second)
	dups := requireAllAccepted(t, h2Counter{h2}, jobs, nil)
	require.Equal(t, 0, w2.stop(60*time.Second), "exit code")
	t.Logf("http2 graceful: %d duplicates at the server", dups)
}

// TestHTTP2RefusedCredentials: a worker signing with the wrong .p8 key is
// refused (403 InvalidProviderToken): it reports not ready, logs it, and
// naks the jobs without burning them (no dead letter, no rejection event);
// restarted with the right key, it delivers every job.
func TestHTTP2RefusedCredentials(t *testing.T) {
	const n = 50
	h2 := startHTTP2(t)
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	good := http2Env(t, ns.ClientURL(), h2)
	bad := maps.Clone(good)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	bad["APNS_WORKER_APNS_P8_FILE"] = filepath.Join(t.TempDir(), "wrong.p8")
	require.NoError(t, os.WriteFile(bad["APNS_WORKER_APNS_P8_FILE"], pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600))
	bad["APNS_WORKER_HTTP_ADDR"] = freeAddr(t)
	bad["APNS_WORKER_JOBS_MAX_DELIVER"] = "2"
	bad["APNS_WORKER_JOBS_BACKOFF"] = "100ms"

	w1 := startWorker(t, "h2-wrong-key", bad)
	jobs := publishJobs(t, js, "creds", n, func(i int) apns.Token { return token(0x03, i) })
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	var ready string
	waitFor(t, 30*time.Second, "/readyz to report the refused credentials", func() bool {
		resp, err := client.Get("http://" + bad["APNS_WORKER_HTTP_ADDR"] + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		ready = string(b)
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	t.Logf("/readyz: %s", strings.TrimSpace(ready))
	// Jobs are held, not cycled: those in flight when the 403 came back are
	// naked once (with the back-off), then every job is held (InProgress)
	// while one is probed now and then; none is dead-lettered.
	waitFor(t, 30*time.Second, "every job held", func() bool {
		return w1.metric("apns_worker_jobs_in_flight") == n
	})
	// Settled: no request is left at APNs (every 403 handled), and every
	// job naked after its 403 came back. (Without the first, this held
	// before any 403 came back, and their redeliveries fell in the window.)
	waitFor(t, 30*time.Second, "every naked job delivered again", func() bool {
		return w1.metric("apns_engine_in_flight") == 0 && w1.metric("apns_worker_jobs_failed_total") > 0 &&
			w1.metric("apns_worker_jobs_received_total") == n+w1.metric("apns_worker_jobs_failed_total")
	})
	r1 := w1.metric("apns_worker_jobs_received_total")
	<-time.After(2 * time.Second) // a measurement window, not synchronisation
	r2 := w1.metric("apns_worker_jobs_received_total")
	t.Logf("while refused: %v deliveries for %d jobs, %v more in 2 s", r1, n, r2-r1)
	require.Equal(t, r1, r2, "jobs held while credentials are refused are not redelivered")
	require.LessOrEqual(t, r1, float64(2*n), "at most one redelivery per job")
	require.Equal(t, float64(n), w1.metric("apns_worker_jobs_in_flight"), "every job held")
	require.NotZero(t, h2.Statuses()[403])
	require.Contains(t, w1.log.String(), "APNS REFUSED THE CREDENTIALS")
	require.Zero(t, h2.Accepted())
	require.Equal(t, 0, w1.stop(60*time.Second), "exit code")
	require.Equal(t, uint64(n), streamState(t, js, jobsStream).Msgs, "every job kept")
	require.Zero(t, subjectCount(t, js, eventsPrefix+"."+consumer.KindDeadLetter), "dead letters")
	require.Zero(t, subjectCount(t, js, subjRejected), "rejections")

	w2 := startWorker(t, "h2-right-key", good)
	waitDrained(t, js, 90*time.Second)
	requireAllAccepted(t, h2Counter{h2}, jobs, nil)
	require.Zero(t, subjectCount(t, js, eventsPrefix+"."+consumer.KindDeadLetter), "dead letters")
	require.Equal(t, 0, w2.stop(60*time.Second), "exit code")
}

// TestHTTP2Crash: the worker in HTTP/2 mode (receipts on) is SIGKILLed in
// the middle of the jobs and started again: every job is accepted by the
// server or rejected, and the events of jobs handled twice are not
// doubled: exactly one receipt per delivered job and one rejection and
// bad-token event per 410.
func TestHTTP2Crash(t *testing.T) {
	const n = 5000
	isGone := func(i int) bool { return i%500 == 9 }
	tok := func(i int) apns.Token {
		if isGone(i) {
			return token(0x41, i)
		}
		return token(0x40, i)
	}
	var opts []apnstest.HTTP2Option
	for i := range n {
		if isGone(i) {
			opts = append(opts, apnstest.HTTP2Reason(tok(i), 410, "Unregistered"))
		}
	}
	opts = append(opts, apnstest.HTTP2Latency(20*time.Millisecond))
	h2 := startHTTP2(t, opts...)
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	env := http2Env(t, ns.ClientURL(), h2)
	env["APNS_WORKER_EVENTS_RECEIPTS"] = "true"
	env["APNS_WORKER_APNS_REQUEST_TIMEOUT"] = "2s"
	env["APNS_WORKER_JOBS_ACK_WAIT"] = "3s" // the killed worker's jobs come back after it
	w1 := startWorker(t, "h2-crash-1", env)

	killed := signalWhen(t, w1, syscall.SIGKILL, func() bool { return h2.Accepted() >= n/3 })
	jobs := publishJobs(t, js, "h2crash", n, tok)
	awaitSignal(t, killed, 120*time.Second)
	require.NotZero(t, w1.wait(10*time.Second), "killed worker's exit code")
	require.NotZero(t, streamState(t, js, jobsStream).Msgs, "the kill came after the last job")
	rejected := func(t apns.Token) bool { return t[0] == 0x41 }
	requireNoAckWithoutDelivery(t, js, h2Counter{h2}, jobs, rejected)

	w2 := startWorker(t, "h2-crash-2", env)
	waitDrained(t, js, 120*time.Second)
	dups := requireAllAccepted(t, h2Counter{h2}, jobs, rejected)
	require.Equal(t, n/500, subjectCount(t, js, subjRejected), "one rejection event per 410")
	require.Equal(t, n/500, subjectCount(t, js, subjBadTokens), "one bad-token event per 410")
	require.Equal(t, n-n/500, subjectCount(t, js, eventsPrefix+"."+consumer.KindDelivered), "one receipt per delivered job")
	require.Equal(t, 0, w2.stop(60*time.Second), "exit code")
	t.Logf("http2 crash: %d jobs, %d duplicates at the server, statuses %v", n, dups, h2.Statuses())
}

// TestHTTP2Faults: through the worker, the HTTP/2 server sends GOAWAY on
// every connection after 700 requests, answers 200 requests 503 and
// refuses 100 streams: every job is accepted exactly once (requests above
// GOAWAY's last stream id and refused streams were not processed, so they
// are retried without duplicates), nothing is dead-lettered or rejected.
func TestHTTP2Faults(t *testing.T) {
	const n = 5000
	h2 := startHTTP2(t,
		apnstest.HTTP2GoAwayAfter(700),
		apnstest.HTTP2Inject(200, 503, "ServiceUnavailable"),
		apnstest.HTTP2RefuseStreams(100))
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	w := startWorker(t, "h2-faults", http2Env(t, ns.ClientURL(), h2))
	jobs := publishJobs(t, js, "h2f", n, func(i int) apns.Token { return token(0x4f, i) })
	waitDrained(t, js, 120*time.Second)
	dups := requireAllAccepted(t, h2Counter{h2}, jobs, nil)
	require.Zero(t, dups, "notifications accepted twice")
	require.Equal(t, 200, h2.Statuses()[503])
	require.Equal(t, 100, h2.Refused())
	require.Zero(t, subjectCount(t, js, eventsPrefix+"."+consumer.KindDeadLetter))
	require.Zero(t, subjectCount(t, js, subjRejected))
	require.Equal(t, 0, w.stop(60*time.Second), "exit code")
	t.Logf("http2 faults: %d connections, statuses %v", h2.Conns(), h2.Statuses())
}
