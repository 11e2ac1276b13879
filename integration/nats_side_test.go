package integration

// Defects found checking the worker from outside, on the NATS, producer
// and operator side (helper outside11, 2026-12-07). Each test failed on
// the code it was written against; its comment says what was found, and
// each passes since its fix.

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
	"github.com/jetpush/apns-worker/consumer"
)

// mockBadToken is a 32-byte token the mock APNs rejects (prefix bad0):
// a rejection and a bad-token event.
const mockBadToken = "bad0cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd01"

// mockEnv is a worker in mock APNs mode on natsURL.
func mockEnv(natsURL string) map[string]string {
	return map[string]string{
		"APNS_WORKER_NATS_URL":     natsURL,
		"APNS_WORKER_JOBS_BACKOFF": "200ms,1s",
	}
}

// spawnUntilRunningOrExit starts a worker and waits until it runs or exits
// (whichever first); it reports whether it exited.
func spawnUntilRunningOrExit(t *testing.T, name string, env map[string]string) (*worker, bool) {
	t.Helper()
	w := spawnWorker(t, name, env)
	select {
	case <-w.log.running:
		return w, false
	case <-w.done:
		return w, true
	case <-time.After(60 * time.Second):
		t.Fatalf("worker %s neither running nor exited within 60s\n%s", name, w.log.tail())
	}
	return w, false
}

// requireDeadEnd starts a worker with env and requires it to stop with
// exit code 2 within deadEndWithin (why: what the test shows); it returns
// the worker's log.
func requireDeadEnd(t *testing.T, name string, env map[string]string, why string) string {
	t.Helper()
	start := time.Now()
	w := spawnWorker(t, name, env)
	code := w.wait(deadEndWithin + 30*time.Second)
	took := time.Since(start)
	out := w.log.String()
	require.Equal(t, 2, code, "exit code; log:\n%s", out)
	require.Less(t, took, deadEndWithin, "%s; log:\n%s", why, out)
	return out
}

// TestOutsideEventIDAfterJobsStreamRecreated: the events' Nats-Msg-Id of
// a job without an id is <kind>:seq:<stream sequence>. When the jobs
// stream is deleted under a running worker, the worker creates it again
// (README: "If the streams or the durable are deleted under a running
// worker, it creates them again") and its sequences start again at 1: the
// next id-less job gets the Msg-Id of an earlier job's event, the events
// stream drops its event as a duplicate (10 min window), and the worker
// takes the duplicate PubAck as stored and terminates the job: a second
// malformed job leaves without its rejection event, in silence.
func TestOutsideEventIDAfterJobsStreamRecreated(t *testing.T) {
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	startWorker(t, "recreated-jobs-stream", mockEnv(ns.ClientURL()))

	seq := publishRaw(t, js, []byte("not json: the first"))
	require.Equal(t, uint64(1), seq)
	waitDrained(t, js, 30*time.Second)
	require.Equal(t, 1, subjectCount(t, js, subjRejected))

	// An operator deletes the jobs stream; the worker notices (its consume
	// stops) and creates the stream and the durable again.
	ctx := ctxT(t, 30*time.Second)
	require.NoError(t, js.DeleteStream(ctx, jobsStream))
	waitFor(t, 30*time.Second, "the worker to create the jobs stream and durable again", func() bool {
		_, err := js.Consumer(ctx, jobsStream, durable)
		return err == nil
	})

	seq = publishRaw(t, js, []byte("not json: another job"))
	require.Equal(t, uint64(1), seq, "the new stream starts again at 1")
	waitDrained(t, js, 30*time.Second)
	require.Equal(t, 2, subjectCount(t, js, subjRejected),
		"two malformed jobs, each terminated: each must have its own rejection event")
}

