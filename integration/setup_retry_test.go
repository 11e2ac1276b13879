package integration

import (
	"context"
	"errors"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
)

// TestSetupWaitsForCluster: on a 3-node cluster, the worker's JetStream
// set-up fails at once when waiting cannot help (5 replicas on 3 servers:
// exit 2 naming APNS_WORKER_REPLICAS; a jobs stream of the wrong kind:
// exit 1). With the cluster restarted and one node not back, it waits
// with APNS_WORKER_REPLICAS=3: it logs a WARN per retry and /readyz says
// why, SIGTERM ends the wait at once, a short
// APNS_WORKER_NATS_CONNECT_TIMEOUT ends it with exit 2 naming
// APNS_WORKER_REPLICAS, and once the node is back the worker starts and
// delivers.
func TestSetupWaitsForCluster(t *testing.T) {
	servers := startCluster(t, 3)
	url := clusterURL(servers)
	_, js := connect(t, url)
	gw := startGateway(t)
	env := func(replicas int, timeout string) map[string]string {
		e := binaryEnv(t, url, gw, 200*time.Millisecond)
		e["APNS_WORKER_REPLICAS"] = strconv.Itoa(replicas)
		e["APNS_WORKER_NATS_CONNECT_TIMEOUT"] = timeout
		return e
	}
	const waiting = `"level":"WARN","msg":"jetstream not ready yet, retrying","var":"APNS_WORKER_REPLICAS","value":"3"`

	t.Run("more replicas than servers", func(t *testing.T) {
		out := exitsAtOnce(t, "setup-r5", env(5, "30s"), 2)
		last := lastLine(out)
		require.Contains(t, last, `"msg":"cannot start","var":"APNS_WORKER_REPLICAS","value":"5"`)
		require.Contains(t, last, "more replicas than the cluster has JetStream servers, and every one is online: this can never be placed")
		require.NotContains(t, out, "jetstream not ready yet")
	})

	t.Run("jobs stream of the wrong kind", func(t *testing.T) {
		ctx := ctxT(t, 10*time.Second)
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: jobsStream, Subjects: []string{jobsSubject}, Retention: jetstream.LimitsPolicy})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, js.DeleteStream(ctxT(t, 10*time.Second), jobsStream)) })
		out := exitsAtOnce(t, "setup-conflict", env(3, "30s"), 1)
		require.Contains(t, lastLine(out), "exists with Limits retention, the worker needs WorkQueue")
		require.NotContains(t, out, "jetstream not ready yet")
	})
	if t.Failed() {
		return
	}

	// The cluster restarts without one node: the meta group knows it, but
	// not that it is online, so 3 replicas cannot be placed (the CI case:
	// a node not yet back). A node merely stopped would still be placed on.
	again := make([]*server.Options, len(servers))
	for i, s := range servers {
		again[i] = restartOptions(t, servers, s)
	}
	for _, s := range servers {
		s.Shutdown()
		s.WaitForShutdown()
	}
	for _, o := range again[:2] {
		startServer(t, o)
	}
	waitFor(t, 30*time.Second, "the cluster to be up without "+again[2].ServerName, func() bool {
		return offlineRE.MatchString(probePlacement(js, 3))
	})

	t.Run("SIGTERM while waiting", func(t *testing.T) {
		w := spawnWorker(t, "setup-sigterm", env(3, "2m"))
		waitFor(t, 10*time.Second, "a set-up retry", func() bool { return strings.Contains(w.log.String(), waiting) })
		start := time.Now()
		code := w.stop(10 * time.Second)
		require.Equal(t, 0, code, "log:\n%s", w.log.String())
		require.Less(t, time.Since(start), 2*time.Second)
		last := lastLine(w.log.String())
		require.Contains(t, last, "stopped during start-up")
		require.Regexp(t, "stopped while (waiting for the JetStream cluster|creating the streams and the consumer)", last)
	})

	t.Run("gives up", func(t *testing.T) {
		start := time.Now()
		w := spawnWorker(t, "setup-gives-up", env(3, "2s"))
		code := w.wait(2*time.Second + deadEndWithin + 5*time.Second)
		took := time.Since(start)
		out := w.log.String()
		require.Equal(t, 2, code, "log:\n%s", out)
		require.GreaterOrEqual(t, took, 2*time.Second, "gave up before the timeout; log:\n%s", out)
		require.Less(t, took, 2*time.Second+deadEndWithin, "log:\n%s", out)
		require.Contains(t, out, waiting)
		last := lastLine(out)
		require.Contains(t, last, `"msg":"cannot start","var":"APNS_WORKER_REPLICAS","value":"3"`)
		require.Contains(t, last, "JetStream not ready within 2s (APNS_WORKER_NATS_CONNECT_TIMEOUT), waited 2")
		require.Contains(t, last, "a server is offline or not yet known to be online, and 3 replicas cannot be placed without it")
		require.Regexp(t, offlineRE, last)
	})

	t.Run("node back", func(t *testing.T) {
		e := env(3, "60s")
		httpAddr := freeAddr(t)
		e["APNS_WORKER_HTTP_ADDR"] = httpAddr
		w := spawnWorker(t, "setup-waits", e)
		waitFor(t, 10*time.Second, "a set-up retry", func() bool { return strings.Contains(w.log.String(), waiting) })
		code, body := httpGet(t, httpAddr, "/readyz")
		require.Equal(t, http.StatusServiceUnavailable, code)
		require.Contains(t, body, "starting: waiting for the JetStream cluster (APNS_WORKER_REPLICAS=3): a server is offline or not yet known to be online")
		require.False(t, w.exited())
		require.NotContains(t, w.log.String(), "jetstream streams and consumer ready")

		startServer(t, again[2])
		w.waitRunning(t, 20*time.Second, "after the node came back")
		info, err := js.Stream(ctxT(t, 10*time.Second), jobsStream)
		require.NoError(t, err)
		require.Equal(t, 3, info.CachedInfo().Config.Replicas)
		jobs := publishJobs(t, js, "setup-retry", 20, func(i int) apns.Token { return token(0x5e, i) })
		waitDrained(t, js, 30*time.Second)
		requireAllDelivered(t, gw, jobs, nil)
		code, body = httpGet(t, httpAddr, "/readyz")
		require.Equal(t, http.StatusOK, code, body)
		require.Equal(t, 0, w.stop(30*time.Second))
	})
}

