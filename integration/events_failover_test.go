package integration

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/consumer"
)

// TestEventsLeaderLoss: three JetStream nodes, every stream with 3
// replicas. A flood of malformed jobs (with a good job every tenth) is
// published, and the events stream's leader is shut down while the worker
// is turning them into rejection events: on a node the worker is not
// connected to (the leader moves under a live connection), and on the node
// the worker is connected to (the connection is replaced as well). Every
// malformed job ends with exactly one stored event (counted by job id),
// none reaches the gateway, every good job does, the jobs stream drains
// (no job acked without its event: the worker terminates a malformed job
// only once its event is stored) and the worker never tries to create the
// stream again.
func TestEventsLeaderLoss(t *testing.T) {
	for _, tc := range []struct {
		name       string
		workerNode bool // the victim is the node the worker is connected to
	}{
		{"leader moves", false},
		{"connection replaced", true},
	} {
		t.Run(tc.name, func(t *testing.T) { eventsLeaderLoss(t, tc.workerNode) })
	}
}

func eventsLeaderLoss(t *testing.T, onWorkerNode bool) {
	const n = 4000
	servers := startCluster(t, 3)
	url := clusterURL(servers)
	nc, _ := connect(t, url)
	gw := startGateway(t)
	env := binaryEnv(t, url, gw, 200*time.Millisecond)
	env["APNS_WORKER_REPLICAS"] = "3"
	env["APNS_WORKER_JOBS_ACK_WAIT"] = "5s"
	env["APNS_WORKER_NATS_RECONNECT_WAIT"] = "100ms"
	env["APNS_WORKER_NATS_NAME"] = "it-events-worker"
	env["APNS_WORKER_LOG_LEVEL"] = "debug" // the event retries are logged at debug
	w := startWorker(t, "events-failover", env)

	// The victim leads the events stream; the jobs stream and the durable
	// are led by another node, which stays.
	home := workerNode(t, servers, "it-events-worker")
	other := servers[0]
	if other == home {
		other = servers[1]
	}
	victim, keeper := other, home
	if onWorkerNode {
		victim, keeper = home, other
	}
	stepDown(t, nc, "$JS.API.STREAM.LEADER.STEPDOWN."+eventsStream, victim.Name())
	stepDown(t, nc, "$JS.API.STREAM.LEADER.STEPDOWN."+jobsStream, keeper.Name())
	stepDown(t, nc, "$JS.API.CONSUMER.LEADER.STEPDOWN."+jobsStream+"."+durable, keeper.Name())

	// The test's own connection avoids the victim.
	var others []string
	for _, s := range servers {
		if s != victim {
			others = append(others, s.ClientURL())
		}
	}
	_, js := connect(t, strings.Join(others, ","))

	all := floodJobs(n)
	var malformed, good []floodJob
	for _, j := range all {
		if j.good {
			good = append(good, j)
		} else {
			malformed = append(malformed, j)
		}
	}
	var stored atomic.Int64
	stopped := when(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, eventsStream)
		if err != nil {
			return false
		}
		stored.Store(int64(s.CachedInfo().State.Msgs))
		return stored.Load() >= int64(len(malformed)/10)
	}, func() error {
		victim.Shutdown()
		victim.WaitForShutdown()
		return nil
	})
	publishFlood(t, js, all)
	awaitSignal(t, stopped, 120*time.Second)
	require.Less(t, stored.Load(), int64(len(malformed)), "the leader stopped before the last event")

	waitDrained(t, js, 180*time.Second)
	evs := readEvents[consumer.RejectionEvent](t, js, subjRejected)
	perJob := map[string]int{}
	for _, e := range evs {
		require.True(t, e.Malformed, "job %s: %s", e.JobID, e.Reason)
		require.Equal(t, "binary", e.Protocol)
		perJob[e.JobID]++
	}
	for _, m := range malformed {
		require.Equal(t, 1, perJob[m.id], "events of malformed job %s", m.id)
		require.Zero(t, gw.Count(m.token), "malformed job %s reached the gateway", m.id)
	}
	require.Len(t, evs, len(malformed), "one event per malformed job, no other")
	dups := 0
	for _, g := range good {
		c := gw.Count(g.token)
		require.NotZero(t, c, "good job %s not delivered", g.id)
		dups += c - 1
	}
	require.False(t, w.exited(), "worker exited")
	require.Equal(t, 0, w.stop(60*time.Second), "exit code")
	log := w.log.String()
	require.NotContains(t, log, "could not create it again", "the stream was never missing")
	causes := map[string]int{} // why event publishes were retried
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `"msg":"events stream`) {
			t.Logf("worker: %s", line)
		}
		if _, after, ok := strings.Cut(line, `publishing it again"`); ok {
			if _, cause, ok := strings.Cut(after, `"error":`); ok {
				causes[strings.TrimSuffix(cause, "}")]++
			}
		}
	}
	t.Logf("retried publishes by cause: %v", causes)
	t.Logf("stopped %s (events stream leader%s) at %d of %d events; %d event publishes retried, %d jobs naked for their event; %d good jobs, %d duplicates",
		victim.Name(), map[bool]string{true: ", the worker's node", false: ""}[onWorkerNode], stored.Load(), len(malformed),
		strings.Count(log, "publishing it again"), strings.Count(log, `"msg":"event not stored"`), len(good), dups)
}