// TestOutsideEventsStreamNarrowSubjects: an events stream an operator
// created beforehand with a narrower subject (apns.events.rejected). The
// worker leaves its own apns.events.> out because it "overlaps" (README:
// "unless a subject of the stream overlaps one of them (say apns.>)"),
// but the narrow subject does not capture .badtokens or .deadletter: the
// worker starts, says ready, and every bad-token rejection then cycles
// for ever (badtokens publish: no responders). Either start-up should
// stop (exit 1, naming the events stream or subject, as for other
// overlaps) or the job should end with both its events.
func TestOutsideEventsStreamNarrowSubjects(t *testing.T) {
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	ctx := ctxT(t, 30*time.Second)
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: eventsStream, Subjects: []string{subjRejected}, Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage,
	})
	require.NoError(t, err)

	w, exited := spawnUntilRunningOrExit(t, "narrow-events", mockEnv(ns.ClientURL()))
	if exited {
		code := w.wait(time.Second)
		require.Equal(t, 1, code, "log:\n%s", w.log.String())
		require.Contains(t, lastLine(w.log.String()), "APNS_WORKER_EVENTS_")
		return
	}
	publishRaw(t, js, []byte(`{"id":"narrow-1","token":"`+mockBadToken+`","payload":{"aps":{"alert":"hi"}}}`))
	waitDrained(t, js, 30*time.Second)
	require.Equal(t, 1, subjectCount(t, js, subjRejected))
	require.Equal(t, 1, subjectCount(t, js, subjBadTokens))
}

// TestOutsideEventsStreamNoAck: an events stream created beforehand with
// no_ack (the server stores events but never sends a PubAck). The worker
// starts and says ready, but no event is ever confirmed: every rejection
// waits out 6 publishes of 5 s, is naked, and comes back, for ever; the
// only sign is "event not stored … no PubAck". no_ack is not a limit an
// operator may keep: start-up should refuse it (exit 1 naming the events
// stream) or the worker should own the setting and turn it off.
func TestOutsideEventsStreamNoAck(t *testing.T) {
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	ctx := ctxT(t, 30*time.Second)
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: eventsStream, Subjects: []string{eventsPrefix + ".>"}, Retention: jetstream.LimitsPolicy,
		Storage: jetstream.FileStorage, NoAck: true,
	})
	require.NoError(t, err)

	w, exited := spawnUntilRunningOrExit(t, "noack-events", mockEnv(ns.ClientURL()))
	if exited {
		code := w.wait(time.Second)
		require.Equal(t, 1, code, "log:\n%s", w.log.String())
		require.Contains(t, lastLine(w.log.String()), eventsStream)
		return
	}
	publishRaw(t, js, []byte(`{"id":"noack-1","token":"`+mockBadToken+`","payload":{"aps":{"alert":"hi"}}}`))
	waitDrained(t, js, 30*time.Second)
}

// TestOutsideNATSClientCertRefused: a NATS server that requires a client
// certificate (tls verify) refuses a worker without one, or with one its
// CA does not trust. README (APNS_WORKER_NATS_CONNECT_TIMEOUT): "Refused
// credentials or certificates … exit 2 at once". The worker instead takes
// the TLS alert (certificate required) for an unreachable server, retries
// for the whole timeout and names APNS_WORKER_NATS_URL ("no NATS server
// reachable"), not the certificate variable.
func TestOutsideNATSClientCertRefused(t *testing.T) {
	pki := apnstest.MustPKI()
	addr := freeAddr(t)
	ns := startNATSWith(t, addr, func(o *server.Options) {
		o.TLSConfig = pki.ServerTLS(true)
		o.TLS, o.TLSVerify, o.TLSTimeout = true, true, 2
	})
	f := writePKI(t, pki)
	other := writePKI(t, apnstest.MustPKI()) // a client certificate of another CA

	for _, tt := range []struct {
		name string
		env  map[string]string
	}{
		{"no client certificate", map[string]string{}},
		{"client certificate of another CA", map[string]string{
			"APNS_WORKER_NATS_TLS_CERT": other.Cert, "APNS_WORKER_NATS_TLS_KEY": other.Key}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{
				"APNS_WORKER_NATS_URL":             ns.ClientURL(),
				"APNS_WORKER_NATS_TLS_CA":          f.CA,
				"APNS_WORKER_NATS_CONNECT_TIMEOUT": "30s",
			}
			for k, v := range tt.env {
				env[k] = v
			}
			out := requireDeadEnd(t, "nats-client-cert", env, "a refused certificate is a dead end, not an unreachable server")
			last := lastLine(out)
			require.Contains(t, last, `"var":"APNS_WORKER_NATS_TLS_CERT"`, "log:\n%s", out)
		})
	}
}