// exitsAtOnce runs a worker that must exit by itself with code, without
// waiting (within deadEndWithin), and returns its log.
func exitsAtOnce(tb testing.TB, name string, env map[string]string, code int) string {
	tb.Helper()
	start := time.Now()
	w := spawnWorker(tb, name, env)
	got := w.wait(deadEndWithin + 5*time.Second)
	took := time.Since(start)
	out := w.log.String()
	require.Equal(tb, code, got, "exit code; log:\n%s", out)
	require.Less(tb, took, deadEndWithin, "waited for nothing; log:\n%s", out)
	return out
}

// offlineRE matches the server's reason for not placing replicas while a
// node is down or not heard from since the cluster restarted.
var offlineRE = regexp.MustCompile(`no suitable peers for placement, (peer offline|miscellaneous issue)`)

// restartOptions are the options that bring s, one of servers (as
// startCluster made them), back as itself: its name, store, client and
// cluster ports and routes.
func restartOptions(tb testing.TB, servers []*server.Server, s *server.Server) *server.Options {
	tb.Helper()
	routes := make([]string, len(servers))
	for i, o := range servers {
		routes[i] = "nats://" + o.ClusterAddr().String()
	}
	_, port, err := net.SplitHostPort(s.Addr().String())
	require.NoError(tb, err)
	p, err := strconv.Atoi(port)
	require.NoError(tb, err)
	return &server.Options{
		ServerName: s.Name(),
		JetStream:  true,
		StoreDir:   s.StoreDir(),
		Host:       "127.0.0.1",
		Port:       p,
		NoLog:      true,
		NoSigs:     true,
		Cluster:    server.ClusterOpts{Name: "apns-it", Host: "127.0.0.1", Port: s.ClusterAddr().Port},
		Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
	}
}

// probePlacement tries to place a stream with the given replicas and
// returns the server's reason when it cannot ("" when it could; the probe
// stream is deleted).
func probePlacement(js jetstream.JetStream, replicas int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "IT_SETUP_PROBE", Subjects: []string{"it.setup.probe"}, Replicas: replicas, Storage: jetstream.MemoryStorage})
	var api *jetstream.APIError
	switch {
	case err == nil:
		_ = js.DeleteStream(ctx, "IT_SETUP_PROBE")
		return ""
	case errors.As(err, &api):
		return api.Description
	}
	return err.Error()
}
