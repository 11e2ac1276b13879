package integration

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
	"github.com/jetpush/apns-worker/consumer"
)

// The worker process against a third-party HTTP/2 gateway we did not
// write (hostileGW, on net/http's HTTP/2 server) that misbehaves the way
// proxies, load balancers and broken servers do. Each test publishes good
// jobs and known-bad-token jobs and asserts: every good job delivered (a
// 200 at the gateway) at least once, exactly once where the protocol
// allows it; no good job rejected or dead-lettered; one rejection and one
// bad-token event per bad token; the jobs stream drained; the worker alive,
// under the memory bound, and stopping with exit 0.

// hostileRSSBound is the worker's peak RSS (VmHWM) allowed in these tests.
const hostileRSSBound = 128 << 20

// hostileEngines are the HTTP/2 engines the tests run: the worker's own
// (the default) and the reference on x/net's Transport.
var hostileEngines = []string{"h2", "std"}

// forEngines runs test once per engine, as subtests.
func forEngines(t *testing.T, test func(t *testing.T, engine string)) {
	for _, engine := range hostileEngines {
		t.Run(engine, func(t *testing.T) { test(t, engine) })
	}
}

// hostileEnv is the environment of a worker in HTTP/2 mode (engine h2 or
// std) with token auth
// (a fresh .p8 key; the gateway does not check signatures) sending to url,
// whose server pki's CA verifies.
func hostileEnv(tb testing.TB, engine, natsURL, url string, pki *apnstest.PKI) map[string]string {
	tb.Helper()
	dir := tb.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(tb, err)
	ca, p8 := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "AuthKey.p8")
	require.NoError(tb, os.WriteFile(ca, pki.CAPEM, 0o600))
	require.NoError(tb, os.WriteFile(p8, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600))
	return map[string]string{
		"APNS_WORKER_NATS_URL":      natsURL,
		"APNS_WORKER_APNS_MODE":     "http2",
		"APNS_WORKER_APNS_ENGINE":   engine,
		"APNS_WORKER_APNS_ADDR":     url,
		"APNS_WORKER_APNS_CA_FILE":  ca,
		"APNS_WORKER_APNS_P8_FILE":  p8,
		"APNS_WORKER_APNS_KEY_ID":   "HOSTILE123",
		"APNS_WORKER_APNS_TEAM_ID":  "TEAM123456",
		"APNS_WORKER_APNS_TOPIC":    "com.example.app",
		"APNS_WORKER_JOBS_BACKOFF":  "200ms,1s",
		"APNS_WORKER_MAX_IN_FLIGHT": "1000",
	}
}

// hostileRig is one run's parts: the gateway, the chaos proxy in front of
// it (nil when the worker talks to the gateway directly), the jobs stream
// and the worker.
type hostileRig struct {
	gw    *hostileGW
	proxy *chaosProxy
	js    jetstream.JetStream
	w     *worker
}

// startRig starts the gateway (bad tokens, fault phases), the proxy with
// plan unless plan is nil, NATS, and a worker named name with the HTTP/2
// engine and hostileEnv plus env, sending to the proxy or the gateway.
//
// HOSTILE_DEBUG=<file>: the worker logs every job's outcome (debug) and its
// log is written to <file> at the end, to trace a duplicate.
func startRig(t *testing.T, name, engine string, bad map[string]badAnswer, phases []gwPhase, plan func(serial int) connPlan, env map[string]string) *hostileRig {
	t.Helper()
	r := &hostileRig{gw: startHostileGW(t, bad, phases)}
	url := r.gw.URL
	if plan != nil {
		r.proxy = startChaosProxy(t, r.gw.PKI, r.gw.srv.Listener.Addr().String(), plan)
		url = r.proxy.URL
	}
	ns := startNATS(t)
	_, r.js = connect(t, ns.ClientURL())
	full := hostileEnv(t, engine, ns.ClientURL(), url, r.gw.PKI)
	maps.Copy(full, env)
	debug := os.Getenv("HOSTILE_DEBUG")
	if debug != "" {
		full["APNS_WORKER_LOG_LEVEL"] = "debug"
	}
	r.w = startWorker(t, name+"-"+engine, full)
	if debug != "" {
		t.Cleanup(func() { _ = os.WriteFile(debug, []byte(r.w.log.String()), 0o600) })
	}
	return r
}

