package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetpush/apns-worker/config"
	"github.com/jetpush/apns-worker/consumer"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// TestTinyRun runs the bench in-process, as .ci's smoke run does but
// smaller, for both protocols: every job finished, none lost or doubled,
// rejections as asked, and the JSON report has its fields.
func TestTinyRun(t *testing.T) {
	for _, tt := range []struct {
		name, proto, confirm string
		msgID                bool
	}{
		{"http2", "http2", "100ms", false},
		{"binary", "binary", "100ms", false}, // the bench's default: confirm markers
		{"binary-window", "binary", "0", false},
		{"binary-msg-id", "binary", "100ms", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, b, stdout := runBench(t, "-n", "2000", "-protocol", tt.proto, "-rejected", "0.01",
				// A rejection answered after the window counts as delivered
				// (binary's assumption): 1 s leaves room on a loaded machine.
				"-window", "1s", "-confirm-after", tt.confirm, "-msg-id="+strconv.FormatBool(tt.msgID))
			require.Contains(t, stdout, "jobs/s")

			var m map[string]any
			require.NoError(t, json.Unmarshal(b, &m))
			for _, k := range []string{"jobs_per_sec", "p50_ms", "p99_ms", "max_ms", "peak_rss_mb",
				"cpu_us_per_job", "delivered", "rejected", "lost", "duplicates"} {
				require.Contains(t, m, k)
			}
			require.Zero(t, r.Lost)
			require.Zero(t, r.Duplicates)
			require.Zero(t, r.Terminated)
			require.Zero(t, r.StreamLeft)
			require.Equal(t, 20, r.Rejections)
			require.Equal(t, 1980, r.Delivered)
			require.Equal(t, 20, r.APNsRejected)
			require.Positive(t, r.JobsPerSec)
			require.Positive(t, r.P50MS)
			require.LessOrEqual(t, r.P50MS, r.P99MS)
			require.LessOrEqual(t, r.P99MS, r.MaxMS)
			require.Positive(t, r.PeakRSSMB)
			require.Positive(t, r.CPUUsPerJob)
			require.Equal(t, tt.msgID, r.MsgID)
			if tt.proto == "binary" {
				require.Contains(t, stdout, "confirm markers")
				require.Equal(t, tt.confirm != "0", r.ConfirmMS > 0)
			}
		})
	}
}

// TestBaselineRun: -baseline measures JetStream alone: every job acked by
// the stand-in consumer, none lost, no APNs counts.
func TestBaselineRun(t *testing.T) {
	r, _, _ := runBench(t, "-baseline", "-n", "2000")
	require.Equal(t, "none", r.Protocol)
	require.Contains(t, r.Mode, "baseline")
	require.Equal(t, 2000, r.Delivered)
	require.Zero(t, r.Lost)
	require.Zero(t, r.Rejections)
	require.Zero(t, r.StreamLeft)
	require.Equal(t, -1, r.APNsAccepted)
	require.Positive(t, r.JobsPerSec)

	var stdout, stderr bytes.Buffer
	code := realMain([]string{"-baseline", "-nats", "nats://127.0.0.1:1"}, nil, &stdout, &stderr)
	require.Equal(t, 2, code)
	require.Contains(t, stderr.String(), "-baseline")
}

func TestRejectedShare(t *testing.T) {
	n := 0
	for i := range 10_000 {
		if isRejected(i, 0.01) {
			n++
			require.Equal(t, badPrefix[:], []byte(tokenFor(i, 0.01)[:2]))
		}
	}
	require.Equal(t, 100, n)
	require.False(t, isRejected(5, 0))
}

func TestAckSeq(t *testing.T) {
	for _, tt := range []struct {
		name, subj, stream string
		seq                uint64
		ok                 bool
	}{
		{"v1", "$JS.ACK.APNS_JOBS.apns-worker.1.42.40.1700000000000000000.7", "APNS_JOBS", 42, true},
		{"v2", "$JS.ACK.hub.ACCHASH.APNS_JOBS.apns-worker.1.42.40.1700000000000000000.7.rnd", "APNS_JOBS", 42, true},
		{"short", "$JS.ACK.APNS_JOBS", "", 0, false},
		{"not a number", "$JS.ACK.APNS_JOBS.apns-worker.1.x.40.17.7", "APNS_JOBS", 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stream, seq, ok := ackSeq(tt.subj)
			require.Equal(t, tt.ok, ok)
			if ok {
				require.Equal(t, tt.stream, stream)
				require.Equal(t, tt.seq, seq)
			}
		})
	}
}

func TestMakePayload(t *testing.T) {
	for _, n := range []int{20, 128, 2048} {
		p := makePayload(n)
		require.Len(t, p, n)
		require.True(t, json.Valid(p))
	}
}

