package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
	"github.com/jetpush/apns-worker/consumer"
)

// TestEndToEnd: jobs published to the jobs subject all reach the binary
// gateway and are acked; the stream ends empty and nothing is rejected.
func TestEndToEnd(t *testing.T) {
	const n = 2000
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	gw := startGateway(t)
	w := startWorker(t, "e2e", binaryEnv(t, ns.ClientURL(), gw, 200*time.Millisecond))

	jobs := publishJobs(t, js, "e2e", n, func(i int) apns.Token { return token(0xe1, i) })
	// The Go helper, on a subject below the jobs subject; publishing the
	// same job again (same id) is dropped by the stream.
	vip := consumer.NewJob(token(0xe2, 1), json.RawMessage(helloPayload))
	ctx := ctxT(t, 30*time.Second)
	ack, err := consumer.PublishJob(ctx, js, jobsSubject+".vip", vip)
	require.NoError(t, err)
	require.False(t, ack.Duplicate)
	again, err := consumer.PublishJob(ctx, js, jobsSubject+".vip", vip)
	require.NoError(t, err)
	require.True(t, again.Duplicate, "a job published twice is stored once")
	require.Equal(t, ack.Sequence, again.Sequence)
	waitDrained(t, js, 90*time.Second)

	require.Equal(t, 1, gw.Count(token(0xe2, 1)), "the job published twice")
	dups := requireAllDelivered(t, gw, jobs, nil)
	st := gw.Stats()
	require.Zero(t, st.Rejected)
	require.Zero(t, st.Malformed)
	require.Zero(t, subjectCount(t, js, subjRejected), "rejection events")
	require.Zero(t, subjectCount(t, js, subjBadTokens), "bad-token events")
	require.Zero(t, streamState(t, js, jobsStream).Msgs)
	require.Equal(t, 0, w.stop(60*time.Second), "exit code")
	t.Logf("%d jobs delivered, %d duplicates at the gateway, %d connections", n, dups, st.Conns)
}

// TestRejections: jobs to tokens the gateway rejects give exactly one
// rejection event each, with the status, job id and the job as published;
// status 8 (InvalidToken) also gives one bad-token event, status 7 none.
// No job is acked before its outcome: delivered jobs stay in the stream,
// un-acked, while their assumed-delivered window is open (as long as no
// later frame on their connection is rejected, which settles them early),
// and a rejected job leaves the stream only after its events are stored.
func TestRejections(t *testing.T) {
	const (
		nGood  = 200 // phase 1: delivered only
		n      = 240 // phase 2: one in 6 rejected with status 8, one in 6 with 7
		window = 6 * time.Second
	)
	kind := func(i int) int { // 8 or 7: rejected with that status; 0: delivered
		switch i % 6 {
		case 0:
			return 8
		case 3:
			return 7
		}
		return 0
	}
	tok := func(i int) apns.Token { return token(0xb0+byte(kind(i)), i) }
	var opts []apnstest.GatewayOption
	rejected := map[string]apns.Status{}
	for i := range n {
		if k := kind(i); k != 0 {
			opts = append(opts, apnstest.Reject(tok(i), apns.Status(k)))
			rejected[tok(i).String()] = apns.Status(k)
		}
	}
	isRejected := func(t apns.Token) bool { _, ok := rejected[t.String()]; return ok }

	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	gw := startGateway(t, opts...)
	startWorker(t, "rejections", binaryEnv(t, ns.ClientURL(), gw, window))

	// Phase 1: delivered jobs wait for their window, un-acked.
	start := time.Now()
	good := publishJobs(t, js, "good", nGood, func(i int) apns.Token { return token(0xa0, i) })
	waitFor(t, window, "the gateway to accept every job", func() bool {
		for _, j := range good {
			if gw.Count(j.Token) == 0 {
				return false
			}
		}
		return true
	})
	present := presentSeqs(streamState(t, js, jobsStream))
	ci := consumerInfo(t, js)
	elapsed := time.Since(start)
	require.Less(t, elapsed, window, "checks ran after the assumed-delivered window; cannot tell early acks")
	for _, j := range good {
		require.True(t, present[j.Seq], "job %s acked %s after the first send, before its %s assumed-delivered window", j.ID, elapsed, window)
	}
	require.Equal(t, nGood, ci.NumAckPending, "delivered jobs waiting for their ack")

	// Phase 2: rejections.
	jobs := publishJobs(t, js, "rej", n, tok)
	waitFor(t, 30*time.Second, "every rejection", func() bool { return gw.Stats().Rejected >= len(rejected) })
	present = presentSeqs(streamState(t, js, jobsStream)) // first the stream, then the events
	withEvent := map[string]bool{}
	for _, ev := range readEvents[consumer.RejectionEvent](t, js, subjRejected) {
		withEvent[ev.JobID] = true
	}
	for _, j := range jobs {
		if isRejected(j.Token) && !present[j.Seq] {
			require.True(t, withEvent[j.ID], "rejected job %s acked before its rejection event was stored", j.ID)
		}
	}

	waitDrained(t, js, 60*time.Second)
	requireAllDelivered(t, gw, append(jobs, good...), isRejected)
	require.Zero(t, gw.Stats().ResentAfterError, "notifications resent although processed before a rejected one")

	byID := map[string]job{}
	for _, j := range jobs {
		byID[j.ID] = j
	}
	rejEvents := readEvents[consumer.RejectionEvent](t, js, subjRejected)
	require.Len(t, rejEvents, len(rejected), "one rejection event per rejected job")
	seen := map[string]bool{}
	for _, ev := range rejEvents {
		j, ok := byID[ev.JobID]
		require.True(t, ok, "event for unknown job %q", ev.JobID)
		require.False(t, seen[ev.JobID], "two rejection events for %s", ev.JobID)
		seen[ev.JobID] = true
		st := rejected[j.Token.String()]
		require.Equal(t, int(st), ev.Status, "job %s", ev.JobID)
		require.Equal(t, st.String(), ev.Reason)
		require.Equal(t, j.Token.String(), ev.Token)
		require.Equal(t, j.Seq, ev.Seq)
		require.Equal(t, "binary", ev.Protocol)
		require.False(t, ev.Malformed)
		require.JSONEq(t, jobJSON(t, j), string(ev.Job), "the event carries the job as published")
	}
	var want8, got []string
	for tk, st := range rejected {
		if st == apns.StatusInvalidToken {
			want8 = append(want8, tk)
		}
	}
	for _, ev := range readEvents[consumer.BadTokenEvent](t, js, subjBadTokens) {
		got = append(got, ev.Token)
		require.Equal(t, consumer.SourceRejection, ev.Source)
		require.Equal(t, ev.Token, byID[ev.JobID].Token.String())
	}
	require.ElementsMatch(t, want8, got, "one bad-token event per status-8 rejection, none for status 7")
}

