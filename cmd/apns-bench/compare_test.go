package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestMain lets this test binary stand in for apns-bench where the bench
// starts itself as a child (-spawn-worker self, -compare's phases, its
// APNs test server): given a child mode as its first argument, it runs
// the bench's main instead of the tests.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "-run-worker", "-run-baseline", "-run-direct", "-serve":
			os.Exit(realMain(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
		}
	}
	os.Exit(m.Run())
}

// TestCompare runs -compare small and short: three phases (four with
// -no-apns; twice over with -rounds 2), each in its own process, at the
// offered rate, with every job finished, the APNs server's counts matching
// the phases' outcomes, the figures sane, and the ratios each round's and
// their medians.
func TestCompare(t *testing.T) {
	for _, tt := range []struct {
		name   string
		args   []string
		rounds int
		phases []string
	}{
		{"http2", []string{"-protocol", "http2", "-no-apns", "-rounds", "2"}, 2, []string{phaseConsumer, phaseDirect, phaseWorker, phaseNoAPNs}},
		{"binary", []string{"-protocol", "binary", "-window", "1s", "-confirm-after", "100ms", "-pace-step", "500us"}, 1, []string{phaseConsumer, phaseDirect, phaseWorker}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			const rate, jobs = 400, 600 // 1.5 s a phase
			r, stdout := runCompareBench(t, append(tt.args, "-rate", "400", "-duration", "1.5s", "-warmup", "200", "-rejected", "0.01")...)
			require.Equal(t, jobs, r.Jobs)
			require.Equal(t, 200, r.Warmup)
			require.Equal(t, tt.rounds, r.Rounds)
			step := time.Millisecond
			if slices.Contains(tt.args, "-pace-step") {
				step = 500 * time.Microsecond
			}
			require.Equal(t, ms(step), r.PaceStepMS)
			require.Contains(t, stdout, "released every "+step.String())
			require.Len(t, r.Phases, tt.rounds*len(tt.phases))
			for i, p := range r.Phases {
				name := tt.phases[i%len(tt.phases)]
				require.Equal(t, name, p.Name)
				require.Equal(t, 1+i/len(tt.phases), p.Round, "the phases run round after round")
				require.Contains(t, stdout, name)
				require.Equal(t, jobs, p.Jobs, name)
				require.Zero(t, p.Lost, name)
				require.Zero(t, p.Failed, name)
				require.Equal(t, jobs, p.Delivered+p.Rejected, name)
				require.Equal(t, float64(rate), p.OfferedPerSec, name)
				// Job i is published no earlier than i/rate: never faster
				// than offered, and a loaded machine only slows it.
				require.LessOrEqual(t, p.PublishPerSec, rate*1.01, "%s: the pacer offers no more than the rate", name)
				require.GreaterOrEqual(t, p.PublishPerSec, rate*0.7, name)
				require.Positive(t, p.JobsPerSec, name)
				require.Positive(t, p.CPUUsPerJob, name)
				require.InDelta(t, p.UserUsPerJob+p.SysUsPerJob, p.CPUUsPerJob, 1e-9, name)
				require.InDelta(t, 10_000.0/jobs, p.CPUResolutionUs, 1e-9, "one 10 ms tick a job")
				require.Positive(t, p.P50MS, name)
				require.LessOrEqual(t, p.P50MS, p.P99MS, name)
				require.LessOrEqual(t, p.P99MS, p.P999MS, name)
				require.LessOrEqual(t, p.P999MS, p.MaxMS, name)
				require.NotNil(t, p.SyscallsPerJob, name)
				require.Positive(t, *p.SyscallsPerJob, name)
				require.NotNil(t, p.CtxSwitchesPerJob, name)
				require.Positive(t, *p.CtxSwitchesPerJob, name)
				if name == phaseConsumer {
					require.Equal(t, jobs, p.Delivered, "the bare consumer acks every job")
					require.Equal(t, -1, p.APNsAccepted, "and sends nothing")
					require.Zero(t, p.StreamLeft)
					continue
				}
				require.Equal(t, 6, p.Rejected, "%s: 1%% of the phase's tokens", name)
				if name == phaseNoAPNs {
					require.Equal(t, -1, p.APNsAccepted, "the no-apns worker sends nothing to APNs")
					require.Zero(t, p.StreamLeft)
					continue
				}
				require.Equal(t, p.Delivered, p.APNsAccepted, name)
				require.Equal(t, p.Rejected, p.APNsRejected, name)
				require.Zero(t, p.APNsDuplicates, name)
				require.Zero(t, p.APNsMissing, name)
			}
			require.Len(t, r.PerRound, tt.rounds)
			var cpu, p99, noAPNs []float64
			for k, x := range r.PerRound {
				require.Equal(t, k+1, x.Round)
				w, okW := r.phase(x.Round, phaseWorker)
				c, okC := r.phase(x.Round, phaseConsumer)
				require.True(t, okW && okC)
				require.InDelta(t, w.CPUUsPerJob/c.CPUUsPerJob, x.WorkerOverConsumerCPU, 1e-9)
				require.InDelta(t, w.P99MS-c.P99MS, x.WorkerMinusConsumerP99MS, 1e-9)
				cpu, p99 = append(cpu, x.WorkerOverConsumerCPU), append(p99, x.WorkerMinusConsumerP99MS)
				if n, ok := r.phase(x.Round, phaseNoAPNs); ok {
					require.InDelta(t, n.CPUUsPerJob/c.CPUUsPerJob, x.NoAPNsOverConsumerCPU, 1e-9)
					noAPNs = append(noAPNs, x.NoAPNsOverConsumerCPU)
				} else {
					require.Zero(t, x.NoAPNsOverConsumerCPU)
				}
			}
			// The top level holds the medians: with two rounds, the means.
			require.InDelta(t, median(cpu), r.WorkerOverConsumerCPU, 1e-9)
			require.InDelta(t, median(p99), r.WorkerMinusConsumerP99MS, 1e-9)
			require.InDelta(t, median(noAPNs), r.NoAPNsOverConsumerCPU, 1e-9)
			require.Contains(t, stdout, "worker ÷ consumer, CPU per job")
			require.Contains(t, stdout, "10 ms ticks")
			if tt.rounds > 1 {
				require.Contains(t, stdout, "round 2 of 2:")
				require.Contains(t, stdout, "over 2 rounds, median (range):")
			} else {
				require.NotContains(t, stdout, "round 1 of")
			}
			if len(noAPNs) > 0 {
				require.Contains(t, stdout, "no-apns ÷ consumer, CPU per job")
			}
			if tt.name == "binary" {
				require.Greater(t, r.Phases[1].P50MS, 10.0, "binary outcomes wait for a confirm marker (every 100 ms)")
			}
		})
	}
}