// TestAppendJob: the publisher's hand-written job JSON is what
// json.Marshal(consumer.Job) writes, and the worker decodes it back.
func TestAppendJob(t *testing.T) {
	payload := makePayload(128)
	job := consumer.NewJob(tokenFor(3, 0.01), payload)
	want, err := json.Marshal(job)
	require.NoError(t, err)
	got := appendJob(nil, job.ID, job.Token, payload)
	require.Equal(t, string(want), string(got))
	back, err := consumer.DecodeJob(got)
	require.NoError(t, err)
	require.Equal(t, job.ID, back.ID)
	require.Equal(t, job.Token, back.Token)
	require.JSONEq(t, string(payload), string(back.Payload))
}

// TestJobMsg: -msg-id puts the job id in the Nats-Msg-Id header; the
// body is the job's JSON either way, allocated to its exact size.
func TestJobMsg(t *testing.T) {
	payload := makePayload(128)
	job := consumer.NewJob(tokenFor(7, 0), payload)
	for _, msgID := range []bool{false, true} {
		m := jobMsg("apns.jobs", job, payload, msgID)
		require.Equal(t, "apns.jobs", m.Subject)
		require.Equal(t, string(appendJob(nil, job.ID, job.Token, payload)), string(m.Data))
		require.Equal(t, len(m.Data), cap(m.Data))
		if msgID {
			require.Equal(t, job.ID, m.Header.Get(jetstream.MsgIDHeader))
		} else {
			require.Empty(t, m.Header)
		}
	}
}

func TestAckSeqDoesNotAllocate(t *testing.T) {
	require.Zero(t, testing.AllocsPerRun(100, func() {
		_, _, _ = ackSeq("$JS.ACK.APNS_JOBS.apns-worker.1.42.40.1700000000000000000.7")
	}))
}

// TestServeWritesWorkerEnv: -serve writes an env file a worker starts
// from as it is (config.Load accepts it), with, in binary mode, the
// window and markers of in-process runs; it then answers "stats".
func TestServeWritesWorkerEnv(t *testing.T) {
	for _, proto := range []string{"binary", "http2"} {
		t.Run(proto, func(t *testing.T) {
			dir := t.TempDir()
			c, err := parseFlags([]string{"-serve", proto, "-creds", dir, "-window", "1s", "-confirm-after", "100ms"}, io.Discard)
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			stdinR, stdinW := io.Pipe()
			stdoutR, stdoutW := io.Pipe()
			done := make(chan error, 1)
			go func() { done <- serve(ctx, c, stdinR, stdoutW) }()
			t.Cleanup(func() {
				cancel()
				stdinW.Close()
				stdoutR.Close()
				require.NoError(t, <-done)
			})
			dec := json.NewDecoder(stdoutR)
			var si serverInfo
			require.NoError(t, dec.Decode(&si)) // written after the env file
			require.Equal(t, proto, si.Protocol)

			b, err := os.ReadFile(filepath.Join(dir, "env"))
			require.NoError(t, err)
			env := map[string]string{"APNS_WORKER_NATS_URL": "nats://127.0.0.1:4222"}
			for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				k, v, ok := strings.Cut(line, "=")
				require.True(t, ok, line)
				env[k] = v
			}
			cfg, err := loadConfig(env)
			require.NoError(t, err)
			require.Equal(t, proto, string(cfg.APNs.Mode))
			if proto == "binary" {
				require.Equal(t, time.Second, cfg.APNs.AssumedDelivered)
				require.Equal(t, 100*time.Millisecond, cfg.APNs.ConfirmAfter)
			} else {
				require.NotContains(t, string(b), "CONFIRM_AFTER")
			}

			_, err = io.WriteString(stdinW, "stats\n")
			require.NoError(t, err)
			var st serverStats
			require.NoError(t, dec.Decode(&st))
			require.Zero(t, st.Accepted)
		})
	}
}

// TestResultLabels: settings that do not apply to a run are reported as
// 0, and an external worker's protocol as unknown unless -protocol says.
func TestResultLabels(t *testing.T) {
	for _, tt := range []struct {
		args          []string
		proto         string
		window, confm float64
	}{
		{[]string{"-protocol", "binary"}, "binary", 1000, 100},
		{[]string{"-protocol", "http2"}, "http2", 0, 0},
		{[]string{"-baseline"}, "none", 0, 0},
		{[]string{"-nats", "nats://127.0.0.1:4222"}, "unknown (the external worker's)", 0, 0},
		{[]string{"-nats", "nats://127.0.0.1:4222", "-protocol", "binary"}, "binary", 0, 0},
	} {
		c, err := parseFlags(tt.args, io.Discard)
		require.NoError(t, err)
		r := newResult(c, outcome{}, "")
		require.Equal(t, tt.proto, r.Protocol, tt.args)
		require.Equal(t, tt.window, r.WindowMS, tt.args)
		require.Equal(t, tt.confm, r.ConfirmMS, tt.args)
	}
}