// jobJSON is the JSON publishJobs sent for j.
func jobJSON(tb testing.TB, j job) string {
	b, err := json.Marshal(consumer.Job{ID: j.ID, Token: j.Token.String(), Payload: json.RawMessage(helloPayload)})
	require.NoError(tb, err)
	return string(b)
}

// TestFeedback: tokens the feedback service reports reach the bad-tokens
// subject exactly once, though the poller polls many times, the service
// reports them again, and a second worker process hears them too.
func TestFeedback(t *testing.T) {
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	gw := startGateway(t)
	fb := apnstest.NewFeedbackServer(apnstest.FeedbackPKI(gw.PKI()))
	t.Cleanup(fb.Close)
	want := map[string]time.Time{}
	add := func() {
		for i := range 5 {
			tm := time.Unix(1_700_000_000+int64(i)*60, 0).UTC()
			fb.Add(token(0xfb, i), tm)
			want[token(0xfb, i).String()] = tm
		}
	}
	// Polls are sequential: once two more connections were served after
	// add, the batch holding the repeats has been published.
	add()
	env := binaryEnv(t, ns.ClientURL(), gw, 200*time.Millisecond)
	env["APNS_WORKER_FEEDBACK_ADDR"] = fb.Addr
	env["APNS_WORKER_FEEDBACK_INTERVAL"] = "100ms"
	w := startWorker(t, "feedback", env)

	waitFor(t, 30*time.Second, "5 bad-token events", func() bool { return subjectCount(t, js, subjBadTokens) >= 5 })
	served := fb.Served()
	add() // the service reports the same tokens again
	waitFor(t, 30*time.Second, "two more polls", func() bool { return fb.Served() >= served+2 && fb.Queued() == 0 })
	require.Equal(t, 5, subjectCount(t, js, subjBadTokens), "each feedback token exactly once")
	for _, ev := range readEvents[consumer.BadTokenEvent](t, js, subjBadTokens) {
		tm, ok := want[ev.Token]
		require.True(t, ok, "unexpected token %s", ev.Token)
		require.True(t, tm.Equal(ev.Time), "token %s: time %s, want %s", ev.Token, ev.Time, tm)
		require.Equal(t, consumer.SourceFeedback, ev.Source)
		delete(want, ev.Token)
	}
	require.Empty(t, want)
	require.GreaterOrEqual(t, fb.Served(), 3, "polls")
	require.Equal(t, 0, w.stop(60*time.Second), "exit code")

	// Another worker process is told the same tokens again.
	add()
	served = fb.Served()
	w2 := startWorker(t, "feedback-2", env)
	waitFor(t, 30*time.Second, "two polls by the new worker", func() bool { return fb.Served() >= served+2 && fb.Queued() == 0 })
	require.Equal(t, 5, subjectCount(t, js, subjBadTokens), "each feedback token exactly once, across processes")
	require.Zero(t, fb.HandshakeErrors())
	require.Equal(t, 0, w2.stop(60*time.Second), "exit code")
}