// hostileJobs are the jobs of one run: good ones and bad ones by answer.
type hostileJobs struct {
	good []job
	bad  map[badAnswer][]job
}

func goodToken(i int) apns.Token { return token(0xa0, i) }

func badToken(kind badAnswer, i int) apns.Token { return token(0xb0+byte(kind), i) }

// badSet returns the gateway's bad-token table for perKind tokens of each
// kind.
func badSet(perKind int, kinds ...badAnswer) map[string]badAnswer {
	m := map[string]badAnswer{}
	for _, k := range kinds {
		for i := range perKind {
			m[badToken(k, i).String()] = k
		}
	}
	return m
}

// publishHostile publishes half the nGood good jobs, the bad ones of bad,
// then the other half.
func publishHostile(tb testing.TB, js jetstream.JetStream, nGood int, bad map[string]badAnswer) hostileJobs {
	tb.Helper()
	perKind := map[badAnswer]int{}
	for _, k := range bad {
		perKind[k]++
	}
	out := hostileJobs{bad: map[badAnswer][]job{}}
	out.good = publishJobs(tb, js, "good", nGood/2, goodToken)
	for k, n := range perKind {
		out.bad[k] = publishJobs(tb, js, fmt.Sprintf("bad%d", k), n, func(i int) apns.Token { return badToken(k, i) })
	}
	rest := publishJobs(tb, js, "good2", nGood-nGood/2, func(i int) apns.Token { return goodToken(nGood/2 + i) })
	out.good = append(out.good, rest...)
	return out
}

// vmHWM returns the process's peak resident set size in bytes.
func vmHWM(tb testing.TB, pid int) int64 {
	tb.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(tb, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			require.NoError(tb, err)
			return kb << 10
		}
	}
	tb.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// hostileVerdict checks a drained run: good jobs delivered (returns the
