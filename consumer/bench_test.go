package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
)

// BenchmarkWorker measures the consumer's own overhead: jobs go from the
// jobs stream through a worker to a fake engine that reports every job
// delivered at once, and are acked. "backlog" consumes b.N jobs published
// beforehand; "live" publishes them (async) while the worker consumes.
//
//	go test -run XXX -bench Worker -benchtime 200000x ./consumer/
func BenchmarkWorker(b *testing.B) {
	for _, live := range []bool{false, true} {
		name := "backlog"
		if live {
			name = "live"
		}
		b.Run(name, func(b *testing.B) { benchWorker(b, live) })
	}
}

func benchWorker(b *testing.B, live bool) {
	js, _ := startJS(b)
	// The producer has a connection of its own, as in production.
	pnc, err := nats.Connect(js.Conn().ConnectedUrl())
	require.NoError(b, err)
	b.Cleanup(pnc.Close)
	pjs, err := jetstream.New(pnc, jetstream.WithPublishAsyncMaxPending(4096))
	require.NoError(b, err)

	opts := testOptions()
	opts.AckWait = 30 * time.Second
	opts.MaxInFlight = 10_000
	w, err := New(js, opts)
	require.NoError(b, err)

	eng := newFakeEngine(nil)
	eng.limits = nil // the engine's validation is not the consumer's cost
	var done atomic.Int64
	all := make(chan struct{})
	n := int64(b.N)
	eng.out = func(o apns.Outcome) {
		w.HandleOutcome(o)
		if done.Add(1) == n {
			close(all)
		}
	}

	jobs := make([][]byte, b.N)
	for i := range jobs {
		j := Job{ID: fmt.Sprintf("bench-%d", i), Token: tokHex(i), Payload: json.RawMessage(`{"aps":{"alert":{"title":"Hello","body":"World"},"badge":1}}`),
			Topic: "com.example.app", PushType: "alert", Priority: 10}
		jobs[i], err = j.encode()
		require.NoError(b, err)
	}
	publish := func() {
		for i, data := range jobs {
			m := &nats.Msg{Subject: "apns.jobs", Data: data, Header: nats.Header{jetstream.MsgIDHeader: []string{fmt.Sprintf("bench-%d", i)}}}
			_, err := pjs.PublishMsgAsync(m, jetstream.WithStallWait(30*time.Second))
			require.NoError(b, err)
		}
		select {
		case <-pjs.PublishAsyncComplete():
		case <-time.After(time.Minute):
			b.Fatal("publishing did not complete")
		}
	}
	if !live {
		publish()
	}

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	go func() { errc <- w.Run(ctx, eng) }()
	if live {
		publish()
	}
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		b.Fatalf("only %d of %d outcomes", done.Load(), n)
	}
	require.NoError(b, js.Conn().Flush())
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "jobs/s")
	// CPU of the whole process (nats-server included) per job: a figure the
	// other tenants of a shared machine disturb less than jobs/s.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/job")

	cancel()
	require.NoError(b, <-errc)
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	require.NoError(b, w.Shutdown(sctx, eng))
	require.Eventually(b, func() bool {
		s, err := js.Stream(sctx, "APNS_JOBS")
		require.NoError(b, err)
		info, err := s.Info(sctx)
		require.NoError(b, err)
		return info.State.Msgs == 0
	}, 30*time.Second, 10*time.Millisecond, "every job acked")
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