// TestMalformedJobs: each malformed job gives a rejection event carrying
// its bytes (the first MaxEventJob bytes, size and hash of a job too long
// for an event), and the worker keeps running: a good job after them is
// delivered.
func TestMalformedJobs(t *testing.T) {
	big := `{"id":"big","token":"` + token(0xbb, 1).String() + `","payload":{"aps":{"alert":"` + strings.Repeat("x", 10<<10) + `"}}}`
	huge := `{"id":"huge","token":"` + token(0xbb, 3).String() + `","payload":{"aps":{"alert":"` + strings.Repeat("y", 900<<10) + `"}}}`
	cases := []struct {
		name, reason string
		data         []byte
	}{
		{"broken JSON", consumer.ReasonMalformedJob, []byte(`{"id":"broken","token":"ab`)},
		{"not JSON", consumer.ReasonMalformedJob, []byte{0xff, 0x00, 'j', 'o', 'b'}},
		{"bad token hex", "InvalidToken", []byte(`{"id":"badhex","token":"zz` + strings.Repeat("0", 62) + `","payload":{"aps":{"alert":"x"}}}`)},
		{"10 KB payload", "PayloadTooLarge", []byte(big)},
		{"missing aps", "MissingAps", []byte(`{"id":"noaps","token":"` + token(0xbb, 2).String() + `","payload":{"alert":"x"}}`)},
		{"wrong types", consumer.ReasonMalformedJob, []byte(`{"id":"types","token":12345,"payload":"text","priority":"high"}`)},
		{"900 KB job", "PayloadTooLarge", []byte(huge)},
	}
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	gw := startGateway(t)
	w := startWorker(t, "malformed", binaryEnv(t, ns.ClientURL(), gw, 200*time.Millisecond))

	bySeq := map[uint64]int{}
	for i, c := range cases {
		bySeq[publishRaw(t, js, c.data)] = i
	}
	good := publishJobs(t, js, "good", 1, func(i int) apns.Token { return token(0x90, i) })
	waitDrained(t, js, 60*time.Second)
	require.Equal(t, 1, gw.Count(good[0].Token), "the good job after the malformed ones")
	require.False(t, w.exited(), "worker exited")
	require.Zero(t, gw.Stats().Accepted-1, "only the good job reached the gateway")

	evs := readEvents[consumer.RejectionEvent](t, js, subjRejected)
	require.Len(t, evs, len(cases))
	for _, ev := range evs {
		i, ok := bySeq[ev.Seq]
		require.True(t, ok, "event for seq %d", ev.Seq)
		c := cases[i]
		delete(bySeq, ev.Seq)
		t.Run(c.name, func(t *testing.T) {
			require.True(t, ev.Malformed, "malformed")
			require.Equal(t, c.reason, ev.Reason)
			require.NotEmpty(t, ev.Error)
			switch {
			case len(c.data) > consumer.MaxEventJob: // cut, described by size and hash
				sum := sha256.Sum256(c.data)
				require.True(t, ev.JobTruncated)
				require.Equal(t, len(c.data), ev.JobSize)
				require.Equal(t, hex.EncodeToString(sum[:]), ev.JobSHA256)
				require.Equal(t, c.data[:len(ev.JobRaw)], ev.JobRaw, "a prefix of the job")
				require.Nil(t, ev.Job)
			case json.Valid(c.data):
				require.JSONEq(t, string(c.data), string(ev.Job))
				require.Nil(t, ev.JobRaw)
			default:
				require.Equal(t, c.data, ev.JobRaw)
				require.Nil(t, ev.Job)
			}
		})
	}
	require.Empty(t, bySeq, "malformed jobs without an event")
	require.Zero(t, subjectCount(t, js, subjBadTokens))
	require.Equal(t, 0, w.stop(60*time.Second), "exit code")
}

