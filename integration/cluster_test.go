package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
)

// startCluster starts an n-node JetStream cluster in this process (distinct
// ServerName and StoreDir, one cluster name, routes to all) and waits until
// JetStream places a stream with n replicas. The servers are shut down at
// cleanup.
func startCluster(tb testing.TB, n int) []*server.Server {
	tb.Helper()
	ports := make([]int, n)
	routes := make([]string, n)
	for i := range n {
		_, p, err := net.SplitHostPort(freeAddr(tb))
		require.NoError(tb, err)
		_, err = fmt.Sscan(p, &ports[i])
		require.NoError(tb, err)
		routes[i] = "nats://" + net.JoinHostPort("127.0.0.1", p)
	}
	servers := make([]*server.Server, n)
	for i := range n {
		s, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			JetStream:  true,
			StoreDir:   tb.TempDir(),
			Host:       "127.0.0.1",
			Port:       -1,
			NoLog:      true,
			NoSigs:     true,
			Cluster:    server.ClusterOpts{Name: "apns-it", Host: "127.0.0.1", Port: ports[i]},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
		})
		require.NoError(tb, err)
		servers[i] = s
		go s.Start()
		tb.Cleanup(func() {
			s.Shutdown()
			s.WaitForShutdown()
		})
	}
	for _, s := range servers {
		require.True(tb, s.ReadyForConnections(30*time.Second), "%s not ready", s.Name())
	}
	_, js := connect(tb, clusterURL(servers))
	// JetStream answers once the meta group has a leader, but a stream with
	// n replicas is placed only once every peer is known to be online
	// ("no suitable peers for placement, peer offline" before): wait until
	// one can be created, so the tests start on the whole cluster.
	waitFor(tb, 60*time.Second, "JetStream placing a stream on every node", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "IT_PLACEMENT_PROBE", Subjects: []string{"it.placement.probe"}, Replicas: n, Storage: jetstream.MemoryStorage}); err != nil {
			return false
		}
		return js.DeleteStream(ctx, "IT_PLACEMENT_PROBE") == nil
	})
	return servers
}

func clusterURL(servers []*server.Server) string {
	urls := make([]string, len(servers))
	for i, s := range servers {
		urls[i] = s.ClientURL()
	}
	return strings.Join(urls, ",")
}

// TestClusterNodeLoss: three JetStream nodes, streams and the durable with
// 3 replicas, the worker given all three URLs. The jobs stream's and the
// durable's leaders are moved to the node the worker is connected to, and
// that node is stopped in the middle of the jobs (while they are still
// being published): the worker reconnects to another node, new leaders
// take over, and no job is lost.
func TestClusterNodeLoss(t *testing.T) {
	const n = 10000
	servers := startCluster(t, 3)
	url := clusterURL(servers)
	nc, js := connect(t, url)
	gw := startGateway(t)
	env := binaryEnv(t, url, gw, 200*time.Millisecond)
	env["APNS_WORKER_REPLICAS"] = "3"
	env["APNS_WORKER_JOBS_ACK_WAIT"] = "5s"
	env["APNS_WORKER_NATS_RECONNECT_WAIT"] = "100ms"
	env["APNS_WORKER_NATS_NAME"] = "it-cluster-worker"
	w := startWorker(t, "cluster", env)

	var victim *server.Server
	waitFor(t, 30*time.Second, "the worker's connection", func() bool {
		for _, s := range servers {
			cz, err := s.Connz(&server.ConnzOptions{})
			require.NoError(t, err)
			for _, c := range cz.Conns {
				if c.Name == "it-cluster-worker" {
					victim = s
				}
			}
		}
		return victim != nil
	})
	stepDown(t, nc, "$JS.API.STREAM.LEADER.STEPDOWN."+jobsStream, victim.Name())
	stepDown(t, nc, "$JS.API.CONSUMER.LEADER.STEPDOWN."+jobsStream+"."+durable, victim.Name())

	var (
		before   *jetstream.ConsumerInfo
		accepted atomic.Int64 // at the gateway when the node stopped
		at       atomic.Int64 // when it stopped, UNIX ns
	)
	stopped := when(t, func() bool { return gw.Stats().Accepted >= n/4 }, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if c, err := js.Consumer(ctx, jobsStream, durable); err == nil {
			before, _ = c.Info(ctx)
		}
		accepted.Store(int64(gw.Stats().Accepted))
		at.Store(time.Now().UnixNano())
		victim.Shutdown()
		victim.WaitForShutdown()
		return nil
	})
	// Resumed: more jobs reached the gateway than the worker could hold in
	// its pull buffer (1 000) and in flight (~1 500 here) at the stop.
	var resumed time.Duration
	resumedc := when(t, func() bool {
		return at.Load() != 0 && int64(gw.Stats().Accepted) >= min(n, accepted.Load()+2500)
	}, func() error {
		resumed = time.Since(time.Unix(0, at.Load()))
		return nil
	})
	jobs := publishJobsRetrying(t, js, "cluster", n, func(i int) apns.Token { return token(0xc3, i) })
	awaitSignal(t, stopped, 120*time.Second)
	if before != nil {
		t.Logf("before the stop: delivered %d, ack floor %d, ack pending %d",
			before.Delivered.Stream, before.AckFloor.Stream, before.NumAckPending)
	}
	require.Less(t, accepted.Load(), int64(n), "the node stopped after the last job")

	awaitSignal(t, resumedc, 180*time.Second)
	since := time.Now()
	waitDrained(t, js, 180*time.Second)
	drained := time.Since(since)
	dups := requireAllDelivered(t, gw, jobs, nil)
	require.False(t, w.exited(), "worker exited")
	require.Equal(t, 0, w.stop(60*time.Second), "exit code")
	t.Logf("cluster: stopped %s (the worker's node, jobs stream and durable leader) when %d of %d jobs had reached the gateway; resumed %s after it; drained %s after the jobs were published; %d duplicates",
		victim.Name(), accepted.Load(), n, resumed.Round(time.Millisecond), drained.Round(time.Millisecond), dups)
}

// stepDown asks the leader behind api to step down in favour of preferred,
// and waits until preferred leads.
func stepDown(tb testing.TB, nc *nats.Conn, api, preferred string) {
	tb.Helper()
	req, err := json.Marshal(map[string]any{"placement": map[string]string{"preferred": preferred}})
	require.NoError(tb, err)
	info := strings.Replace(api, ".LEADER.STEPDOWN.", ".INFO.", 1)
	leader := func() string {
		m, err := nc.Request(info, nil, 5*time.Second)
		if err != nil {
			return ""
		}
		var r struct {
			Cluster struct {
				Leader string `json:"leader"`
			} `json:"cluster"`
		}
		if json.Unmarshal(m.Data, &r) != nil {
			return ""
		}
		return r.Cluster.Leader
	}
	if leader() == preferred {
		return
	}
	m, err := nc.Request(api, req, 10*time.Second)
	require.NoError(tb, err)
	require.Contains(tb, string(m.Data), `"success":true`, "step down %s", api)
	waitFor(tb, 30*time.Second, preferred+" leading "+api, func() bool { return leader() == preferred })
}