// runCompareBench runs -compare with -spawn-worker self (this test binary,
// see TestMain) and returns its JSON report and stdout.
func runCompareBench(t *testing.T, args ...string) (compareResult, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "compare.json")
	var stdout, stderr bytes.Buffer
	code := realMain(append([]string{"-compare", "-spawn-worker", "self", "-progress=false", "-json", out}, args...), nil, &stdout, &stderr)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", &stdout, &stderr)
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	var r compareResult
	require.NoError(t, json.Unmarshal(b, &r))
	return r, stdout.String()
}

// TestWorkerCPUProfileAtRate: -spawn-worker self -worker-cpuprofile FILE
// works with -rate: the worker child writes its CPU profile to FILE.0.
func TestWorkerCPUProfileAtRate(t *testing.T) {
	prof := filepath.Join(t.TempDir(), "worker.pprof")
	r, _, _ := runBench(t, "-spawn-worker", "self", "-worker-cpuprofile", prof, "-rate", "500", "-duration", "1s", "-warmup", "100")
	require.Equal(t, 500, r.N)
	require.Zero(t, r.Lost)
	b, err := os.ReadFile(prof + ".0")
	require.NoError(t, err)
	require.Greater(t, len(b), 2)
	require.Equal(t, []byte{0x1f, 0x8b}, b[:2], "a gzipped pprof profile")
}