// TestGatewayDrops: the gateway silently closes the connection carrying
// every 2500th frame (what was written after it is lost unread): the binary
// engine cannot know which frames were read, and still no job is lost
// (those it is not sure of are sent again). (At one close per 500 frames
// the engine makes no progress: each close resends up to ~1 600 frames in
// flight on the connection, so no frame outlives its assumed-delivered
// window.)
func TestGatewayDrops(t *testing.T) {
	const n = 8000
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	gw := startGateway(t, apnstest.CloseEvery(2500))
	w := startWorker(t, "drops", binaryEnv(t, ns.ClientURL(), gw, 200*time.Millisecond))
	jobs := publishJobs(t, js, "drops", n, func(i int) apns.Token { return token(0xcd, i) })
	waitDrained(t, js, 120*time.Second)
	dups := requireAllDelivered(t, gw, jobs, nil)
	st := gw.Stats()
	require.NotZero(t, st.SilentCloses)
	require.Zero(t, subjectCount(t, js, subjRejected))
	require.Equal(t, 0, w.stop(60*time.Second), "exit code")
	t.Logf("drops: %d silent closes, %d connections, %d duplicates", st.SilentCloses, st.Conns, dups)
}

// TestExpiredJob: a job whose expiration has passed is never sent; it ends
// at its first delivery in exactly one dead letter (reason Expired) and is
// terminated, and the worker carries on.
func TestExpiredJob(t *testing.T) {
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	gw := startGateway(t)
	env := binaryEnv(t, ns.ClientURL(), gw, 200*time.Millisecond)
	env["APNS_WORKER_JOBS_MAX_DELIVER"] = "3"
	env["APNS_WORKER_JOBS_BACKOFF"] = "100ms"
	w := startWorker(t, "expired", env)

	expired := token(0xe0, 1)
	seq := publishRaw(t, js, []byte(`{"id":"expired-1","token":"`+expired.String()+`","payload":{"aps":{"alert":"late"}},"expiration":"2020-01-01T00:00:00Z"}`))
	good := publishJobs(t, js, "after-expired", 1, func(i int) apns.Token { return token(0xe0, 2) })
	waitDrained(t, js, 60*time.Second)
	require.Equal(t, 1, gw.Count(good[0].Token))
	require.Zero(t, gw.Count(expired), "an expired notification was sent")
	dl := readEvents[consumer.DeadLetterEvent](t, js, eventsPrefix+"."+consumer.KindDeadLetter)
	require.Len(t, dl, 1)
	require.Equal(t, "expired-1", dl[0].JobID)
	require.Equal(t, seq, dl[0].Seq)
	require.Contains(t, dl[0].Error, "expir")
	require.Equal(t, consumer.ReasonExpired, dl[0].Reason)
	require.Equal(t, uint64(1), dl[0].Deliveries, "no retry can help an expired job")
	require.Zero(t, subjectCount(t, js, subjRejected))
	require.Equal(t, 0, w.stop(60*time.Second), "exit code")
}

// TestConfirmMarkers: with APNS_WORKER_APNS_CONFIRM_AFTER the worker acks
// jobs as soon as the gateway answers a confirm marker: the assumed-delivered
// window is ten minutes here, and every job still finishes in seconds,
// each reaching the gateway once; a rejection still gives its event.
func TestConfirmMarkers(t *testing.T) {
	const n = 3000
	bad := token(0xcf, 1234)
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	gw := startGateway(t, apnstest.Reject(bad, apns.StatusInvalidToken))
	env := binaryEnv(t, ns.ClientURL(), gw, 10*time.Minute)
	env["APNS_WORKER_JOBS_ACK_WAIT"] = "15m"
	env["APNS_WORKER_APNS_CONFIRM_AFTER"] = "20ms"
	w := startWorker(t, "markers", env)
	jobs := publishJobs(t, js, "markers", n, func(i int) apns.Token { return token(0xcf, i) })
	waitDrained(t, js, 60*time.Second)
	dups := requireAllDelivered(t, gw, jobs, func(tk apns.Token) bool { return tk.String() == bad.String() })
	require.Zero(t, dups)
	st := gw.Stats()
	require.NotZero(t, st.Malformed, "markers reached the gateway")
	require.Equal(t, 1, st.Rejected)
	require.Equal(t, 1, subjectCount(t, js, subjRejected))
	require.Equal(t, 1, subjectCount(t, js, subjBadTokens))
	require.Equal(t, 0, w.stop(60*time.Second), "exit code")
	t.Logf("markers: %d jobs, %d connections", n, st.Conns)
}
