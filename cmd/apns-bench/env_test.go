package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// TestEnvHonoured: the worker's variables act on the bench as on the
// worker: the four behind flags set their defaults (a flag wins), the rest
// go to the workers as they are, and none is silently ignored: the bench's
// own and unknown ones are errors naming what to do.
func TestEnvHonoured(t *testing.T) {
	env := []string{
		"APNS_WORKER_APNS_CONNS=8", "APNS_WORKER_MAX_IN_FLIGHT=5000",
		"APNS_WORKER_APNS_ASSUMED_DELIVERED=2s", "APNS_WORKER_APNS_CONFIRM_AFTER=20ms",
		"APNS_WORKER_JOBS_ACK_WAIT=7s", "APNS_WORKER_APNS_REQUEST_TIMEOUT=3s", "HOME=/root",
	}
	c, err := parseFlagsEnv([]string{"-protocol", "binary"}, env, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 8, c.conns)
	require.Equal(t, 5000, c.maxInFlight)
	require.Equal(t, 2*time.Second, c.window)
	require.Equal(t, 20*time.Millisecond, c.confirm)
	require.Equal(t, map[string]string{"APNS_WORKER_JOBS_ACK_WAIT": "7s", "APNS_WORKER_APNS_REQUEST_TIMEOUT": "3s"}, c.env)

	we := workerEnv(c, "nats://127.0.0.1:4222", serverInfo{Protocol: "binary", Addr: "127.0.0.1:2195", Dir: "/creds"})
	require.Equal(t, "7s", we["APNS_WORKER_JOBS_ACK_WAIT"])
	require.Equal(t, "8", we["APNS_WORKER_APNS_CONNS"])
	require.Equal(t, "5000", we["APNS_WORKER_MAX_IN_FLIGHT"])
	require.Equal(t, "20ms", we["APNS_WORKER_APNS_CONFIRM_AFTER"])
	require.Equal(t, "nats://127.0.0.1:4222", we["APNS_WORKER_NATS_URL"])

	c, err = parseFlagsEnv([]string{"-conns", "2"}, env, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 2, c.conns, "the flag wins")

	for _, tt := range []struct{ env, msg string }{
		{"APNS_WORKER_APNS_CONNS=many", "APNS_WORKER_APNS_CONNS=many (the default of -conns)"},
		{"APNS_WORKER_NATS_URL=nats://x:4222", "APNS_WORKER_NATS_URL is set: use -nats"},
		{"APNS_WORKER_APNS_MODE=binary", "APNS_WORKER_APNS_MODE is set: use -protocol"},
		{"APNS_WORKER_APNS_P8_FILE=/k.p8", "the APNs variables are for -apns-addr"},
		{"APNS_WORKER_APNS_CON=3", "APNS_WORKER_APNS_CON: unknown variable (did you mean APNS_WORKER_APNS_CONNS?)"},
	} {
		_, err := parseFlagsEnv(nil, []string{tt.env}, io.Discard)
		require.ErrorContains(t, err, tt.msg, tt.env)
	}
	c, err = parseFlagsEnv([]string{"-apns-addr", "https://127.0.0.1:8443"}, []string{"APNS_WORKER_APNS_P8_FILE=/k.p8"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "/k.p8", c.env["APNS_WORKER_APNS_P8_FILE"])
}

// TestRejectedTokensFile: -rejected-tokens gives the rejected share tokens
// that another server rejects; it goes with -apns-addr or -nats only.
func TestRejectedTokensFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "tokens")
	require.NoError(t, os.WriteFile(good, []byte("# uninstalled\n"+strings.Repeat("ab", 32)+"\n\n"+strings.Repeat("CD", 32)+"\n"), 0o600))
	bad := filepath.Join(dir, "bad")
	require.NoError(t, os.WriteFile(bad, []byte("not-hex\n"), 0o600))

	c, err := parseFlagsEnv([]string{"-apns-addr", "127.0.0.1:2195", "-protocol", "binary", "-rejected-tokens", good}, nil, io.Discard)
	require.NoError(t, err)
	require.Equal(t, []string{strings.Repeat("ab", 32), strings.Repeat("cd", 32)}, c.rejectedTokens)
	_, err = parseFlagsEnv([]string{"-nats", "nats://127.0.0.1:4222", "-rejected-tokens", bad}, nil, io.Discard)
	require.ErrorContains(t, err, bad+":1")
	_, err = parseFlagsEnv([]string{"-rejected-tokens", good}, nil, io.Discard)
	require.ErrorContains(t, err, "use it with -apns-addr")

	var idx []int
	for i := range 300 {
		if isRejected(i, 0.01) {
			idx = append(idx, rejectedIndex(i, 0.01))
		}
	}
	require.Equal(t, []int{0, 1, 2}, idx)
}

