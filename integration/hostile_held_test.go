package integration

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The worker holding work against a hostile gateway: a 403 phase with
// answers in flight, and an outage longer than ACK_WAIT.

// TestHostileRefusal403: after 300 requests the gateway holds the next 20
// (in flight), then answers every request 403 ExpiredProviderToken for
// 3 s, and answers the 20 held ones 200 after its first 403. Those 200s,
// for requests sent before the refusal, must not reopen the credentials
// gate: it is not logged open before the window's end, no request reaches
// the gateway from 1 s after it closed to the window's end, and intake
// resumes only through a probe after the window (30 s after the gate
// closed: README, refused credentials). The held jobs count as delivered once; no job is
// rejected, dead-lettered or lost; every one is delivered exactly once.
//
// 1500 jobs, more than MAX_IN_FLIGHT (200 here): after the 403s most are
// left, 200 held by the worker, up to 200 in nats.go's pull buffer. Before
// main's 404609a (intake pauses, giving the buffer back) those were never
// kept alive, were redelivered during the hold, and both copies
// were sent: 179 duplicates (with MAX_IN_FLIGHT 1000).
func TestHostileRefusal403(t *testing.T) {
	t.Parallel()
	testRefusal403(t, 1500)
}

func testRefusal403(t *testing.T, nGood int) {
	start := time.Now()
	// MAX_IN_FLIGHT 200: what is in flight when the gate closes reaches the
	// gateway quickly even on a loaded machine, so that a request arriving
	// a second later was written after the gate closed.
	r := startRig(t, "hostile-403", "h2", nil, nil, nil, map[string]string{"APNS_WORKER_MAX_IN_FLIGHT": "200"})
	gw, js, w := r.gw, r.js, r.w
	ref := gw.arm403("ExpiredProviderToken", 300, 20, 3*time.Second)
	jobs := publishHostile(t, js, nGood, nil)
	waitFor(t, 30*time.Second, "the 403 window to end", func() bool { over, _, _, _, _ := ref.over(); return over })
	_, winStart, winEnd, released, refused := ref.over()
	require.NotZero(t, refused, "403s given")
	require.False(t, released.IsZero(), "the held requests were answered")
	// While intake is held (until the probe 30 s after the gate closed,
	// 27 s after the window), the server must redeliver nothing: every job
	// the worker took is kept alive with InProgress. Measured over one and
	// a half ACK_WAITs (15 s), from 3 s after the window (the jobs naked
	// after their 403 came back 1 s after it).
	<-time.After(time.Until(winEnd.Add(3 * time.Second))) // measurement window
	before := consumerInfo(t, js).Delivered.Consumer
	<-time.After(15 * time.Second) // measurement window, not synchronisation
	held := consumerInfo(t, js)
	redelivered := held.Delivered.Consumer - before
	t.Logf("while held: %d deliveries in 15 s, %d ack pending", redelivered, held.NumAckPending)
	waitDrained(t, js, 150*time.Second)
	recovered := time.Since(winEnd)

	ci := consumerInfo(t, js)
	t.Logf("consumer: delivered %d, redelivered %d, ack floor %d", ci.Delivered.Consumer, ci.NumRedelivered, ci.AckFloor.Consumer)
	dups := hostileVerdict(t, js, gw, jobs)
	require.Zero(t, dups, "notifications delivered twice")
	// The gate closed when the worker read the first 403 (its log line);
	// it must not reopen before the window ends, and nothing is written
	// while it is closed: requests that reach the gateway more than 1 s
	// after it closed (time for those already written to arrive) would be.
	var closedAt time.Time
	var reopened []string
	for _, line := range strings.Split(w.log.String(), "\n") {
		refusedLine := strings.Contains(line, "apns credentials refused")
		if !refusedLine && !strings.Contains(line, "apns credentials accepted again") {
			continue
		}
		var rec struct {
			Time time.Time `json:"time"`
		}
		require.NoError(t, json.Unmarshal([]byte(line), &rec), "log line %s", line)
		switch {
		case refusedLine && closedAt.IsZero():
			closedAt = rec.Time
		case !refusedLine && rec.Time.Before(winEnd):
			reopened = append(reopened, rec.Time.Format(time.RFC3339Nano))
		}
	}
	require.False(t, closedAt.IsZero(), "no credentials refusal logged")
	require.Empty(t, reopened, "credentials gate reopened during the 403 window (%s..%s)", winStart.Format(time.RFC3339Nano), winEnd.Format(time.RFC3339Nano))
	require.True(t, closedAt.Before(winEnd.Add(-time.Second)), "gate closed at %s, window %s..%s", closedAt, winStart, winEnd)
	late := gw.arrivedBetween(closedAt.Add(time.Second), winEnd)
	require.Zero(t, late, "requests that reached the gateway 1 s or more after the gate closed (%s), before the window's end (%s)", closedAt, winEnd)
	require.Zero(t, redelivered, "jobs redelivered while the worker held them")
	require.Contains(t, w.log.String(), "apns credentials refused")
	rss := finishHostile(t, w, nGood)
	t.Logf("hostile 403: %d jobs, %d answered 403 in the window, gate closed %s after the window opened (held 200s answered %s after it), recovered %s after the window, %d duplicates, peak RSS %d MiB, %s",
		nGood, refused, closedAt.Sub(winStart).Round(time.Millisecond), released.Sub(winStart).Round(time.Millisecond), recovered.Round(time.Second), dups, rss>>20, time.Since(start).Round(time.Millisecond))
}

// TestHostileOutage: the gateway becomes unreachable (every connection
// closed, new ones closed at once) for 15 s, longer than ACK_WAIT (10 s),
// with 1500 jobs published meanwhile, more than MAX_IN_FLIGHT (1000): the
// worker holds 1000 (kept alive with InProgress), the rest wait in the
// stream or the pull buffer, and once the gateway is back each job is
// delivered exactly once. Before main's 404609a, 266-499 of them were sent
// twice (the pull buffer's jobs, redelivered behind their first copies).
func TestHostileOutage(t *testing.T) {
	t.Parallel()
	testOutage(t, 1500)
}

func testOutage(t *testing.T, nGood int) {
	const outage = 15 * time.Second
	start := time.Now()
	r := startRig(t, "hostile-outage", "h2", nil, nil, func(int) connPlan { return connPlan{} }, nil)
	gw, proxy, js, w := r.gw, r.proxy, r.js, r.w
	proxy.setDown(true)
	jobs := publishHostile(t, js, nGood, nil)
	<-time.After(outage) // the outage's length, not synchronisation
	require.Zero(t, gw.serial.Load(), "requests reached the gateway during the outage")
	proxy.setDown(false)
	back := time.Now()
	waitDrained(t, js, 90*time.Second)
	recovered := time.Since(back)

	dups := hostileVerdict(t, js, gw, jobs)
	require.Zero(t, dups, "notifications delivered twice")
	require.NotZero(t, proxy.refusedN.Load(), "connections refused by the outage")
	rss := finishHostile(t, w, nGood)
	t.Logf("hostile outage: %d jobs, %s unreachable (%d connections refused), drained %s after, %d duplicates, peak RSS %d MiB, %s",
		nGood, outage, proxy.refusedN.Load(), recovered.Round(time.Millisecond), dups, rss>>20, time.Since(start).Round(time.Millisecond))
}