// workerNode returns the server the named client is connected to.
func workerNode(tb testing.TB, servers []*server.Server, name string) *server.Server {
	tb.Helper()
	var home *server.Server
	waitFor(tb, 30*time.Second, "the worker's connection", func() bool {
		for _, s := range servers {
			cz, err := s.Connz(&server.ConnzOptions{})
			require.NoError(tb, err)
			for _, c := range cz.Conns {
				if c.Name == name {
					home = s
				}
			}
		}
		return home != nil
	})
	return home
}

// floodJob is one job of the flood: its id, its token (if it has one the
// gateway could count) and its bytes.
type floodJob struct {
	id    string
	token apns.Token
	data  []byte
	good  bool
}

// floodJobs returns n jobs: every tenth good, the others malformed in
// several ways (each with an id the test can count its event by).
func floodJobs(n int) []floodJob {
	var all []floodJob
	for i := range n {
		id := fmt.Sprintf("flood-%d", i)
		tok := token(0xf1, i)
		var data string
		switch i % 10 {
		case 0:
			data = `{"id":"` + id + `","token":"` + tok.String() + `","payload":` + helloPayload + `}`
		case 1:
			data = `{"id":"` + id + `","token":"` + tok.String() + `","payload":{"aps":"hi"}}`
		case 2:
			data = `{"id":"` + id + `","token":"` + tok.String() + `","payload":` + helloPayload + `,"token":"` + tok.String() + `"}`
		case 3:
			data = `{"id":"` + id + `","token":"` + tok.String() + `","payload":{"aps":{},"aps":{"alert":"x"}}}`
		case 4:
			data = `{"id":"` + id + `","token":"zz` + tok.String()[2:] + `","payload":` + helloPayload + `}`
		case 5:
			data = `{"id":"` + id + `","token":"` + tok.String() + `","payload":{"aps":{"alert":"\ud800"}}}`
		case 6:
			data = `{"id":"` + id + `","token":"` + tok.String() + `","payload":` + helloPayload + `,"priority":1e1}`
		case 7:
			data = `{"id":"` + id + `","token":"` + tok.String() + `","push_type":"liveactivity","topic":"com.x.push-type.liveactivity","payload":{"aps":{"event":"update","timestamp":1796083200}}}`
		case 8:
			data = `{"id":"` + id + `","token":"` + tok.String() + `","payload":` + helloPayload + `} trailing`
		default:
			data = `{"id":"` + id + `","token":"` + tok.String() + `","payload":{"alert":"no aps"}}`
		}
		all = append(all, floodJob{id, tok, []byte(data), i%10 == 0})
	}
	return all
}

// publishFlood publishes the jobs in order, each with its id as
// Nats-Msg-Id; a publish without a PubAck is repeated (the id keeps it
// stored once) until it is stored.
func publishFlood(tb testing.TB, js jetstream.JetStream, all []floodJob) {
	tb.Helper()
	futs := make([]jetstream.PubAckFuture, len(all))
	msgs := make([]*nats.Msg, len(all))
	for i, j := range all {
		msgs[i] = &nats.Msg{Subject: jobsSubject, Data: j.data, Header: nats.Header{jetstream.MsgIDHeader: []string{j.id}}}
		var err error
		futs[i], err = js.PublishMsgAsync(msgs[i], jetstream.WithStallWait(30*time.Second))
		require.NoError(tb, err, "publish %s", j.id)
	}
	for i, f := range futs {
		select {
		case <-f.Ok():
			continue
		case <-f.Err():
		case <-time.After(30 * time.Second):
		}
		deadline := time.Now().Add(90 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := js.PublishMsg(ctx, msgs[i])
			cancel()
			if err == nil {
				break
			}
			require.False(tb, time.Now().After(deadline), "job %s not stored within 90s: %v", all[i].id, err)
			time.Sleep(100 * time.Millisecond) // retry pause
		}
	}
}
