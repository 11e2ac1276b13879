package integration

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// signalWhen sends sig to w once cond holds (polled every 5ms) and reports
// the result on the returned channel; it gives up at cleanup.
func signalWhen(tb testing.TB, w *worker, sig os.Signal, cond func() bool) <-chan error {
	return when(tb, cond, func() error { return w.cmd.Process.Signal(sig) })
}

// when runs do once cond holds (polled every 5ms) in a goroutine of its own
// and reports do's error on the returned channel; it gives up at cleanup.
func when(tb testing.TB, cond func() bool, do func() error) <-chan error {
	stop := make(chan struct{})
	tb.Cleanup(func() { close(stop) })
	done := make(chan error, 1)
	go func() {
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for !cond() {
			select {
			case <-stop:
				done <- errors.New("gave up at cleanup")
				return
			case <-t.C:
			}
		}
		done <- do()
	}()
	return done
}

// awaitSignal waits for signalWhen's (or when's) result.
func awaitSignal(tb testing.TB, sent <-chan error, within time.Duration) {
	tb.Helper()
	select {
	case err := <-sent:
		require.NoError(tb, err)
	case <-time.After(within):
		tb.Fatalf("condition not reached within %s", within)
	}
}

// TestCrash: the worker process is SIGKILLed in the middle of 20 000 jobs
// and started again: nothing left the stream without reaching the gateway,
// and in the end every job is delivered or rejected (exactly one event
// each), none lost. Duplicates are expected (at least once) and counted.
func TestCrash(t *testing.T) {
	const n = 20000
	isRej := func(i int) bool { return i%200 == 7 }
	tok := func(i int) apns.Token {
		if isRej(i) {
			return token(0xd8, i)
		}
		return token(0xd0, i)
	}
	var opts []apnstest.GatewayOption
	for i := range n {
		if isRej(i) {
			opts = append(opts, apnstest.Reject(tok(i), apns.StatusInvalidToken))
		}
	}
	rejected := func(t apns.Token) bool { return t[0] == 0xd8 }
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	gw := startGateway(t, opts...)
	env := binaryEnv(t, ns.ClientURL(), gw, 200*time.Millisecond)
	env["APNS_WORKER_JOBS_ACK_WAIT"] = "3s"
	w1 := startWorker(t, "crash-1", env)

	killed := signalWhen(t, w1, syscall.SIGKILL, func() bool { return gw.Stats().Accepted >= n/4 })
	jobs := publishJobs(t, js, "crash", n, tok)
	awaitSignal(t, killed, 120*time.Second)
	require.NotZero(t, w1.wait(10*time.Second), "killed worker's exit code")

	st := streamState(t, js, jobsStream)
	require.NotZero(t, st.Msgs, "the kill came after the last job")
	gone := requireNoAckWithoutDelivery(t, js, gatewayCounter{gw}, jobs, rejected)
	accepted := gw.Stats().Accepted
	t.Logf("killed: gateway had accepted %d, %d jobs acked or terminated, %d still in the stream", accepted, gone, st.Msgs)

	w2 := startWorker(t, "crash-2", env)
	waitDrained(t, js, 150*time.Second)
	dups := requireAllDelivered(t, gw, jobs, rejected)
	require.Equal(t, n/200, subjectCount(t, js, subjRejected), "one rejection event per rejected job")
	require.Equal(t, n/200, subjectCount(t, js, subjBadTokens), "one bad-token event per rejected job")
	require.Equal(t, 0, w2.stop(60*time.Second), "exit code")
	gs := gw.Stats()
	t.Logf("crash: %d jobs, %d rejected; %d duplicate deliveries at the gateway (%d accepted before the kill); gateway stats %+v",
		n, n/200, dups, accepted, gs)
	require.Equal(t, dups, gs.Duplicates)
}