// TestOutsideNATSKeyFilesCheckedAtStart: NATS credential files that are not
// keys. README: "Key and certificate files are read before any of this,
// with the other variables: one that is missing, unreadable or not a key
// stops the process with exit code 2, every bad variable listed at once"
// (and the CONNECT_TIMEOUT row: refused credentials exit 2 at once). An
// NKey file without a seed, a creds file without one, and a TLS client
// certificate with another key pass the configuration check; the connect
// then fails on them, is retried as if NATS were unreachable for the
// whole NATS_CONNECT_TIMEOUT, and start-up ends naming APNS_WORKER_NATS_URL.
func TestOutsideNATSKeyFilesCheckedAtStart(t *testing.T) {
	ns := startNATS(t)
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	require.NoError(t, os.WriteFile(junk, []byte("not a seed, not a key\n"), 0o600))
	a, b := writePKI(t, apnstest.MustPKI()), writePKI(t, apnstest.MustPKI())

	for _, tt := range []struct {
		name, variable string
		env            map[string]string
	}{
		{"nkey file without a seed", "APNS_WORKER_NATS_NKEY", map[string]string{"APNS_WORKER_NATS_NKEY": junk}},
		{"creds file without a seed", "APNS_WORKER_NATS_CREDS", map[string]string{"APNS_WORKER_NATS_CREDS": junk}},
		{"tls key of another certificate", "APNS_WORKER_NATS_TLS_", map[string]string{
			"APNS_WORKER_NATS_TLS_CERT": a.Cert, "APNS_WORKER_NATS_TLS_KEY": b.Key}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{
				"APNS_WORKER_NATS_URL":             ns.ClientURL(),
				"APNS_WORKER_NATS_CONNECT_TIMEOUT": "20s",
			}
			for k, v := range tt.env {
				env[k] = v
			}
			out := requireDeadEnd(t, "nats-key-files", env, "a file that is not a key is a bad variable, not an unreachable server")
			require.True(t, strings.Contains(out, tt.variable) && !strings.Contains(lastLine(out), `"var":"APNS_WORKER_NATS_URL"`),
				"the output names %s (and not NATS_URL); log:\n%s", tt.variable, out)
		})
	}
}

// TestOutsideAckWaitLoweredByAnotherWorker: two workers on one durable
// whose APNS_WORKER_JOBS_ACK_WAIT differ, as in a rolling upgrade that
// lowers it (README: the old default was 60 s, now 10 s). Each worker
// applies its own ACK_WAIT to the shared durable at start-up, the last
// one wins (here 1 s), but each sends InProgress at its own ACK_WAIT/3:
// the first worker (30 s: every 10 s) lets the jobs it holds for the
// binary window (4 s) expire, the server delivers them again, and APNs
// gets them twice. No crash, no lost connection: nothing in "At least
// once" explains these duplicates (measured: 938 of 1 000 jobs sent
// twice; 0 when both workers use the same value). The keep-alive should
// follow the durable's actual AckWait (or a mismatch be refused/warned).
func TestOutsideAckWaitLoweredByAnotherWorker(t *testing.T) {
	const n = 1000
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	gw := startGateway(t)
	env := binaryEnv(t, ns.ClientURL(), gw, 4*time.Second)
	env["APNS_WORKER_JOBS_ACK_WAIT"] = "30s"
	startWorker(t, "ack-wait-30s", env)
	lower := maps.Clone(env)
	lower["APNS_WORKER_JOBS_ACK_WAIT"] = "1s"
	if w, exited := spawnUntilRunningOrExit(t, "ack-wait-1s", lower); exited {
		// Refusing to join a durable whose AckWait differs is a fix too.
		require.NotEqual(t, 0, w.wait(time.Second))
		require.Contains(t, lastLine(w.log.String()), "APNS_WORKER_JOBS_ACK_WAIT")
		return
	}

	jobs := publishJobs(t, js, "aw", n, func(i int) apns.Token { return token(0xe2, i) })
	waitDrained(t, js, 60*time.Second)
	dups := requireAllDelivered(t, gw, jobs, nil)
	require.Zero(t, dups, "notifications sent twice though no worker crashed (durable AckWait %s)", consumerInfo(t, js).Config.AckWait)
}

