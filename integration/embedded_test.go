package integration

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/consumer"
)

// TestZeroSetup runs the worker as a newcomer does: no NATS URL (it starts
// an embedded nats-server with JetStream, here on a free loopback port and
// a temporary data directory) and no APNs mode (mock, the in-process test
// gateway, which rejects tokens starting with bad0). Producers publish to
// the embedded server; /readyz answers; SIGTERM stops it cleanly. Its data
// dir is the default, ./data/nats in its working directory, and the log
// gives it as an absolute path, in one config record per section.
func TestZeroSetup(t *testing.T) {
	const n = 200
	listen := freeAddr(t)
	httpAddr := freeAddr(t)
	w := startWorker(t, "zero-setup", map[string]string{
		"APNS_WORKER_EMBEDDED_LISTEN": listen,
		"APNS_WORKER_HTTP_ADDR":       httpAddr,
	})
	require.Contains(t, w.log.String(), "MOCK APNs MODE", "mock mode is logged loudly")
	dataDir := filepath.Join(w.cmd.Dir, "data", "nats")
	require.FileExists(t, filepath.Join(dataDir, "apns-worker.lock"))
	var configs int
	for _, l := range strings.Split(w.log.String(), "\n") {
		if strings.Contains(l, `"msg":"config"`) {
			configs++
			require.Less(t, len(l), 600, "a config record of readable size: %s", l)
		}
	}
	require.GreaterOrEqual(t, configs, 8, "one config record per section")
	require.Contains(t, w.log.String(), `"msg":"config","embedded":{"data_dir":"`+dataDir+`"`)
	nc, js := connect(t, "nats://"+listen)

	isBad := func(i int) bool { return i%20 == 3 }
	jobs := publishJobs(t, js, "zero", n, func(i int) apns.Token {
		tk := token(0x20, i)
		if isBad(i) {
			tk[0], tk[1] = 0xba, 0xd0
		}
		return tk
	})
	waitDrained(t, js, 60*time.Second)
	var wantBad []string
	for i, j := range jobs {
		if isBad(i) {
			wantBad = append(wantBad, j.Token.String())
		}
	}
	var gotRej, gotBad []string
	for _, ev := range readEvents[consumer.RejectionEvent](t, js, subjRejected) {
		gotRej = append(gotRej, ev.Token)
		require.Equal(t, int(apns.StatusInvalidToken), ev.Status)
	}
	for _, ev := range readEvents[consumer.BadTokenEvent](t, js, subjBadTokens) {
		gotBad = append(gotBad, ev.Token)
	}
	require.ElementsMatch(t, wantBad, gotRej)
	require.ElementsMatch(t, wantBad, gotBad)
	require.Equal(t, float64(n-len(wantBad)), w.metric("apns_worker_jobs_delivered_total"))

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := client.Get("http://" + httpAddr + path)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", path, body)
	}
	nc.Close() // the embedded server goes away with the worker
	require.Equal(t, 0, w.stop(60*time.Second), "exit code")
}