// duplicates), the rejected kinds rejected once each with a bad-token
// event, the dead-lettered kinds dead-lettered once and never rejected,
// nothing else rejected or dead-lettered.
func hostileVerdict(tb testing.TB, js jetstream.JetStream, gw *hostileGW, jobs hostileJobs, deadKinds ...badAnswer) (dups int) {
	tb.Helper()
	var missing, twice []string
	for _, j := range jobs.good {
		switch n := gw.count(j.Token); {
		case n == 0:
			missing = append(missing, j.ID)
		case n > 1:
			dups += n - 1
			if len(twice) < 10 {
				twice = append(twice, fmt.Sprintf("%s at requests %v", j.ID, gw.servedAt(j.Token)))
			}
		}
	}
	if dups > 0 {
		tb.Logf("%d duplicates; first: %s", dups, strings.Join(twice, ", "))
	}
	require.Empty(tb, missing, "%d good jobs never delivered (first: %v)", len(missing), missing[:min(len(missing), 10)])

	dead := map[badAnswer]bool{}
	for _, k := range deadKinds {
		dead[k] = true
	}
	wantReject, wantDead := map[string]job{}, map[string]job{}
	for k, js := range jobs.bad {
		for _, j := range js {
			require.Zero(tb, gw.count(j.Token), "bad job %s got a 200", j.ID)
			if dead[k] {
				wantDead[j.ID] = j
			} else {
				wantReject[j.ID] = j
			}
		}
	}
	rejected := map[string]int{}
	for _, ev := range readEvents[consumer.RejectionEvent](tb, js, subjRejected) {
		rejected[ev.JobID]++
		j, ok := wantReject[ev.JobID]
		require.True(tb, ok, "job %s rejected (%d %s: %s): not a bad token", ev.JobID, ev.HTTPStatus, ev.Reason, ev.Error)
		require.Equal(tb, j.Token.String(), ev.Token)
		if strings.HasPrefix(ev.JobID, fmt.Sprintf("bad%d-", badUnregistered)) {
			require.Equal(tb, "Unregistered", ev.Reason)
			require.Equal(tb, 410, ev.HTTPStatus)
			require.False(tb, ev.Timestamp.IsZero(), "410 timestamp")
		} else {
			require.Equal(tb, "BadDeviceToken", ev.Reason, "job %s", ev.JobID)
			require.Equal(tb, 400, ev.HTTPStatus, "job %s", ev.JobID)
		}
	}
	for id := range wantReject {
		require.Equal(tb, 1, rejected[id], "rejection events for bad job %s", id)
	}
	badTokens := map[string]int{}
	for _, ev := range readEvents[consumer.BadTokenEvent](tb, js, subjBadTokens) {
		badTokens[ev.JobID]++
		require.Contains(tb, wantReject, ev.JobID, "bad-token event for job %s", ev.JobID)
		require.Equal(tb, consumer.SourceRejection, ev.Source)
	}
	for id := range wantReject {
		require.Equal(tb, 1, badTokens[id], "bad-token events for bad job %s", id)
	}
	deadSeen := map[string]int{}
	for _, ev := range readEvents[consumer.DeadLetterEvent](tb, js, eventsPrefix+"."+consumer.KindDeadLetter) {
		deadSeen[ev.JobID]++
		require.Contains(tb, wantDead, ev.JobID, "job %s dead-lettered: %s", ev.JobID, ev.Error)
		require.Equal(tb, consumer.ReasonMaxDeliver, ev.Reason)
		require.Contains(tb, ev.Error, "not an APNs verdict", "dead letter cause of job %s", ev.JobID)
	}
	for id := range wantDead {
		require.Equal(tb, 1, deadSeen[id], "dead-letter events for job %s", id)
	}
	return dups
}

// workerSummary is the job counters of the worker's "stopped" log line.
type workerSummary struct {
	Received  int64 `json:"jobs_received"`
	Delivered int64 `json:"jobs_delivered"`
	Rejected  int64 `json:"jobs_rejected"`
	Failed    int64 `json:"jobs_failed"`
	Dead      int64 `json:"jobs_dead_lettered"`
}

// finishHostile checks the worker is alive and under the memory bound,
// stops it (exit 0), checks that it reported delivered exactly the
// delivered jobs (no job delivered twice by the worker itself, whatever
// the gateway saw), and returns its peak RSS.
func finishHostile(tb testing.TB, w *worker, delivered int) int64 {
	tb.Helper()
	require.False(tb, w.exited(), "worker exited: %v", w.waitErr)
	rss := vmHWM(tb, w.cmd.Process.Pid)
	require.Less(tb, rss, int64(hostileRSSBound), "worker peak RSS")
	require.Equal(tb, 0, w.stop(60*time.Second), "exit code")
	var sum workerSummary
	found := false
	for _, line := range strings.Split(w.log.String(), "\n") {
		if strings.Contains(line, `"msg":"stopped"`) {
			require.NoError(tb, json.Unmarshal([]byte(line), &sum), "summary %s", line)
			found = true
		}
	}
	require.True(tb, found, "no stopped line in the log")
	tb.Logf("worker summary: %+v", sum)
	require.Equal(tb, int64(delivered), sum.Delivered, "jobs the worker reported delivered (one per good job)")
	return rss
}