// TestOutsideDeadLetterAfterMaxDeliverFailures: README (Events):
// ".deadletter: the job failed APNS_WORKER_JOBS_MAX_DELIVER times". The
// worker compares JetStream's delivery count with MAX_DELIVER, and that
// count also grows with every delivery that did not fail: jobs naked at a
// SIGTERM while APNs is down, jobs dropped from the pull buffer at an
// intake pause, events that could not be stored. Found from outside: a
// job held twice by a worker stopped during an APNs outage (never sent)
// was dead-lettered at its first failure. Now a job is dead-lettered only
// once it has also been in the stream as long as MAX_DELIVER failed
// attempts and their back-off take (here 2 × 8 s): the hand-backs do not
// shorten its retries.
func TestOutsideDeadLetterAfterMaxDeliverFailures(t *testing.T) {
	const backoff = 8 * time.Second
	doomed := token(0xdd, 1)
	h2 := startHTTP2(t, apnstest.HTTP2Reason(doomed, 503, "ServiceUnavailable"))
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	env := http2Env(t, ns.ClientURL(), h2)
	env["APNS_WORKER_JOBS_MAX_DELIVER"] = "3"
	env["APNS_WORKER_JOBS_BACKOFF"] = backoff.String()
	env["APNS_WORKER_SHUTDOWN_GRACE"] = "2s"
	down := maps.Clone(env)
	down["APNS_WORKER_APNS_ADDR"] = "https://" + freeAddr(t) // APNs down: nothing listens

	var jobs []job
	var published time.Time
	for i := range 2 {
		w := startWorker(t, "apns-down", down)
		if i == 0 {
			published = time.Now()
			jobs = publishJobs(t, js, "dlc", 1, func(int) apns.Token { return doomed })
		}
		waitFor(t, 30*time.Second, "the job delivered to the worker", func() bool {
			ci := consumerInfo(t, js)
			return ci.Delivered.Consumer == uint64(i+1) && ci.NumAckPending == 1
		})
		require.Equal(t, 0, w.stop(30*time.Second), "exit code")
		require.Zero(t, h2.Statuses()[503], "APNs was down: the job was never sent")
	}

	startWorker(t, "apns-up", env)
	waitDrained(t, js, 90*time.Second)
	dl := readEvents[consumer.DeadLetterEvent](t, js, eventsPrefix+"."+consumer.KindDeadLetter)
	require.Len(t, dl, 1)
	require.Equal(t, jobs[0].ID, dl[0].JobID)
	failures := h2.Statuses()[503] / 4 // each delivery sent once and retried 3 times by the engine
	require.GreaterOrEqual(t, failures, 2, "dead-lettered at its first failure; event says deliveries %d", dl[0].Deliveries)
	require.GreaterOrEqual(t, dl[0].Time.Sub(published), 2*backoff, "dead-lettered before its back-off schedule ran")
}

// TestOutsideEmptyJobWithStatusHeader: a producer publishes an empty job
// with a header named Status (a proxy or an HTTP bridge forwarding its
// headers, say). README: "An empty message has "job_raw":"" and
// "job_size":0", and "Anything the stream stores ends in one of the
// outcomes below". nats.go's jetstream pull consumer (checkMsg in
// jetstream/message.go, v1.55.0) takes any message without data whose
// headers hold Status for the server's own status message, whatever its
// reply subject ($JS.ACK…): the worker's handler never sees the job, it
// is never acked or terminated, and is delivered again every ACK_WAIT,
// for ever, with no event and no log line naming it. With Status 404 the
// worker logs "consume error: no messages" every ACK_WAIT; with
// Status 409 and Description "Consumer Deleted" every redelivery stops
// the worker's subscription ("consume stopped; binding the consumer
// again"). Now the worker's sweep (consumer/sweep.go) finds them at the
// head of the stream, stores their rejection event and deletes them.
func TestOutsideEmptyJobWithStatusHeader(t *testing.T) {
	ns := startNATS(t)
	nc, js := connect(t, ns.ClientURL())
	env := mockEnv(ns.ClientURL())
	env["APNS_WORKER_JOBS_ACK_WAIT"] = "2s"
	w := startWorker(t, "status-header", env)

	headers := []nats.Header{
		{"Status": {"100"}, "Description": {"Idle Heartbeat"}},
		{"Status": {"404"}, "Description": {"No Messages"}},
		{"Status": {"408"}, "Description": {"Request Timeout"}},
		{"Status": {"409"}, "Description": {"Consumer Deleted"}},
	}
	for i, h := range headers {
		h.Set(jetstream.MsgIDHeader, "status-"+h.Get("Status"))
		_, err := js.PublishMsg(ctxT(t, 10*time.Second), &nats.Msg{Subject: jobsSubject, Header: h})
		require.NoError(t, err, "publish %d", i)
	}
	// A job after them, to show intake goes on.
	publishRaw(t, js, []byte("not json"))
	require.NoError(t, nc.Flush())

	waitDrained(t, js, 20*time.Second) // several ACK_WAITs
	rej := readEvents[consumer.RejectionEvent](t, js, subjRejected)
	require.Len(t, rej, len(headers)+1, "one rejection (empty message) per job")
	// nats.go still takes each for a status message when it is delivered
	// (so "Consumer Deleted" stops the intake, which binds again) until
	// the worker's sweep of the stream's head takes it out: two sweeps,
	// one ACK_WAIT apart, once the head stops moving.
	require.LessOrEqual(t, strings.Count(w.log.String(), "binding the consumer again"), 3, "the intake restarted at every delivery")
}

