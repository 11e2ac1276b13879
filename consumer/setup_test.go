package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
)

// TestSetupKeepsOperatorLimits: streams that exist keep what an operator
// set by hand (limits, discard policy, extra subjects); the worker adds its
// subjects and sets only what it owns (replicas, de-duplication window, the
// events' max age), and jobs still flow.
func TestSetupKeepsOperatorLimits(t *testing.T) {
	js, _ := startJS(t)
	ctx := ctxT(t)
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:      "APNS_JOBS",
		Subjects:  []string{"apns.jobs.>", "legacy.jobs"},
		Retention: jetstream.WorkQueuePolicy,
		Storage:   jetstream.FileStorage,
		MaxBytes:  64 << 20,
		MaxMsgs:   1_000_000,
		Discard:   jetstream.DiscardNew,
	})
	require.NoError(t, err)
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name:      "APNS_EVENTS",
		Subjects:  []string{"apns.events.>"},
		Retention: jetstream.LimitsPolicy,
		Storage:   jetstream.FileStorage,
		MaxBytes:  32 << 20,
		MaxAge:    time.Hour,
	})
	require.NoError(t, err)

	opts := testOptions()
	opts.EventsMaxAge = 48 * time.Hour
	r := startWorker(t, js, opts, newFakeEngine(nil))
	publishJobs(t, js, 20, tokHex)
	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		10*time.Second, 10*time.Millisecond, "jobs stream not emptied")
	require.NoError(t, r.stop())

	jobs := streamConfig(t, js, "APNS_JOBS")
	require.ElementsMatch(t, []string{"apns.jobs.>", "legacy.jobs", "apns.jobs"}, jobs.Subjects)
	require.Equal(t, int64(64<<20), jobs.MaxBytes)
	require.Equal(t, int64(1_000_000), jobs.MaxMsgs)
	require.Equal(t, jetstream.DiscardNew, jobs.Discard)
	require.Equal(t, 2*time.Minute, jobs.Duplicates, "the worker's de-duplication window")

	ev := streamConfig(t, js, "APNS_EVENTS")
	require.Equal(t, int64(32<<20), ev.MaxBytes)
	require.Equal(t, 48*time.Hour, ev.MaxAge, "the worker owns the events' max age")
	require.Equal(t, 10*time.Minute, ev.Duplicates)
}

// TestSetupWrongRetention: a jobs stream with limits retention cannot be
// the worker's work queue: New fails and says why.
func TestSetupWrongRetention(t *testing.T) {
	js, _ := startJS(t)
	_, err := js.CreateStream(ctxT(t), jetstream.StreamConfig{
		Name:      "APNS_JOBS",
		Subjects:  []string{"apns.jobs"},
		Retention: jetstream.LimitsPolicy,
	})
	require.NoError(t, err)
	_, err = New(js, testOptions())
	require.ErrorContains(t, err, "jobs stream APNS_JOBS: exists with Limits retention, the worker needs WorkQueue")
}

// TestSetupConcurrent: workers starting together on a fresh server all
// come up on the same streams.
func TestSetupConcurrent(t *testing.T) {
	js, _ := startJS(t)
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			w, err := New(js, testOptions())
			if err == nil {
				err = w.Shutdown(context.Background(), nil)
			}
			errs <- err
		}()
	}
	for range 3 {
		require.NoError(t, <-errs)
	}
	require.Equal(t, jetstream.WorkQueuePolicy, streamConfig(t, js, "APNS_JOBS").Retention)
}

func streamConfig(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(ctxT(t), name)
	require.NoError(t, err)
	return s.CachedInfo().Config
}

