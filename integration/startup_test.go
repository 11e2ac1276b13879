package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
	"github.com/jetpush/apns-worker/config"
)

// deadEndWithin bounds how long the worker may take to give up on a dead
// end at start-up.
const deadEndWithin = 5 * time.Second

// TestStartupDeadEnds: each unusable dependency ends start-up with exit
// code 2 within 5 s, and the last log line names the variable and its
// value.
func TestStartupDeadEnds(t *testing.T) {
	dir := t.TempDir()
	aFile := filepath.Join(dir, "a-file")
	require.NoError(t, os.WriteFile(aFile, []byte("x"), 0o600))
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { busy.Close() })
	unreachable := freeAddr(t)
	tokenNATS := startNATSWith(t, freeAddr(t), func(o *server.Options) { o.Authorization = "right-token" })
	plainNATS := startNATSWith(t, freeAddr(t), func(o *server.Options) { o.JetStream = false })

	tests := []struct {
		name     string
		env      map[string]string
		variable string
		value    string // in the message
		msg      string // in the message
		extra    time.Duration
		atLeast  time.Duration // the worker must have kept trying this long
	}{
		{"data dir is a file", map[string]string{"APNS_WORKER_EMBEDDED_DATA_DIR": aFile},
			"APNS_WORKER_EMBEDDED_DATA_DIR", aFile, "not a directory: a file of that name is in the way", 0, 0},
		{"data dir under a file", map[string]string{"APNS_WORKER_EMBEDDED_DATA_DIR": filepath.Join(aFile, "nats")},
			"APNS_WORKER_EMBEDDED_DATA_DIR", filepath.Join(aFile, "nats"), "cannot create it", 0, 0},
		{"embedded port in use", map[string]string{"APNS_WORKER_EMBEDDED_LISTEN": busy.Addr().String()},
			"APNS_WORKER_EMBEDDED_LISTEN", busy.Addr().String(), "address already in use", 0, 0},
		{"http port in use", map[string]string{"APNS_WORKER_HTTP_ADDR": busy.Addr().String()},
			"APNS_WORKER_HTTP_ADDR", busy.Addr().String(), "address already in use", 0, 0},
		{"nats unreachable", map[string]string{"APNS_WORKER_NATS_URL": "nats://" + unreachable, "APNS_WORKER_NATS_CONNECT_TIMEOUT": "1s"},
			"APNS_WORKER_NATS_URL", "nats://" + unreachable, "no NATS server reachable within 1s (APNS_WORKER_NATS_CONNECT_TIMEOUT)", time.Second, time.Second},
		{"nats refuses the token", map[string]string{"APNS_WORKER_NATS_URL": tokenNATS.ClientURL(), "APNS_WORKER_NATS_TOKEN": "wrong-token"},
			"APNS_WORKER_NATS_TOKEN", "[redacted]", "refused the connection", 0, 0},
		{"nats without jetstream", map[string]string{"APNS_WORKER_NATS_URL": plainNATS.ClientURL()},
			"APNS_WORKER_NATS_URL", plainNATS.ClientURL(), "has no JetStream", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{
				"APNS_WORKER_EMBEDDED_DATA_DIR": t.TempDir(),
				"APNS_WORKER_EMBEDDED_LISTEN":   freeAddr(t),
			}
			for k, v := range tt.env {
				env[k] = v
			}
			start := time.Now()
			w := spawnWorker(t, tt.name, env)
			code := w.wait(deadEndWithin + tt.extra + 5*time.Second)
			took := time.Since(start)
			out := w.log.String()
			require.Equal(t, 2, code, "exit code; log:\n%s", out)
			require.Less(t, took, deadEndWithin+tt.extra, "took too long to give up; log:\n%s", out)
			require.GreaterOrEqual(t, took, tt.atLeast, "gave up before the timeout; log:\n%s", out)
			last := lastLine(out)
			require.Contains(t, last, `"msg":"cannot start"`)
			require.Contains(t, last, `"var":"`+tt.variable+`"`)
			require.Contains(t, last, tt.value)
			require.Contains(t, last, tt.msg)
			require.NotContains(t, out, "wrong-token")
			t.Logf("exit 2 after %s: %s", took.Round(time.Millisecond), last)
		})
	}
}