// TestOutsideJobsStreamNarrowSubjects: the same fault on the jobs stream.
// An operator created APNS_JOBS beforehand (work queue, as the worker
// needs) for apns.jobs.ios only. The worker adds apns.jobs but leaves
// apns.jobs.> out, as it "overlaps" apns.jobs.ios, and starts: a producer
// publishing to apns.jobs.android (README: "Publish JSON to apns.jobs (or
// any subject below it)") gets no responders.
func TestOutsideJobsStreamNarrowSubjects(t *testing.T) {
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	ctx := ctxT(t, 30*time.Second)
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: jobsStream, Subjects: []string{jobsSubject + ".ios"}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
	})
	require.NoError(t, err)

	w, exited := spawnUntilRunningOrExit(t, "narrow-jobs", mockEnv(ns.ClientURL()))
	if exited {
		code := w.wait(time.Second)
		require.Equal(t, 1, code, "log:\n%s", w.log.String())
		require.Contains(t, lastLine(w.log.String()), "APNS_WORKER_JOBS_")
		return
	}
	_, err = js.Publish(ctx, jobsSubject+".android", []byte(`{"id":"android-1","token":"`+mockBadToken+`","payload":{"aps":{}}}`))
	require.NoError(t, err, "a job published below %s", jobsSubject)
}

// TestOutsideServerJetStreamLimits: a NATS server whose operator set
// JetStream limits (jetstream { limits { max_ack_pending: 10000,
// duplicate_window: "1m" } }). The worker derives the durable's
// MaxAckPending from APNS_WORKER_MAX_IN_FLIGHT (4 × (MAX_IN_FLIGHT + pull
// buffer): 804 000 by default, undocumented) and uses fixed
// de-duplication windows no variable sets. Against such a server it exits
// 1 with the server's words ("consumer max ack pending exceeds system
// limit of 10000", "duplicates window can not be larger then server limit
// of 1m0s") and names only the stream variables: the operator cannot tell
// that MAX_IN_FLIGHT must go below 1 500, and for the window there is no
// variable at all. README: start-up steps each name "the variable it
// checks". It should clamp to the server's limit (with a warning), or
// name the variable that fixes it.
func TestOutsideServerJetStreamLimits(t *testing.T) {
	for _, tt := range []struct {
		name   string
		limits server.JSLimitOpts
		fix    string // the variable an exit must name; "" if none exists
	}{
		{"max ack pending", server.JSLimitOpts{MaxAckPending: 10000}, "APNS_WORKER_MAX_IN_FLIGHT"},
		{"duplicate window", server.JSLimitOpts{Duplicates: time.Minute}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := startNATSWith(t, freeAddr(t), func(o *server.Options) { o.JetStreamLimits = tt.limits })
			w, exited := spawnUntilRunningOrExit(t, "js-limits", mockEnv(ns.ClientURL()))
			if !exited {
				require.Equal(t, 0, w.stop(30*time.Second), "exit code")
				return
			}
			out := w.log.String()
			require.NotEmpty(t, tt.fix, "no variable can fix it, yet the worker did not start:\n%s", lastLine(out))
			require.Contains(t, lastLine(out), tt.fix, "log:\n%s", out)
		})
	}
}