// TestRebindAfterDeletion: an operator deletes the durable consumer, then
// the whole jobs stream, under a running worker: it binds again (creating
// what is missing) and jobs published afterwards are still delivered.
func TestRebindAfterDeletion(t *testing.T) {
	js, _ := startJS(t)
	opts := testOptions()
	r := startWorker(t, js, opts, newFakeEngine(nil))
	round := 0
	publish := func() { // ids differ per round: the stream drops repeated ids
		round++
		for i := range 10 {
			_, err := PublishJob(ctxT(t), js, "apns.jobs", Job{ID: fmt.Sprintf("r%d-%d", round, i), Token: tokHex(i), Payload: json.RawMessage(payload)})
			require.NoError(t, err)
		}
	}
	emptied := func() bool {
		s, err := js.Stream(ctxT(t), "APNS_JOBS")
		return err == nil && s.CachedInfo().State.Msgs == 0
	}
	publish()
	require.Eventually(t, emptied, 10*time.Second, 10*time.Millisecond)

	require.NoError(t, js.DeleteConsumer(ctxT(t), "APNS_JOBS", "apns-worker"))
	require.Eventually(t, func() bool {
		_, err := js.Consumer(ctxT(t), "APNS_JOBS", "apns-worker")
		return err == nil
	}, 20*time.Second, 20*time.Millisecond, "the durable was not bound again")
	publish()
	require.Eventually(t, emptied, 20*time.Second, 10*time.Millisecond)

	require.NoError(t, js.DeleteStream(ctxT(t), "APNS_JOBS"))
	require.Eventually(t, func() bool {
		_, err := js.Consumer(ctxT(t), "APNS_JOBS", "apns-worker")
		return err == nil
	}, 20*time.Second, 20*time.Millisecond, "the stream and durable were not created again")
	publish()
	require.Eventually(t, emptied, 20*time.Second, 10*time.Millisecond)
	require.NoError(t, r.stop())
	r.eng.mu.Lock()
	defer r.eng.mu.Unlock()
	for i := range 10 {
		require.Equal(t, 3, r.eng.sends[tokHex(i)], "token %d: once per round", i)
	}
}

// TestEventsStreamRecreated: the events stream is deleted under a running
// worker; a rejection's event then finds no stream: the worker creates the
// stream again, and the naked job's retry stores its event and is acked.
func TestEventsStreamRecreated(t *testing.T) {
	js, _ := startJS(t)
	bad := tokHex(1)
	eng := newFakeEngine(func(n *apns.Notification, _ int) (error, bool) {
		if n.Token.String() == bad {
			return &apns.RejectionError{HTTPStatus: 400, Reason: "BadDeviceToken"}, false
		}
		return nil, false
	})
	opts := testOptions()
	opts.Backoff = []time.Duration{50 * time.Millisecond}
	r := startWorker(t, js, opts, eng)
	require.NoError(t, js.DeleteStream(ctxT(t), "APNS_EVENTS"))
	publishJobs(t, js, 3, tokHex)
	require.Eventually(t, func() bool {
		s, err := js.Stream(ctxT(t), "APNS_JOBS")
		return err == nil && s.CachedInfo().State.Msgs == 0
	}, 30*time.Second, 20*time.Millisecond, "the rejected job was not finished")
	require.NoError(t, r.stop())
	require.Equal(t, uint64(1), streamMsgs(t, js, "APNS_EVENTS", "apns.events.rejected"))
}

// TestSetupOverlappingSubjectsAndShortMaxAge: an operator's jobs stream on
// apns.jobs.* with a one-minute max age: the worker adds apns.jobs (no
// overlap), puts apns.jobs.> in the place of apns.jobs.* (which it covers:
// the server refuses overlaps), keeps its de-duplication window within
// the max age, and warns that the max age drops jobs without an event.
func TestSetupOverlappingSubjectsAndShortMaxAge(t *testing.T) {
	js, _ := startJS(t)
	_, err := js.CreateStream(ctxT(t), jetstream.StreamConfig{
		Name:      "APNS_JOBS",
		Subjects:  []string{"apns.jobs.*"},
		Retention: jetstream.WorkQueuePolicy,
		MaxAge:    time.Minute,
	})
	require.NoError(t, err)
	var log syncBuffer
	opts := testOptions()
	opts.Logger = slog.New(slog.NewJSONHandler(&log, nil))
	w, err := New(js, opts)
	require.NoError(t, err)
	require.NoError(t, w.Shutdown(context.Background(), nil))
	require.Contains(t, log.String(), `"msg":"the jobs stream's limits let the server drop jobs, which then get no outcome and no event","stream":"APNS_JOBS","max_age":60000000000`)
	c := streamConfig(t, js, "APNS_JOBS")
	require.ElementsMatch(t, []string{"apns.jobs", "apns.jobs.>"}, c.Subjects)
	require.Equal(t, time.Minute, c.Duplicates)
	require.Equal(t, 1, c.Replicas)
}