// TestStartupSIGTERMWhileConnecting: SIGTERM at a start-up step that
// waits (NATS unreachable and retried; a NATS server that has no
// JetStream, asked again for 3 s) ends the worker at once with exit code 0.
func TestStartupSIGTERMWhileConnecting(t *testing.T) {
	plainNATS := startNATSWith(t, freeAddr(t), func(o *server.Options) { o.JetStream = false })
	for _, tt := range []struct {
		name, url, waiting, reason string
	}{
		{"nats unreachable", "nats://" + freeAddr(t), "nats not reachable yet, retrying", "stopped while connecting"},
		{"nats without jetstream", plainNATS.ClientURL(), "nats connected", "stopped while waiting for JetStream"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := spawnWorker(t, "sigterm-connecting", map[string]string{
				"APNS_WORKER_NATS_URL":             tt.url,
				"APNS_WORKER_NATS_CONNECT_TIMEOUT": "2m",
			})
			waitFor(t, 10*time.Second, tt.waiting, func() bool { return strings.Contains(w.log.String(), tt.waiting) })
			start := time.Now()
			code := w.stop(10 * time.Second)
			took := time.Since(start)
			require.Equal(t, 0, code, "log:\n%s", w.log.String())
			require.Less(t, took, 2*time.Second)
			last := lastLine(w.log.String())
			require.Contains(t, last, "stopped during start-up")
			require.Contains(t, last, tt.reason)
			require.NotContains(t, w.log.String(), "cannot start")
		})
	}
}

// TestDataDirLock: a second worker on the same embedded data dir fails at
// once, naming the first one's PID; the lock goes with the process, even
// when it is killed.
func TestDataDirLock(t *testing.T) {
	dataDir := t.TempDir()
	w1 := startWorker(t, "lock-1", map[string]string{
		"APNS_WORKER_EMBEDDED_DATA_DIR": dataDir,
		"APNS_WORKER_EMBEDDED_LISTEN":   freeAddr(t),
	})
	start := time.Now()
	w2 := spawnWorker(t, "lock-2", map[string]string{
		"APNS_WORKER_EMBEDDED_DATA_DIR": dataDir,
		"APNS_WORKER_EMBEDDED_LISTEN":   freeAddr(t),
	})
	require.Equal(t, 2, w2.wait(deadEndWithin+5*time.Second), "log:\n%s", w2.log.String())
	require.Less(t, time.Since(start), deadEndWithin)
	last := lastLine(w2.log.String())
	require.Contains(t, last, "APNS_WORKER_EMBEDDED_DATA_DIR")
	require.Contains(t, last, fmt.Sprintf("in use by another process (PID %d", w1.cmd.Process.Pid))

	require.NoError(t, w1.cmd.Process.Signal(syscall.SIGKILL))
	require.NotZero(t, w1.wait(10*time.Second))
	w3 := startWorker(t, "lock-3", map[string]string{
		"APNS_WORKER_EMBEDDED_DATA_DIR": dataDir,
		"APNS_WORKER_EMBEDDED_LISTEN":   freeAddr(t),
	})
	b, err := os.ReadFile(filepath.Join(dataDir, "apns-worker.lock"))
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(w3.cmd.Process.Pid), strings.TrimSpace(string(b)))
	require.Equal(t, 0, w3.stop(30*time.Second))
}