// TestOutsideLargeJobsNoSlowConsumer: jobs near the NATS max_payload (1 MiB
// by default: README "A job larger than the NATS server's max_payload …
// never reaches the stream", so these are legal; unknown members are
// ignored). The worker's pull asks for up to 1 000 messages with no byte
// bound (consumer/worker.go: PullMaxMessages only), so the server pushes
// hundreds of MB at once, exceeds its per-client max_pending (64 MiB) and
// cuts the worker's connection as a slow consumer, again after each
// reconnect (measured: 3 disconnects for 300 jobs of 1 MB). Every cut
// drops the acks and event publishes in flight on that connection. The
// pull should be bounded in bytes too (PullMaxBytes).
func TestOutsideLargeJobsNoSlowConsumer(t *testing.T) {
	const n, size = 150, 1000000
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	w := startWorker(t, "large-jobs", mockEnv(ns.ClientURL()))
	require.Equal(t, 0, w.stop(30*time.Second), "exit code") // the streams exist; a backlog builds up
	pad := strings.Repeat("x", size)
	futs := make([]jetstream.PubAckFuture, n)
	for i := range n {
		data := fmt.Sprintf(`{"id":"large-%d","token":"%s","pad":"%s","payload":{"aps":{"alert":"hi"}}}`, i, token(0x1a, i), pad)
		var err error
		futs[i], err = js.PublishAsync(jobsSubject, []byte(data), jetstream.WithStallWait(30*time.Second))
		require.NoError(t, err)
	}
	for _, f := range futs {
		awaitPubAck(t, f)
	}

	w = startWorker(t, "large-jobs-backlog", mockEnv(ns.ClientURL()))
	waitDrained(t, js, 120*time.Second)
	require.Zero(t, ns.NumSlowConsumers(), "the server cut the worker as a slow consumer")
	require.NotContains(t, w.log.String(), "nats disconnected")
}

// TestOutsideRejectedCountedOnce: the events stream is full (an operator
// set max_msgs with discard new): a rejection's event cannot be stored,
// so the job is naked and rejected again at each attempt (correct: never
// acked without its event). But apns_worker_jobs_rejected_total{reason}
// (and the stop summary's jobs_rejected) counts every attempt: one job,
// never finished, is counted as two, three, … rejections (measured: 9 for
// 5 jobs of which 4 were never rejected for good). README (Operating
// it): failed_total counts attempts; the rejected rate by reason is an
// alert signal. The counter should count jobs rejected (event stored and
// acked), or be documented as attempts.
func TestOutsideRejectedCountedOnce(t *testing.T) {
	ns := startNATS(t)
	nc, js := connect(t, ns.ClientURL())
	ctx := ctxT(t, 30*time.Second)
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: eventsStream, Subjects: []string{eventsPrefix + ".>"}, Retention: jetstream.LimitsPolicy,
		Storage: jetstream.FileStorage, MaxMsgs: 1, Discard: jetstream.DiscardNew,
	})
	require.NoError(t, err)
	_, err = js.Publish(ctx, eventsPrefix+".other", []byte("fills the stream"))
	require.NoError(t, err)
	require.NoError(t, nc.Flush())

	env := mockEnv(ns.ClientURL())
	env["APNS_WORKER_HTTP_ADDR"] = freeAddr(t)
	w := startWorker(t, "rejected-once", env)
	publishRaw(t, js, []byte(`{"id":"full-1","token":"`+mockBadToken+`","payload":{"aps":{"alert":"hi"}}}`))
	waitFor(t, 60*time.Second, "two attempts whose event was not stored", func() bool {
		return strings.Count(w.log.String(), `"msg":"event not stored"`) >= 2
	})
	require.Equal(t, 1, int(streamState(t, js, jobsStream).Msgs), "the job is still in the stream: not rejected for good")
	n := scrapeLabelled(t, w, `apns_worker_jobs_rejected_total{reason="InvalidToken"}`)
	require.LessOrEqual(t, n, 1.0, "one job, not rejected for good yet, counted as %v rejections", n)
}

// scrapeLabelled returns the value of the sample series (name with its
// labels, as /metrics prints it), 0 if absent.
func scrapeLabelled(t *testing.T, w *worker, series string) float64 {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + w.HTTPAddr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			require.NoError(t, err, "metric line %q", line)
			return f
		}
	}
	return 0
}