// TestSetupStreamsTheWorkerCannotRunWith: streams an operator created
// beforehand that would leave jobs or events nowhere to go. Narrower
// subjects (apns.jobs.ios; apns.events.rejected only, so that bad-token
// and dead-letter events find no stream) are widened to the worker's,
// wider ones kept, other subjects kept; no_ack (no event would ever be
// confirmed stored) is turned off. A subject that only partly overlaps
// the worker's cannot be widened: New fails naming both.
func TestSetupStreamsTheWorkerCannotRunWith(t *testing.T) {
	js, _ := startJS(t)
	ctx := ctxT(t)
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "APNS_JOBS", Subjects: []string{"apns.jobs.ios", "other.jobs"}, Retention: jetstream.WorkQueuePolicy,
	})
	require.NoError(t, err)
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "APNS_EVENTS", Subjects: []string{"apns.events.rejected"}, NoAck: true,
	})
	require.NoError(t, err)
	w, err := New(js, testOptions())
	require.NoError(t, err)
	require.NoError(t, w.Shutdown(context.Background(), nil))
	jobs, events := streamConfig(t, js, "APNS_JOBS"), streamConfig(t, js, "APNS_EVENTS")
	require.ElementsMatch(t, []string{"other.jobs", "apns.jobs", "apns.jobs.>"}, jobs.Subjects)
	require.ElementsMatch(t, []string{"apns.events.>"}, events.Subjects)
	require.False(t, events.NoAck)

	require.NoError(t, js.DeleteStream(ctx, "APNS_EVENTS"))
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "APNS_EVENTS", Subjects: []string{"push.*.rejected"}})
	require.NoError(t, err)
	opts := testOptions()
	opts.EventsSubject = "push.events"
	_, err = New(js, opts)
	require.ErrorContains(t, err, "events stream APNS_EVENTS: its subject push.*.rejected overlaps push.events.>")
}

// TestRebindDespiteStreamError: the events stream is replaced by another
// stream on its subjects (so it cannot be created again) and the durable is
// deleted: the worker still binds the consumer again, and delivered jobs
// flow.
func TestRebindDespiteStreamError(t *testing.T) {
	js, _ := startJS(t)
	r := startWorker(t, js, testOptions(), newFakeEngine(nil))
	ctx := ctxT(t)
	require.NoError(t, js.DeleteStream(ctx, "APNS_EVENTS"))
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "AUDIT", Subjects: []string{"apns.events.>"}})
	require.NoError(t, err)
	require.NoError(t, js.DeleteConsumer(ctx, "APNS_JOBS", "apns-worker"))
	require.Eventually(t, func() bool {
		_, err := js.Consumer(ctxT(t), "APNS_JOBS", "apns-worker")
		return err == nil
	}, 20*time.Second, 20*time.Millisecond, "the durable was not bound again")
	publishJobs(t, js, 10, tokHex)
	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		20*time.Second, 10*time.Millisecond)
	require.NoError(t, r.stop())
}

// TestEventInForeignStreamNotStored: while the worker runs, an operator
// replaces the events stream with another stream on its subjects. A
// rejection's event stored there is not stored for the producers: the job
// is not acked but tried again, until the events stream is back, and its
// event is then in it.
func TestEventInForeignStreamNotStored(t *testing.T) {
	js, _ := startJS(t)
	eng := newFakeEngine(func(*apns.Notification, int) (error, bool) {
		return &apns.RejectionError{HTTPStatus: 400, Reason: "BadDeviceToken"}, false
	})
	opts := testOptions()
	opts.eventRetryBase = 10 * time.Millisecond
	startWorker(t, js, opts, eng)
	ctx := ctxT(t)
	require.NoError(t, js.DeleteStream(ctx, "APNS_EVENTS"))
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "AUDIT", Subjects: []string{"apns.events.>"}})
	require.NoError(t, err)
	publishJobs(t, js, 1, tokHex)
	require.Eventually(t, func() bool { return eng.sent(tokHex(0)) >= 2 }, 20*time.Second, 10*time.Millisecond,
		"the job was not tried again")
	require.Equal(t, uint64(1), streamMsgs(t, js, "APNS_JOBS", ""), "acked with its event in AUDIT")

	require.NoError(t, js.DeleteStream(ctx, "AUDIT")) // the worker makes the events stream again
	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 }, 30*time.Second, 10*time.Millisecond)
	require.Equal(t, uint64(1), streamMsgs(t, js, "APNS_EVENTS", "apns.events.rejected"))
}