// TestExternalAPNs: with -apns-addr the bench starts no APNs server of its
// own; its workers send to the given one, with the credentials of this
// process's APNS_WORKER_APNS_* variables. The server, started here apart
// from the bench, is what counts the notifications.
func TestExternalAPNs(t *testing.T) {
	for _, proto := range []string{"binary", "http2"} {
		t.Run(proto, func(t *testing.T) {
			const n, share = 2000, 0.01
			clearWorkerEnv(t) // runs before this one left their workers' settings (loadConfig)
			dir := t.TempDir()
			srv, err := startLocalServer(proto, "", dir, n, share, 0)
			require.NoError(t, err)
			t.Cleanup(srv.close)
			si := srv.info()
			t.Setenv("APNS_WORKER_APNS_CA_FILE", filepath.Join(dir, caFile))
			if proto == "http2" {
				t.Setenv("APNS_WORKER_APNS_P8_FILE", filepath.Join(dir, p8File))
				t.Setenv("APNS_WORKER_APNS_KEY_ID", si.KeyID)
				t.Setenv("APNS_WORKER_APNS_TEAM_ID", si.TeamID)
				t.Setenv("APNS_WORKER_APNS_TOPIC", benchTopic)
			} else {
				t.Setenv("APNS_WORKER_APNS_CERT_FILE", filepath.Join(dir, clientCertFile))
				t.Setenv("APNS_WORKER_APNS_KEY_FILE", filepath.Join(dir, clientKeyFile))
			}

			r, _, _ := runBench(t, "-apns-addr", si.Addr, "-protocol", proto, "-n", fmt.Sprint(n),
				"-rejected", fmt.Sprint(share), "-window", "2s") // a rejection answered after the window counts as delivered: leave room on a loaded machine
			require.Equal(t, "in-process, external APNs", r.Mode)
			require.Zero(t, r.Lost)
			require.Equal(t, 20, r.Rejections)
			require.Equal(t, n-20, r.Delivered)
			require.Equal(t, -1, r.APNsAccepted, "the bench cannot see another's server")

			st, err := srv.stats(0, n)
			require.NoError(t, err)
			require.Equal(t, n-20+r.Warmup, st.Accepted, "the measured jobs and the warm-up")
			require.Equal(t, 20, st.Rejected)
			require.Zero(t, st.Duplicates)
			require.Zero(t, st.Missing)
		})
	}
}

func TestExternalAPNsEnv(t *testing.T) {
	c, err := parseFlags([]string{"-apns-addr", "https://127.0.0.1:8443", "-protocol", "http2"}, io.Discard)
	require.NoError(t, err)
	env := externalAPNsEnv(c, "nats://127.0.0.1:4222", []string{
		"APNS_WORKER_APNS_P8_FILE=/keys/AuthKey.p8", "APNS_WORKER_APNS_MODE=binary",
		"APNS_WORKER_APNS_ADDR=elsewhere:2195", "APNS_WORKER_NATS_URL=nats://other:4222", "HOME=/root",
	})
	require.Equal(t, "/keys/AuthKey.p8", env["APNS_WORKER_APNS_P8_FILE"])
	require.Equal(t, "http2", env["APNS_WORKER_APNS_MODE"])
	require.Equal(t, "https://127.0.0.1:8443", env["APNS_WORKER_APNS_ADDR"])
	require.Equal(t, "nats://127.0.0.1:4222", env["APNS_WORKER_NATS_URL"])
	require.NotContains(t, env, "HOME")
	require.NotContains(t, env, "APNS_WORKER_APNS_CONFIRM_AFTER", "markers are binary-only")

	_, err = parseFlags([]string{"-apns-addr", "127.0.0.1:2195", "-baseline"}, io.Discard)
	require.ErrorContains(t, err, "-apns-addr")
}

// clearWorkerEnv unsets every APNS_WORKER_* variable for the rest of the
// test, and restores them after it.
func clearWorkerEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, config.Prefix+"_") {
			t.Setenv(k, "")
			require.NoError(t, os.Unsetenv(k))
		}
	}
}

// runBench runs the bench in-process with args (no progress bar, a 60 s
// limit), requires it to succeed, and returns its JSON report, parsed and
// as written, and its stdout.
func runBench(t *testing.T, args ...string) (result, []byte, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "bench.json")
	var stdout, stderr bytes.Buffer
	code := realMain(append(args, "-progress=false", "-timeout", "60s", "-json", out), nil, &stdout, &stderr)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", &stdout, &stderr)
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	var r result
	require.NoError(t, json.Unmarshal(b, &r))
	return r, b, stdout.String()
}

// TestSilentCloseFlag: -silent-close makes the bench's server close
// connections silently; the report shows it and the writes per job, which
// the engines keep under 2 (the binary engine's connection budget).
func TestSilentCloseFlag(t *testing.T) {
	for _, proto := range []string{"binary", "http2"} {
		t.Run(proto, func(t *testing.T) {
			r, _, stdout := runBench(t, "-n", "4000", "-warmup", "0", "-protocol", proto, "-rejected", "0",
				"-window", "1s", "-confirm-after", "0", "-silent-close", "1000")
			require.Contains(t, stdout, "silent closes / writes per job")
			require.Positive(t, r.SilentCloses)
			require.Zero(t, r.Lost)
			require.Equal(t, 4000, r.Delivered)
			require.Greater(t, r.WritesPerJob, 1.0, "a silent close resends what was in flight")
			require.LessOrEqual(t, r.WritesPerJob, 2.0)
		})
	}
}
