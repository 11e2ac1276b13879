package consumer

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
)

// leaderlessJS plays an events stream between leaders: the first failures
// event publishes get no responders (nats.go's ErrNoStreamResponse), and
// while they do, looking the stream up fails as it does without a leader.
// It counts the streams the worker tries to create.
type leaderlessJS struct {
	jetstream.JetStream
	failures atomic.Int32
	creates  atomic.Int32
}

func (l *leaderlessJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	if l.failures.Add(-1) >= 0 {
		f := failedFuture{errc: make(chan error, 1)}
		f.errc <- jetstream.ErrNoStreamResponse
		return f, nil
	}
	return l.JetStream.PublishMsgAsync(m, opts...)
}

func (l *leaderlessJS) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	if l.failures.Load() > 0 {
		// The server's JSClusterNotAvailErr (10008).
		return nil, &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}
	}
	return l.JetStream.Stream(ctx, name)
}

func (l *leaderlessJS) CreateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	l.creates.Add(1)
	return l.JetStream.CreateStream(ctx, cfg)
}

// syncBuffer is a log sink for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestEventsWithoutLeader: while the events stream has no leader, event
// publishes find no responders. The worker used to take that for a missing
// stream and try to create it ("events stream: could not create it
// again"), and nak the job. Now it looks the stream up, does not create
// it, and publishes again until the event is stored: the job is finished
// at its first delivery with exactly one event.
func TestEventsWithoutLeader(t *testing.T) {
	js, _ := startJS(t)
	ljs := &leaderlessJS{JetStream: js}
	eng := newFakeEngine(func(*apns.Notification, int) (error, bool) {
		return nil, false
	})
	var logs syncBuffer
	opts := testOptions()
	opts.eventRetryBase = 20 * time.Millisecond
	opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	startWorker(t, ljs, opts, eng)
	creates := ljs.creates.Load() // New created the streams
	ljs.failures.Store(3)
	_, err := js.Publish(ctxT(t), "apns.jobs", []byte(`{"id":"m1","token":"zz","payload":{"aps":{}}}`))
	require.NoError(t, err)

	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		10*time.Second, 10*time.Millisecond)
	evs := events[RejectionEvent](t, js, "apns.events.rejected")
	require.Len(t, evs, 1)
	require.Equal(t, "m1", evs[0].JobID)
	require.Equal(t, uint64(1), consumerInfo(t, js).Delivered.Consumer, "not naked: published again by the worker")
	require.Equal(t, creates, ljs.creates.Load(), "a stream without a leader is not created again")
	require.NotContains(t, logs.String(), "could not create it again")
	require.Contains(t, logs.String(), "events stream not reachable")
}