// TestHostileAnswers: answers that are not APNs' (an HTML 404, a proxy's
// 502 and 504, a 400 that is not JSON, a 500 without a reason; every
// fifth with a 20 KB header) for ranges of requests, slow answers, 20 KB
// headers on 200s and on a rejection, and error bodies padded to 20 KB and
// 100 KB+. Faults are retried, never rejections: every good job is
// delivered exactly once (nothing here can duplicate); the BadDeviceToken
// behind 20 KB of padding, before 100 KB of it and under a 20 KB header is
// rejected once with a bad-token event. A reason behind 100 KB of padding
// is past the 64 KiB the worker reads (README, HTTP/2 limits): a fault,
// retried and dead-lettered, never a rejection.
func TestHostileAnswers(t *testing.T) {
	t.Parallel()
	forEngines(t, testHostileAnswers)
}

func testHostileAnswers(t *testing.T, engine string) {
	const nGood = 3000
	bad := badSet(5, badDeviceToken, badUnregistered, badPaddedBefore20K, badPaddedAfter100K, badPaddedHeader20K, badPaddedBefore100K)
	phases := []gwPhase{
		{100, 300, phaseHTML404},
		{400, 550, phaseProxy502},
		{600, 700, phaseProxy504},
		{800, 950, phaseText400},
		{1000, 1150, phaseJSON500},
		{1200, 1400, phaseSlow},
		{1400, 1600, phasePaddedHeader},
		{1700, 1800, phaseHTML404},
		{2000, 2100, phasePaddedHeader},
		{2200, 2250, phaseProxy502},
	}
	start := time.Now()
	r := startRig(t, "hostile-answers", engine, bad, phases, nil,
		map[string]string{"APNS_WORKER_JOBS_MAX_DELIVER": "4", "APNS_WORKER_JOBS_BACKOFF": "100ms"})
	gw, js, w := r.gw, r.js, r.w
	jobs := publishHostile(t, js, nGood, bad)
	waitDrained(t, js, 60*time.Second)

	dups := hostileVerdict(t, js, gw, jobs, badPaddedBefore100K)
	require.Zero(t, dups, "notifications delivered twice")
	st := gw.statusCounts()
	for code, n := range map[int]int{404: 300, 502: 200, 504: 100, 500: 150} {
		require.Equal(t, n, st[code], "answers %d (statuses %v)", code, st)
	}
	require.GreaterOrEqual(t, st[400], 150+20, "statuses %v", st)
	rss := finishHostile(t, w, nGood)
	t.Logf("hostile answers (%s): %d good + %d bad jobs, %d requests, statuses %v, %d duplicates, peak RSS %d MiB, %s",
		engine, nGood, len(bad), gw.serial.Load(), st, dups, rss>>20, time.Since(start).Round(time.Millisecond))
}

// TestHostileSilentCloses: a proxy in front of the gateway closes each
// connection silently (TCP close: no GOAWAY, no TLS close_notify) after a
// seeded random number of the client's bytes, from 1 KiB to 768 KiB, cutting
// frames. What the gateway processed of what was in flight is unknown to
// the worker, so duplicates are allowed but bounded; nothing is lost,
// rejected or dead-lettered.
func TestHostileSilentCloses(t *testing.T) {
	t.Parallel()
	forEngines(t, testHostileSilentCloses)
}

func testHostileSilentCloses(t *testing.T, engine string) {
	const nGood = 3000
	bad := badSet(5, badDeviceToken, badUnregistered)
	start := time.Now()
	rng := mrand.New(mrand.NewPCG(10, 2026))
	sizes := []int64{2 << 10, 8 << 10, 32 << 10, 128 << 10, 512 << 10}
	plans := make([]connPlan, 4096)
	for i := range plans {
		n := sizes[rng.IntN(len(sizes))]
		plans[i].closeAfter = n/2 + rng.Int64N(n)
	}
	r := startRig(t, "hostile-closes", engine, bad, nil, func(serial int) connPlan { return plans[serial%len(plans)] }, nil)
	gw, proxy, js, w := r.gw, r.proxy, r.js, r.w
	jobs := publishHostile(t, js, nGood, bad)
	waitDrained(t, js, 80*time.Second)

	dups := hostileVerdict(t, js, gw, jobs)
	require.NotZero(t, proxy.closes.Load(), "silent closes")
	require.LessOrEqual(t, dups, nGood/2, "duplicates (%d silent closes)", proxy.closes.Load())
	rss := finishHostile(t, w, nGood)
	t.Logf("hostile silent closes (%s): %d good + %d bad jobs, %d connections, %d silent closes (after client bytes %v), %d requests, %d duplicates, peak RSS %d MiB, %s",
		engine, nGood, len(bad), proxy.conns.Load(), proxy.closes.Load(), proxy.closedAfter(), gw.serial.Load(), dups, rss>>20, time.Since(start).Round(time.Millisecond))
}