// TestHorizontalScale: three worker processes on one durable consumer
// share 30 000 jobs: every job delivered and acked, and each worker did a
// share (its /metrics counters).
func TestHorizontalScale(t *testing.T) {
	const n = 30000
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	gw := startGateway(t)
	env := binaryEnv(t, ns.ClientURL(), gw, 200*time.Millisecond)
	var ws []*worker
	for i := range 3 {
		e := map[string]string{"APNS_WORKER_HTTP_ADDR": freeAddr(t)}
		for k, v := range env {
			e[k] = v
		}
		ws = append(ws, startWorker(t, fmt.Sprintf("scale-%d", i+1), e))
	}
	jobs := publishJobs(t, js, "scale", n, func(i int) apns.Token { return token(0x5c, i) })
	waitDrained(t, js, 180*time.Second)
	dups := requireAllDelivered(t, gw, jobs, nil)

	var received, delivered float64
	for _, w := range ws {
		r := w.metric("apns_worker_jobs_received_total")
		d := w.metric("apns_worker_jobs_delivered_total")
		t.Logf("worker %s: received %.0f, delivered %.0f", w.name, r, d)
		require.GreaterOrEqual(t, d, float64(n/60), "worker %s did less than a tenth of its share", w.name)
		require.Zero(t, w.metric("apns_worker_jobs_in_flight"), "worker %s: jobs in flight after the drain", w.name)
		require.Zero(t, w.metric("apns_engine_in_flight"), "worker %s: notifications in flight after the drain", w.name)
		received += r
		delivered += d
	}
	require.GreaterOrEqual(t, delivered, float64(n))
	require.GreaterOrEqual(t, received, delivered)
	for _, w := range ws {
		require.NoError(t, w.cmd.Process.Signal(syscall.SIGTERM))
	}
	for _, w := range ws {
		require.Equal(t, 0, w.wait(60*time.Second), "worker %s exit code", w.name)
	}
	t.Logf("scale: %d jobs over 3 workers, %d duplicates at the gateway", n, dups)
}

// TestHangUpStopsGracefully: SIGHUP (a closed terminal, a supervisor)
// stops the worker as SIGTERM does: exit 0 and its stop summary. Found
// from outside: Go's default killed it without a stop.
func TestHangUpStopsGracefully(t *testing.T) {
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	w := startWorker(t, "hangup", mockEnv(ns.ClientURL()))
	publishRaw(t, js, []byte("not json"))
	waitDrained(t, js, 30*time.Second)
	require.NoError(t, w.cmd.Process.Signal(syscall.SIGHUP))
	require.Equal(t, 0, w.wait(30*time.Second), "exit code")
	require.Contains(t, w.log.String(), `"msg":"stopped"`)
}

// TestGracefulStop: SIGTERM in the middle of a burst: the worker exits 0,
// every job it took is acked (it reached the gateway) or naked (ready for
// the next worker at once), none waits for AckWait; a restart finishes the
// rest.
func TestGracefulStop(t *testing.T) {
	const n = 20000
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	gw := startGateway(t)
	env := binaryEnv(t, ns.ClientURL(), gw, 300*time.Millisecond)
	env["APNS_WORKER_JOBS_ACK_WAIT"] = "60s" // a stranded job would wait this long
	w1 := startWorker(t, "graceful-1", env)

	termed := signalWhen(t, w1, syscall.SIGTERM, func() bool { return gw.Stats().Accepted >= n/4 })
	jobs := publishJobs(t, js, "graceful", n, func(i int) apns.Token { return token(0x6a, i) })
	awaitSignal(t, termed, 120*time.Second)
	require.Equal(t, 0, w1.wait(60*time.Second), "exit code after SIGTERM")

	requireStoppedCleanly(t, js, gatewayCounter{gw}, jobs)

	w2 := startWorker(t, "graceful-2", env)
	waitDrained(t, js, 150*time.Second)
	dups := requireAllDelivered(t, gw, jobs, nil)
	require.Equal(t, 0, w2.stop(60*time.Second), "exit code")
	t.Logf("graceful: %d duplicates at the gateway", dups)
}

// requireStoppedCleanly checks the jobs stream after a worker stopped on
// SIGTERM mid-stream: nothing acked that the APNs server did not take, some
// jobs left, and every job the worker held naked, none stranded.
func requireStoppedCleanly(tb testing.TB, js jetstream.JetStream, apnsServer counter, jobs []job) {
	tb.Helper()
	st, ci := waitAcksSettled(tb, js, 10*time.Second)
	gone := requireNoAckWithoutDelivery(tb, js, apnsServer, jobs, nil)
	tb.Logf("stopped: %d jobs acked, %d in the stream: %d never delivered, %d delivered and not acked",
		gone, st.Msgs, ci.NumPending, ci.NumAckPending)
	require.NotZero(tb, st.Msgs, "SIGTERM came after the last job")
	require.Equal(tb, st.Msgs, ci.NumPending+uint64(ci.NumAckPending))
	requireNotStranded(tb, js, ci)
}