func TestCompareFlags(t *testing.T) {
	c, err := parseFlags([]string{"-compare", "-rate", "1000", "-spawn-worker", "self"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 10*time.Second, c.duration, "10 s a phase by default")
	require.Equal(t, 10_000, c.n, "rate × duration")
	require.Equal(t, 2000, c.warmup, "at least 2000 warm-up jobs")

	c, err = parseFlags([]string{"-compare", "-rate", "10000", "-duration", "2s", "-spawn-worker", "self"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 20_000, c.n)
	require.Equal(t, 10_000, c.warmup, "1 s of the rate")

	c, err = parseFlags([]string{"-compare", "-rate", "10000", "-duration", "2s", "-n", "5000", "-warmup", "0", "-spawn-worker", "self"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 5000, c.n, "-n caps the run")
	require.Zero(t, c.warmup)
	require.Equal(t, 1, c.rounds, "one round unless told")

	c, err = parseFlags([]string{"-compare", "-rate", "1000", "-spawn-worker", "self", "-rounds", "5"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 5, c.rounds)
	require.Equal(t, offer{rate: 1000, step: time.Millisecond}, c.offer(), "jobs released every 1 ms unless told")

	c, err = parseFlags([]string{"-compare", "-rate", "10000", "-spawn-worker", "self", "-pace-step", "100us"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, offer{rate: 10_000, step: 100 * time.Microsecond}, c.offer())

	for _, args := range [][]string{
		{"-compare", "-spawn-worker", "self"},                                         // no rate
		{"-compare", "-rate", "1000"},                                                 // no worker
		{"-compare", "-rate", "1000", "-spawn-worker", "self", "-baseline"},           // one mode
		{"-compare", "-rate", "1000", "-spawn-worker", "self", "-nats", "nats://x:1"}, // its own server
		{"-compare", "-rate", "1000", "-spawn-worker", "self", "-workers", "2"},       // one worker
		{"-duration", "5s"}, // needs a rate
		{"-compare", "-rate", "1000", "-spawn-worker", "self", "-duration", "-1s"}, // negative
		{"-no-apns", "-rate", "1000"},                                          // a phase of -compare
		{"-compare", "-rate", "1000", "-spawn-worker", "self", "-rounds", "0"}, // at least one
		{"-rounds", "3", "-rate", "1000"},                                      // rounds of -compare
		{"-pace-step", "1ms"},                                                  // needs a rate
		{"-rate", "1000", "-pace-step", "1us"},                                 // too fine
		{"-rate", "1000", "-pace-step", "2s"},                                  // too coarse
	} {
		_, err := parseFlags(args, io.Discard)
		require.Error(t, err, args)
	}
}

// TestPacer: at either step, a job is never released before it is due
// (i/rate after the start), and the jobs of a run at rate take about
// n/rate, not a burst.
func TestPacer(t *testing.T) {
	const rate, n = 5000.0, 500 // 100 ms
	for _, step := range []time.Duration{0, defaultPaceStep, 100 * time.Microsecond} {
		start := time.Now()
		p := newPacer(offer{rate: rate, step: step}, start)
		for i := range n {
			require.True(t, p.wait(context.Background(), i))
			require.GreaterOrEqual(t, time.Since(start), p.due(i), "step %s: job %d released early", step, i)
		}
		require.GreaterOrEqual(t, time.Since(start), p.due(n-1))
		require.Less(t, time.Since(start), 5*time.Second)
		p.stop()
	}
	p := newPacer(offer{rate: rate}, time.Now())
	defer p.stop()

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.False(t, p.wait(ctx, 1_000_000), "a done ctx ends the wait")
	var none *pacer // rate 0: no pacing
	require.True(t, none.wait(context.Background(), 1_000_000))
	require.Nil(t, newPacer(offer{}, time.Now()))
}

// TestSampleProc: /proc tells this process's CPU, I/O system calls and
// context switches, and they only grow.
func TestSampleProc(t *testing.T) {
	pid := os.Getpid()
	s0 := sampleProc(pid)
	require.GreaterOrEqual(t, s0.Syscalls, int64(0))
	require.Positive(t, s0.CtxSwitches)
	for range 100 {
		_, err := os.ReadFile("/proc/self/stat")
		require.NoError(t, err)
	}
	s1 := sampleProc(pid)
	require.GreaterOrEqual(t, s1.Syscalls-s0.Syscalls, int64(100), "100 files read")
	require.GreaterOrEqual(t, s1.User+s1.Sys, s0.User+s0.Sys)
	require.GreaterOrEqual(t, s1.CtxSwitches, s0.CtxSwitches)

	gone := sampleProc(1 << 30) // no such process
	require.Equal(t, int64(-1), gone.Syscalls)
	require.Equal(t, int64(-1), gone.CtxSwitches)
}

// TestParseStatsLine: the APNs test server process answers "stats" for
// every job and "stats FROM N" for one phase's.
func TestParseStatsLine(t *testing.T) {
	for _, tt := range []struct {
		line        string
		from, count int
		ok          bool
	}{
		{"stats", 0, 100, true},
		{"stats 200 50", 200, 50, true},
		{"stats -1 5", 0, 0, false},
		{"stats x 5", 0, 0, false},
		{"other", 0, 0, false},
	} {
		from, count, ok := parseStatsLine(tt.line, 100)
		require.Equal(t, tt.ok, ok, tt.line)
		if ok {
			require.Equal(t, tt.from, from, tt.line)
			require.Equal(t, tt.count, count, tt.line)
		}
	}
}

// TestCompareTable: the table has a column a phase, "n/a" where /proc did
// not tell, and the ratios only when both the worker and the consumer ran.
func TestCompareTable(t *testing.T) {
	v := 2.5
	r := &compareResult{Protocol: "http2", Rate: 1000, DurationS: 10, Jobs: 10_000, ClockTickMS: 10, Phases: []phaseResult{
		{Name: phaseConsumer, Round: 1, CPUUsPerJob: 20, P99MS: 1, SyscallsPerJob: &v, CtxSwitchesPerJob: &v, APNsAccepted: -1, APNsRejected: -1},
		{Name: phaseDirect, Round: 1, CPUUsPerJob: 25},
		{Name: phaseWorker, Round: 1, CPUUsPerJob: 50, P99MS: 1.5},
	}}
	r.setRatios()
	require.InDelta(t, 2.5, r.WorkerOverConsumerCPU, 1e-9)
	require.InDelta(t, 0.5, r.WorkerMinusConsumerP99MS, 1e-9)
	var b bytes.Buffer
	r.writeTable(&b)
	out := b.String()
	require.Regexp(t, `consumer\s+direct\s+worker`, out)
	require.Regexp(t, `syscalls/job \(syscr\+syscw\)\s+2\.5\s+n/a\s+n/a`, out)
	require.Contains(t, out, "n/a / n/a")
	require.Contains(t, out, "worker ÷ consumer, CPU per job: 2.50 (target ≤ 1.5)")
	require.Contains(t, out, "worker p99 − consumer p99: +0.50 ms")
	require.Contains(t, out, "±1.00 µs/job at 10000 jobs")

	r.Phases = r.Phases[:2] // stopped before the worker
	r.WorkerOverConsumerCPU, r.WorkerMinusConsumerP99MS = 0, 0
	r.setRatios()
	require.Zero(t, r.WorkerOverConsumerCPU)
	b.Reset()
	r.writeTable(&b)
	require.NotContains(t, b.String(), "worker ÷ consumer")
}

// TestCompareTableRounds: with -rounds, a table a round, each with its own
// ratios, then the medians and ranges over the rounds that have both the
// worker and the consumer; a round cut short counts for none.
func TestCompareTableRounds(t *testing.T) {
	r := &compareResult{Protocol: "http2", Rate: 10_000, DurationS: 10, Jobs: 100_000, ClockTickMS: 10, Rounds: 4}
	for round, f := range []struct{ consumer, worker, p99 float64 }{{10, 14, 1.5}, {10, 16, 3}, {10, 15, 2}, {10, 0, 0}} {
		r.Phases = append(r.Phases, phaseResult{Name: phaseConsumer, Round: round + 1, CPUUsPerJob: f.consumer, P99MS: 1})
		if f.worker > 0 {
			r.Phases = append(r.Phases, phaseResult{Name: phaseWorker, Round: round + 1, CPUUsPerJob: f.worker, P99MS: 1 + f.p99})
		}
		if round < 2 { // no-apns in rounds 1 and 2 only
			r.Phases = append(r.Phases, phaseResult{Name: phaseNoAPNs, Round: round + 1, CPUUsPerJob: float64(8 + round)})
		}
	}
	r.setRatios()
	require.Len(t, r.PerRound, 3, "round 4 has no worker")
	require.InDelta(t, 1.5, r.WorkerOverConsumerCPU, 1e-9, "median of 1.4, 1.6, 1.5")
	require.InDelta(t, 2.0, r.WorkerMinusConsumerP99MS, 1e-9)
	require.InDelta(t, 0.85, r.NoAPNsOverConsumerCPU, 1e-9, "median of the rounds with no-apns: 0.8 and 0.9")
	var b bytes.Buffer
	r.writeTable(&b)
	out := b.String()
	for _, s := range []string{"round 1 of 4:", "round 4 of 4:", "worker ÷ consumer, CPU per job: 1.60 (target", "over 3 rounds, median (range):",
		"worker ÷ consumer, CPU per job: 1.50 (1.40–1.60) (target ≤ 1.5)", "worker p99 − consumer p99: +2.00 ms (+1.50 to +3.00) (target ≤ +1 ms)", "no-apns ÷ consumer, CPU per job: 0.85 (0.80–0.90)"} {
		require.Contains(t, out, s)
	}
	require.Equal(t, []float64{1, 2, 3}, func() []float64 { v := []float64{3, 1, 2}; median(v); return v }(), "median sorts its argument")
	require.Equal(t, 2.5, median([]float64{4, 1, 3, 2}))
	require.Zero(t, median(nil))
}

// TestCompareFailedPhaseCountsForNone: a phase that ended in an error (its
// process died, jobs were lost) keeps its figures and the error in the
// report, but its round's ratios are not computed from it and the medians
// leave that round out.
func TestCompareFailedPhaseCountsForNone(t *testing.T) {
	var phases []phaseResult
	require.NoError(t, json.Unmarshal([]byte(`[
		{"name": "consumer", "round": 1, "cpu_us_per_job": 10, "p99_ms": 1},
		{"name": "worker", "round": 1, "cpu_us_per_job": 14, "p99_ms": 2},
		{"name": "consumer", "round": 2, "cpu_us_per_job": 10, "p99_ms": 1},
		{"name": "worker", "round": 2, "cpu_us_per_job": 40, "p99_ms": 900, "lost": 3, "error": "worker pid 7 exited during the run"},
		{"name": "consumer", "round": 3, "cpu_us_per_job": 10, "p99_ms": 1},
		{"name": "worker", "round": 3, "cpu_us_per_job": 16, "p99_ms": 4}
	]`), &phases))
	r := &compareResult{Protocol: "http2", Rate: 10_000, DurationS: 10, Jobs: 100_000, ClockTickMS: 10, Rounds: 3, Phases: phases}
	r.setRatios()
	require.Len(t, r.PerRound, 2, "round 2's worker failed")
	require.Equal(t, 1, r.PerRound[0].Round)
	require.Equal(t, 3, r.PerRound[1].Round)
	require.InDelta(t, 1.5, r.WorkerOverConsumerCPU, 1e-9, "median of 1.4 and 1.6, not of 1.4, 4.0 and 1.6")
	require.InDelta(t, 2.0, r.WorkerMinusConsumerP99MS, 1e-9)

	var b bytes.Buffer
	r.writeTable(&b)
	out := b.String()
	require.Contains(t, out, "over 2 rounds, median (range):")
	require.NotContains(t, out, "CPU per job: 4.00", "round 2's own ratio is not shown as if it were one")
	require.Contains(t, out, "worker pid 7 exited during the run")

	j, err := json.Marshal(r)
	require.NoError(t, err)
	require.Contains(t, string(j), `"error":"worker pid 7 exited during the run"`)
}

// TestCompareTableRoundsNotRun: rounds that never ran (an error ended the
// run before them) get no table.
func TestCompareTableRoundsNotRun(t *testing.T) {
	r := &compareResult{Protocol: "http2", Rate: 1000, DurationS: 10, Jobs: 10_000, ClockTickMS: 10, Rounds: 3, Phases: []phaseResult{
		{Name: phaseConsumer, Round: 1, CPUUsPerJob: 20, P99MS: 1},
		{Name: phaseWorker, Round: 1, CPUUsPerJob: 30, P99MS: 2},
		{Name: phaseConsumer, Round: 2, CPUUsPerJob: 20, P99MS: 1, Error: "publishing: nats: timeout"},
	}}
	r.setRatios()
	var b bytes.Buffer
	r.writeTable(&b)
	out := b.String()
	require.Contains(t, out, "round 1 of 3:")
	require.Contains(t, out, "round 2 of 3:")
	require.NotContains(t, out, "round 3 of 3:")
	require.Contains(t, out, "consumer FAILED (no ratio from it): publishing: nats: timeout")
}