// TestBindNeverLowersSharedSettings: workers on one durable with other
// ACK_WAIT and MAX_IN_FLIGHT (a rolling upgrade). A worker with shorter
// or smaller ones keeps the durable's (and warns about the ack wait); one
// with longer or larger ones raises them.
func TestBindNeverLowersSharedSettings(t *testing.T) {
	js, _ := startJS(t)
	bind := func(ackWait time.Duration, maxInFlight int) string {
		var log syncBuffer
		opts := testOptions()
		opts.AckWait, opts.MaxInFlight = ackWait, maxInFlight
		opts.Logger = slog.New(slog.NewJSONHandler(&log, nil))
		w, err := New(js, opts)
		require.NoError(t, err)
		require.NoError(t, w.Shutdown(context.Background(), nil))
		return log.String()
	}
	durable := func() jetstream.ConsumerConfig {
		c, err := js.Consumer(ctxT(t), "APNS_JOBS", "apns-worker")
		require.NoError(t, err)
		return c.CachedInfo().Config
	}
	require.NotContains(t, bind(30*time.Second, 2000), "ack wait")
	first := durable()
	require.Equal(t, 30*time.Second, first.AckWait)

	log := bind(5*time.Second, 1000)
	require.Equal(t, first.AckWait, durable().AckWait, "lowered")
	require.Equal(t, first.MaxAckPending, durable().MaxAckPending, "lowered")
	require.Contains(t, log, `"durable_ack_wait":30000000000`)
	require.Contains(t, log, "APNS_WORKER_JOBS_ACK_WAIT")

	bind(time.Minute, 4000)
	require.Equal(t, time.Minute, durable().AckWait)
	require.Greater(t, durable().MaxAckPending, first.MaxAckPending)
}

// TestSetupWithinServerLimits: a server whose JetStream limits cap
// MaxAckPending and de-duplication windows below the worker's: the worker
// uses the limits, with a warning each, instead of failing to start.
func TestSetupWithinServerLimits(t *testing.T) {
	s, err := server.NewServer(&server.Options{
		JetStream: true, StoreDir: t.TempDir(), Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStreamLimits: server.JSLimitOpts{MaxAckPending: 500, Duplicates: time.Minute},
	})
	require.NoError(t, err)
	go s.Start()
	require.True(t, s.ReadyForConnections(10*time.Second))
	t.Cleanup(s.Shutdown)
	nc, err := nats.Connect(s.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)

	var log syncBuffer
	opts := testOptions()
	opts.JobsDuplicates, opts.EventsDuplicates = 2*time.Minute, 10*time.Minute
	opts.Logger = slog.New(slog.NewJSONHandler(&log, nil))
	w, err := New(js, opts)
	require.NoError(t, err)
	require.NoError(t, w.Shutdown(context.Background(), nil))
	require.Equal(t, time.Minute, streamConfig(t, js, "APNS_JOBS").Duplicates)
	require.Equal(t, time.Minute, streamConfig(t, js, "APNS_EVENTS").Duplicates)
	c, err := js.Consumer(ctxT(t), "APNS_JOBS", "apns-worker")
	require.NoError(t, err)
	require.Equal(t, 500, c.CachedInfo().Config.MaxAckPending)
	require.Equal(t, 2, strings.Count(log.String(), "the server limits de-duplication windows"), log.String())
	require.Contains(t, log.String(), "APNS_WORKER_MAX_IN_FLIGHT")
}

func TestSubjectCovers(t *testing.T) {
	for _, tt := range []struct {
		wide, narrow string
		want         bool
	}{
		{"apns.jobs", "apns.jobs", true},
		{"apns.jobs.>", "apns.jobs.ios", true},
		{"apns.jobs.>", "apns.jobs.*", true},
		{"apns.jobs.>", "apns.jobs.*.x", true},
		{"apns.jobs.>", "apns.jobs", false},
		{"apns.jobs.*", "apns.jobs.>", false},
		{"apns.jobs.*", "apns.jobs.ios", true},
		{"apns.*.ios", "apns.jobs.>", false},
		{"apns.>", "apns.jobs.>", true},
		{">", "apns", true},
		{"apns.jobs.ios", "apns.jobs.>", false},
		{"apns.jobs.ios", "apns.jobs.*", false},
		{"apns.events.>", "apns.jobs.>", false},
	} {
		require.Equal(t, tt.want, subjectCovers(tt.wide, tt.narrow), "%s ⊇ %s", tt.wide, tt.narrow)
	}
}

func TestSubjectsCollide(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"apns.jobs", "apns.jobs", true},
		{"apns.jobs", "apns.jobs.>", false},
		{"apns.jobs.*", "apns.jobs.>", true},
		{"apns.>", "apns.jobs", true},
		{"apns.*", "apns.jobs.>", false},
		{"apns.*.x", "apns.jobs.*", true},
		{"apns.events.>", "apns.jobs.>", false},
		{">", "anything.at.all", true},
	} {
		require.Equal(t, tt.want, subjectsCollide(tt.a, tt.b), "%s ~ %s", tt.a, tt.b)
		require.Equal(t, tt.want, subjectsCollide(tt.b, tt.a), "%s ~ %s", tt.b, tt.a)
	}
}