// TestNATSStartupRetry: the worker starts 5 s before NATS (as in compose
// or Kubernetes): /readyz fails meanwhile, then it connects and delivers
// every job a producer published from the moment NATS was up, and a clean stop logs a summary at INFO and no disconnect warning.
// A misspelt variable is warned about with the nearest valid name.
func TestNATSStartupRetry(t *testing.T) {
	const n = 500
	natsAddr := freeAddr(t)
	httpAddr := freeAddr(t)
	gw := startGateway(t)
	env := binaryEnv(t, "nats://"+natsAddr, gw, 200*time.Millisecond)
	env["APNS_WORKER_HTTP_ADDR"] = httpAddr
	env["APNS_WORKER_JOBS_ACKWAIT"] = "5s" // misspelt
	w := spawnWorker(t, "nats-later", env)

	waitFor(t, 10*time.Second, "a connect retry", func() bool { return strings.Contains(w.log.String(), "nats not reachable yet, retrying") })
	code, body := httpGet(t, httpAddr, "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "starting: connecting to NATS")
	code, _ = httpGet(t, httpAddr, "/healthz")
	require.Equal(t, http.StatusOK, code, "the process is alive while it waits")

	<-time.After(5 * time.Second) // the scenario: NATS comes up 5 s after the worker
	ns := startNATSWith(t, natsAddr, nil)
	// A producer starts with NATS, while the worker may still wait out its
	// back-off: it publishes until the worker has made the stream.
	_, js := connect(t, ns.ClientURL())
	jobs := publishJobsRetrying(t, js, "later", n, func(i int) apns.Token { return token(0x1a, i) })
	w.waitRunning(t, 30*time.Second, "after NATS started")
	waitDrained(t, js, 60*time.Second)
	requireAllDelivered(t, gw, jobs, nil)
	code, body = httpGet(t, httpAddr, "/readyz")
	require.Equal(t, http.StatusOK, code, body)

	require.Equal(t, 0, w.stop(30*time.Second))
	out := w.log.String()
	require.Contains(t, out, `"var":"APNS_WORKER_JOBS_ACKWAIT","did_you_mean":"APNS_WORKER_JOBS_ACK_WAIT"`)
	// Each start-up step is logged with the variable it checked.
	for _, step := range []string{
		`"msg":"nats connected","var":"APNS_WORKER_NATS_URL","value":"nats://` + natsAddr + `"`,
		`"msg":"jetstream streams and consumer ready","var":"APNS_WORKER_JOBS_STREAM"`,
		`"msg":"apns engine ready","var":"APNS_WORKER_APNS_MODE","value":"binary"`,
		`"msg":"apns reachable","var":"APNS_WORKER_APNS_ADDR","value":"` + gw.Addr + `"`,
	} {
		require.Contains(t, out, step)
	}
	// A clean stop: nothing at WARN or above from the signal on.
	_, stopping, ok := strings.Cut(out, `"msg":"shutting down"`)
	require.True(t, ok, "no shutting down line:\n%s", out)
	require.NotRegexp(t, `"level":"(WARN|ERROR)"`, stopping)
	require.NotContains(t, out, "nats disconnected")
	require.NotContains(t, out, `"msg":"job"`, "no per-job line at info")
	last := lastLine(out)
	require.Contains(t, last, `"level":"INFO","msg":"stopped"`)
	require.Contains(t, last, fmt.Sprintf(`"jobs_delivered":%d`, n))
	require.Contains(t, last, `"jobs_rejected":0`)
	require.Contains(t, last, `"uptime":`)
}

// TestSIGKILLRecovery: a worker holding jobs (its gateway stalled, its
// assumed-delivered window 30 s) is SIGKILLed; a second worker on a healthy
// gateway gets every one of them back within about the default ACK_WAIT
// (10 s), not the old 60 s. ACK_WAIT shorter than the window is fine: the
// worker keeps the jobs it holds with InProgress.
func TestSIGKILLRecovery(t *testing.T) {
	const n, stallAt = 2000, 500
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	stalled := startGateway(t, apnstest.StallAfter(stallAt))
	env := binaryEnv(t, ns.ClientURL(), stalled, 30*time.Second) // JOBS_ACK_WAIT: the default
	w1 := startWorker(t, "recovery-1", env)
	jobs := publishJobs(t, js, "recovery", n, func(i int) apns.Token { return token(0x4e, i) })
	waitFor(t, 30*time.Second, "the gateway to stall", func() bool { return stalled.Stats().Accepted >= stallAt })
	// Past two InProgress ticks (AckWait/6 each), so the test covers a
	// worker that extended its jobs' deadline before it died.
	<-time.After(4 * time.Second)

	require.NoError(t, w1.cmd.Process.Signal(syscall.SIGKILL))
	killed := time.Now()
	require.NotZero(t, w1.wait(10*time.Second))
	healthy := startGateway(t)
	w2 := startWorker(t, "recovery-2", binaryEnv(t, ns.ClientURL(), healthy, 200*time.Millisecond))
	waitDrained(t, js, 60*time.Second)
	took := time.Since(killed)
	var missing int
	for _, j := range jobs {
		if healthy.Count(j.Token) == 0 && stalled.Count(j.Token) == 0 {
			missing++
		}
	}
	require.Zero(t, missing, "jobs never read by either gateway")
	t.Logf("SIGKILL recovery: every held job delivered by the second worker %s after the kill (default ACK_WAIT 10s)", took.Round(100*time.Millisecond))
	require.Less(t, took, 15*time.Second, "a killed worker's jobs came back too late")
	require.Equal(t, 0, w2.stop(30*time.Second))
}

// TestHelpListsEveryVariable: -h lists every variable with its default;
// each command answers -h with exit code 0.
func TestHelpListsEveryVariable(t *testing.T) {
	out, err := exec.Command(workerBin, "-h").CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, name := range config.Names() {
		require.Regexp(t, `(?m)^  `+name+` `, string(out))
	}
	require.Regexp(t, `(?m)^  APNS_WORKER_NATS_CONNECT_TIMEOUT +30s +\S`, string(out))
	for _, args := range [][]string{{"healthcheck", "-h"}, {"mock-apns", "-h"}, {"help"}} {
		out, err := exec.Command(workerBin, args...).CombinedOutput()
		require.NoError(t, err, "%v: %s", args, out)
		require.Contains(t, string(out), "usage: apns-worker", "%v", args)
	}
	// Bad usage: exit code 2 with what is wrong and the usage.
	for _, tt := range []struct {
		args []string
		msg  string
	}{
		{[]string{"nonsense"}, `unknown command "nonsense"`},
		{[]string{"healthcheck", "extra"}, "no arguments expected"},
		{[]string{"mock-apns", "-bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"mock-apns", "extra"}, `unexpected argument "extra"`},
	} {
		out, err := exec.Command(workerBin, tt.args...).CombinedOutput()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "%v: %s", tt.args, out)
		require.Equal(t, 2, ee.ExitCode(), "%v: %s", tt.args, out)
		require.Contains(t, string(out), tt.msg, "%v", tt.args)
		require.Contains(t, string(out), "usage: apns-worker", "%v", tt.args)
	}
}

// TestStartupAPNsUnreachable: an APNs address nothing answers on is a
// logged step naming APNS_WORKER_APNS_ADDR and its value, not a dead end:
// APNs or the network may come back, so the worker runs, and stops cleanly.
func TestStartupAPNsUnreachable(t *testing.T) {
	dead := freeAddr(t)
	env := binaryEnv(t, "", startGateway(t), 200*time.Millisecond) // no NATS URL: embedded
	env["APNS_WORKER_EMBEDDED_LISTEN"] = freeAddr(t)
	env["APNS_WORKER_EMBEDDED_DATA_DIR"] = t.TempDir()
	env["APNS_WORKER_APNS_ADDR"] = dead
	start := time.Now()
	w := startWorker(t, "apns-unreachable", env)
	require.Less(t, time.Since(start), deadEndWithin, "the probe is bounded")
	var probe string
	for _, l := range strings.Split(w.log.String(), "\n") {
		if strings.Contains(l, `"msg":"apns not reachable yet; the engine keeps trying"`) {
			probe = l
		}
	}
	require.NotEmpty(t, probe, "no probe line:\n%s", w.log.String())
	require.Contains(t, probe, `"level":"WARN"`)
	require.Contains(t, probe, `"var":"APNS_WORKER_APNS_ADDR","value":"`+dead+`"`)
	require.Equal(t, 0, w.stop(30*time.Second), "log:\n%s", w.log.String())
}

// startNATSWith starts a nats-server with JetStream on addr, adjusted by
// adjust (may be nil); it is shut down at cleanup.
func startNATSWith(tb testing.TB, addr string, adjust func(*server.Options)) *server.Server {
	tb.Helper()
	host, port, err := net.SplitHostPort(addr)
	require.NoError(tb, err)
	p, err := strconv.Atoi(port)
	require.NoError(tb, err)
	o := &server.Options{JetStream: true, StoreDir: tb.TempDir(), Host: host, Port: p, NoLog: true, NoSigs: true}
	if adjust != nil {
		adjust(o)
	}
	return startServer(tb, o)
}

// httpGet returns the status and body of GET http://addr+path.
func httpGet(tb testing.TB, addr, path string) (int, string) {
	tb.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + path)
	require.NoError(tb, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(tb, err)
	return resp.StatusCode, string(b)
}

// lastLine returns the last non-empty line of a process's output.
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1]
}