// TestHostileInvalidSettings: the proxy puts an invalid SETTINGS frame
// (MAX_FRAME_SIZE=0, INITIAL_WINDOW_SIZE 2^31, ENABLE_PUSH=2,
// MAX_FRAME_SIZE 2^24) into the server's frames on the first connections,
// as their first frame or in the middle of traffic. Each is a connection
// error (RFC 9113 §6.5.2): the worker replaces the connection instead of
// hanging or growing; what was in flight there is sent again (duplicates
// bounded); nothing is lost, rejected or dead-lettered.
func TestHostileInvalidSettings(t *testing.T) {
	t.Parallel()
	forEngines(t, testHostileInvalidSettings)
}

func testHostileInvalidSettings(t *testing.T, engine string) {
	const nGood = 3000
	bad := badSet(5, badDeviceToken, badUnregistered)
	invalid := [][]http2.Setting{
		{{ID: http2.SettingMaxFrameSize, Val: 0}},
		{{ID: http2.SettingInitialWindowSize, Val: 1 << 31}},
		{{ID: http2.SettingEnablePush, Val: 2}},
		{{ID: http2.SettingMaxFrameSize, Val: 1 << 24}},
	}
	const faulty = 24 // connections 1..24: every one but each third gets one
	start := time.Now()
	r := startRig(t, "hostile-settings", engine, bad, nil, func(serial int) connPlan {
		if serial > faulty || serial%3 == 0 {
			return connPlan{}
		}
		after := 0 // before the server's own SETTINGS
		if serial%2 == 0 {
			after = 4 + serial // in the middle of the answers
		}
		return connPlan{settingsInject: true, settings: invalid[serial%len(invalid)], settingsAfter: after}
	}, nil)
	gw, proxy, js, w := r.gw, r.proxy, r.js, r.w
	jobs := publishHostile(t, js, nGood, bad)
	waitDrained(t, js, 60*time.Second)

	dups := hostileVerdict(t, js, gw, jobs)
	require.GreaterOrEqual(t, proxy.injected.Load(), int64(len(invalid)), "invalid SETTINGS sent")
	require.NotZero(t, proxy.injectedMid.Load(), "invalid SETTINGS sent in the middle of a connection")
	require.LessOrEqual(t, dups, nGood/4, "duplicates (answers in flight on a connection ended by its SETTINGS)")
	if engine == "h2" {
		logs := w.log.String()
		for _, e := range []string{"MAX_FRAME_SIZE 0 outside", "FLOW_CONTROL_ERROR", "ENABLE_PUSH 2", "MAX_FRAME_SIZE 16777216 outside"} {
			require.Contains(t, logs, e, "the worker names the connection error")
		}
	}
	rss := finishHostile(t, w, nGood)
	t.Logf("hostile settings (%s): %d good + %d bad jobs, %d connections, %d invalid SETTINGS (%d mid-connection), %d requests, %d duplicates, peak RSS %d MiB, %s",
		engine, nGood, len(bad), proxy.conns.Load(), proxy.injected.Load(), proxy.injectedMid.Load(), gw.serial.Load(), dups, rss>>20, time.Since(start).Round(time.Millisecond))
}