// TestOutsideNoPullPermission: the worker's NATS user may set up the
// streams and the durable but not pull from it (no publish permission on
// $JS.API.CONSUMER.MSG.NEXT.>, a plausible least-privilege slip). README:
// JetStream refusals at start-up, "permissions once the refused request
// times out after 10 s", end the process with exit code 1. Found from
// outside: the worker logged "worker running", /readyz answered "ok", and
// it could never take a job (a permissions violation at WARN every 5 s,
// for ever). Now it stops with exit 1 and an ERROR naming the subject; the
// job waits in the stream.
func TestOutsideNoPullPermission(t *testing.T) {
	js, url := natsWithLimitedUser(t, "nopull",
		"$JS.API.INFO", "$JS.API.STREAM.>", "$JS.API.CONSUMER.CREATE.>", "$JS.API.CONSUMER.DURABLE.>",
		"$JS.API.CONSUMER.INFO.>", "$JS.ACK.>", eventsPrefix+".>")
	w, _ := spawnUntilRunningOrExit(t, "no-pull", limitedEnv(mockEnv(url), "nopull"))
	publishRaw(t, js, []byte("not json")) // the streams are set up by now
	requireStopsOnPermission(t, w, "$JS.API.CONSUMER.MSG.NEXT.")
	require.EqualValues(t, 1, streamState(t, js, jobsStream).Msgs, "the job was lost")
}

// TestOutsideNoAckPermission: the worker's NATS user may pull but not ack
// (no publish permission on $JS.ACK.>). Found from outside: every ack was
// refused (an async permissions violation, logged at WARN), so each job
// delivered to APNs came back after ACK_WAIT and was sent again, for
// ever: devices got the same notification every ACK_WAIT (10 jobs, ACK_WAIT
// 1 s: 300 notifications in 30 s), while the worker said "worker running"
// and /readyz "ok". Now, as for the other permissions (README: exit code
// 1), it stops at the first refused ack; the jobs stay in the stream.
func TestOutsideNoAckPermission(t *testing.T) {
	js, url := natsWithLimitedUser(t, "noack", "$JS.API.INFO", "$JS.API.STREAM.>", "$JS.API.CONSUMER.>", eventsPrefix+".>")
	gw := startGateway(t)
	env := limitedEnv(binaryEnv(t, url, gw, 200*time.Millisecond), "noack")
	env["APNS_WORKER_JOBS_ACK_WAIT"] = "1s"
	w := startWorker(t, "no-ack", env)
	publishJobs(t, js, "noack", 10, func(i int) apns.Token { return token(0xac, i) })
	requireStopsOnPermission(t, w, "$JS.ACK.")
	require.EqualValues(t, 10, streamState(t, js, jobsStream).Msgs, "jobs lost")
}

// natsWithLimitedUser starts a NATS server with two logins: admin (all
// permissions; the returned JetStream context) and user (password "pw":
// see limitedEnv), who may publish only to allow and subscribe only to
// inboxes. It returns the server's URL.
func natsWithLimitedUser(t *testing.T, user string, allow ...string) (jetstream.JetStream, string) {
	t.Helper()
	ns := startNATSWith(t, freeAddr(t), func(o *server.Options) {
		o.Users = []*server.User{
			{Username: "admin", Password: "pw"},
			{Username: user, Password: "pw", Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: allow},
				Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
			}},
		}
	})
	_, js := connect(t, strings.Replace(ns.ClientURL(), "nats://", "nats://admin:pw@", 1))
	return js, ns.ClientURL()
}

// limitedEnv logs the worker of env in as natsWithLimitedUser's user.
func limitedEnv(env map[string]string, user string) map[string]string {
	env["APNS_WORKER_NATS_USER"], env["APNS_WORKER_NATS_PASSWORD"] = user, "pw"
	return env
}

// requireStopsOnPermission waits for w to stop with exit code 1 and an
// ERROR naming the refused subject (its prefix).
func requireStopsOnPermission(t *testing.T, w *worker, subject string) {
	t.Helper()
	code := w.wait(30 * time.Second)
	out := w.log.String()
	require.Equal(t, 1, code, "log:\n%s", out)
	require.Contains(t, out, `"level":"ERROR","msg":"nats refused a permission the worker cannot run without; stopping"`, out)
	require.Contains(t, out, `"subject":"`+subject, out)
}