// TestProgressOffTerminal: off a terminal the progress is plain lines, no
// carriage return.
func TestProgressOffTerminal(t *testing.T) {
	var b bytes.Buffer
	tr := newTracker(10, "S", 0)
	tr.start = time.Now()
	stop := startProgress(&b, tr, true)
	stop()
	require.NotContains(t, b.String(), "\r")
	require.Contains(t, b.String(), "progress:   0%  finished 0/10")
	require.False(t, isTerminal(&b))
}

// TestShortRunWarned: a run shorter than minSteadyRun says its rates
// mislead; the warm-up jobs are finished first and not counted.
func TestShortRunWarned(t *testing.T) {
	clearWorkerEnv(t)
	r, _, stdout := runBench(t, "-n", "300", "-protocol", "http2", "-warmup", "500")
	require.Equal(t, 500, r.Warmup)
	require.Equal(t, 300, r.Delivered+r.Rejections)
	require.Equal(t, 300-r.Rejections, r.APNsAccepted, "warm-up jobs are not counted")
	require.Len(t, r.Warnings, 1)
	require.Contains(t, r.Warnings[0], "under 3s")
	require.Contains(t, stdout, "WARNING: the measured run took")
}

// TestRejectedTokensRun: against a server that rejects only tokens it was
// told of (Unregistered for three "uninstalled" ones) and would accept the
// bench's bad0… tokens, -rejected-tokens gives the rejected share those
// three: every rejected job reaches the server with one of them and is
// rejected, none of them is sent with a bad0… token, and the rest are
// delivered.
func TestRejectedTokensRun(t *testing.T) {
	const n = 1000 // 1%: 10 rejected jobs over 3 tokens
	clearWorkerEnv(t)
	h2, err := apnstest.ListenHTTP2(apnstest.HTTP2Listen("127.0.0.1:0"))
	require.NoError(t, err)
	go func() { _ = h2.Serve() }()
	t.Cleanup(h2.Close)
	dir := t.TempDir()
	var list strings.Builder
	list.WriteString("# apps since uninstalled\n")
	for i := range 3 {
		tok := make(apns.Token, 32)
		tok[0], tok[31] = 0xff, byte(i)
		h2.Reason(tok, 410, "Unregistered")
		list.WriteString(tok.String() + "\n")
	}
	tokens := filepath.Join(dir, "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte(list.String()), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, caFile), h2.PKI.CAPEM, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, p8File), h2.P8(), 0o600))
	t.Setenv("APNS_WORKER_APNS_CA_FILE", filepath.Join(dir, caFile))
	t.Setenv("APNS_WORKER_APNS_P8_FILE", filepath.Join(dir, p8File))
	t.Setenv("APNS_WORKER_APNS_KEY_ID", h2.KeyID)
	t.Setenv("APNS_WORKER_APNS_TEAM_ID", h2.TeamID)
	t.Setenv("APNS_WORKER_APNS_TOPIC", benchTopic)

	r, _, _ := runBench(t, "-apns-addr", h2.URL, "-protocol", "http2", "-n", fmt.Sprint(n), "-warmup", "0",
		"-rejected", "0.01", "-rejected-tokens", tokens)
	require.Zero(t, r.Lost)
	require.Equal(t, 10, r.Rejections)
	require.Equal(t, n-10, r.Delivered)
	require.Equal(t, 10, h2.Statuses()[410], "the server rejected the listed tokens")
	require.Equal(t, n-10, h2.Accepted())
	for i := range n {
		if isRejected(i, 0.01) {
			require.Zero(t, h2.AcceptedFor(tokenFor(i, 0.01)), "job %d was sent with its bad0… token", i)
		}
	}
}