// TestDebugJobLine: at APNS_WORKER_LOG_LEVEL=debug the worker logs one
// line per job outcome with its id, token prefix, outcome, attempts and
// latency.
func TestDebugJobLine(t *testing.T) {
	listen := freeAddr(t)
	w := startWorker(t, "debug-line", map[string]string{
		"APNS_WORKER_EMBEDDED_LISTEN":   listen,
		"APNS_WORKER_EMBEDDED_DATA_DIR": t.TempDir(),
		"APNS_WORKER_LOG_LEVEL":         "debug",
	})
	_, js := connect(t, "nats://"+listen)
	jobs := publishJobs(t, js, "debug", 2, func(i int) apns.Token {
		tk := token(0x2d, i)
		if i == 1 {
			tk[0], tk[1] = 0xba, 0xd0 // the mock gateway rejects it
		}
		return tk
	})
	waitDrained(t, js, 30*time.Second)
	require.Equal(t, 0, w.stop(30*time.Second))
	out := w.log.String()
	for i, want := range []string{`"outcome":"delivered"`, `"outcome":"rejected"`} {
		j := jobs[i]
		line := ""
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, `"msg":"job"`) && strings.Contains(l, `"job_id":"`+j.ID+`"`) {
				line = l
			}
		}
		require.NotEmpty(t, line, "no job line for %s in:\n%s", j.ID, out)
		require.Contains(t, line, `"level":"DEBUG"`)
		require.Contains(t, line, `"token_prefix":"`+j.Token.String()[:8]+`"`)
		require.Contains(t, line, want)
		require.Contains(t, line, `"attempts":1`)
		require.Contains(t, line, `"latency":"`)
	}
}