// waitAcksSettled waits until the server has applied every ack the stopped
// worker flushed: the server removes acked jobs from the stream on its own
// goroutines after the client's connection is gone, so the stream and the
// durable agree (every stored job is pending or waiting for an ack) only
// once it is done, and stay the same from one read to the next.
func waitAcksSettled(tb testing.TB, js jetstream.JetStream, within time.Duration) (jetstream.StreamState, *jetstream.ConsumerInfo) {
	tb.Helper()
	deadline := time.Now().Add(within)
	var prev uint64
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		st := streamState(tb, js, jobsStream)
		ci := consumerInfo(tb, js)
		settled := st.Msgs == ci.NumPending+uint64(ci.NumAckPending) && st.Msgs == prev
		if settled || time.Now().After(deadline) {
			return st, ci
		}
		prev = st.Msgs
		<-tick.C
	}
}

// requireNotStranded checks that every job delivered to a worker and not
// acked was naked: the durable hands all of them out again at once (the
// redelivery queue comes first), none waits for AckWait. The fetched jobs
// are naked again for the next worker.
func requireNotStranded(tb testing.TB, js jetstream.JetStream, ci *jetstream.ConsumerInfo) {
	tb.Helper()
	if ci.NumAckPending == 0 {
		return
	}
	ctx := ctxT(tb, 30*time.Second)
	c, err := js.Consumer(ctx, jobsStream, durable)
	require.NoError(tb, err)
	batch, err := c.Fetch(ci.NumAckPending, jetstream.FetchMaxWait(5*time.Second))
	require.NoError(tb, err)
	var naked, fresh int
	for m := range batch.Messages() {
		md, err := m.Metadata()
		require.NoError(tb, err)
		if md.NumDelivered > 1 {
			naked++
		} else {
			fresh++
		}
		require.NoError(tb, m.Nak())
	}
	require.NoError(tb, batch.Error())
	require.Equal(tb, ci.NumAckPending, naked,
		"jobs neither acked nor naked at shutdown (they wait for AckWait); fetched %d fresh jobs in their place", fresh)
}

// TestStopWithStalledGateway: SIGTERM while the gateway has stopped
// reading (writes pile up, no outcome can come within the grace period):
// the worker still exits within its grace period, and every job it held is
// naked, none stranded until AckWait; a worker on a healthy gateway then
// delivers every job.
func TestStopWithStalledGateway(t *testing.T) {
	const (
		n     = 3000
		grace = 3 * time.Second
	)
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	stalled := startGateway(t, apnstest.StallAfter(n/3))
	env := binaryEnv(t, ns.ClientURL(), stalled, 5*time.Second)
	env["APNS_WORKER_SHUTDOWN_GRACE"] = grace.String()
	env["APNS_WORKER_JOBS_ACK_WAIT"] = "60s"
	w1 := startWorker(t, "stalled", env)
	jobs := publishJobs(t, js, "stall", n, func(i int) apns.Token { return token(0x57, i) })
	waitFor(t, 30*time.Second, "the gateway to stall", func() bool { return stalled.Stats().Accepted >= n/3 })

	start := time.Now()
	code := w1.stop(grace + 30*time.Second)
	took := time.Since(start)
	t.Logf("stopped in %s with exit code %d", took.Round(time.Millisecond), code)
	require.Less(t, took, grace+10*time.Second, "shutdown overran the grace period")
	ci := consumerInfo(t, js)
	st := streamState(t, js, jobsStream)
	t.Logf("after the stop: %d in the stream: %d never delivered, %d delivered and not acked", st.Msgs, ci.NumPending, ci.NumAckPending)
	require.Equal(t, st.Msgs, ci.NumPending+uint64(ci.NumAckPending))
	requireNotStranded(t, js, ci)

	healthy := startGateway(t)
	w2 := startWorker(t, "after-stall", binaryEnv(t, ns.ClientURL(), healthy, 200*time.Millisecond))
	waitDrained(t, js, 90*time.Second)
	var missing int
	for _, j := range jobs {
		if stalled.Count(j.Token)+healthy.Count(j.Token) == 0 {
			missing++
		}
	}
	require.Zero(t, missing, "jobs never read by either gateway")
	require.Equal(t, 0, w2.stop(60*time.Second), "exit code")
}
