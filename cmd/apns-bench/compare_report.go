package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// The phases of -compare, in the order they run.
const (
	phaseConsumer = "consumer" // a bare JetStream consumer that acks each job at once
	phaseDirect   = "direct"   // the APNs engine fed by a pacer, without NATS
	phaseWorker   = "worker"   // the worker
	phaseNoAPNs   = "no-apns"  // the worker with an engine that answers at once (-no-apns)
)

// phaseResult is one phase of -compare, measured over its measured window
// only: from the first measured publish (direct: Send) to the last ack
// (direct: outcome). CPU, system calls and context switches are the
// phase's own process's.
type phaseResult struct {
	Name  string `json:"name"`
	Round int    `json:"round"` // from 1 (-rounds)
	// Latency says what the latency figures time.
	Latency       string  `json:"latency"`
	Jobs          int     `json:"jobs"` // measured jobs
	OfferedPerSec float64 `json:"offered_per_sec"`
	// PublishPerSec is the rate the jobs were offered at: measured
	// publishes (direct: Sends) over first to last.
	PublishPerSec float64 `json:"publish_per_sec"`
	JobsPerSec    float64 `json:"jobs_per_sec"` // finished / (last ack − first publish)
	ElapsedS      float64 `json:"elapsed_s"`

	CPUUsPerJob  float64 `json:"cpu_us_per_job"` // user+sys
	UserUsPerJob float64 `json:"user_us_per_job"`
	SysUsPerJob  float64 `json:"sys_us_per_job"`
	// CPUResolutionUs is one clock tick of /proc/<pid>/stat per job: the
	// CPU figures' resolution.
	CPUResolutionUs float64 `json:"cpu_resolution_us"`
	// SyscallsPerJob is /proc/<pid>/io syscr+syscw per job,
	// CtxSwitchesPerJob the threads' voluntary+nonvoluntary context
	// switches per job; null where /proc did not tell.
	SyscallsPerJob    *float64 `json:"syscalls_per_job"`
	CtxSwitchesPerJob *float64 `json:"ctx_switches_per_job"`

	P50MS  float64 `json:"p50_ms"`
	P99MS  float64 `json:"p99_ms"`
	P999MS float64 `json:"p999_ms"`
	MaxMS  float64 `json:"max_ms"`

	Delivered int `json:"delivered"`
	Rejected  int `json:"rejected"`
	Failed    int `json:"failed"` // terminated (worker) or failed outcomes (direct)
	Lost      int `json:"lost"`   // measured jobs never finished
	// The APNs test server's counts of this phase's jobs; -1: none (the
	// bare consumer sends nothing).
	APNsAccepted   int `json:"apns_accepted"`
	APNsRejected   int `json:"apns_rejected"`
	APNsDuplicates int `json:"apns_duplicates"`
	APNsMissing    int `json:"apns_missing"` // finished as delivered, never at APNs
	StreamLeft     int `json:"stream_left"`  // -1: no stream (direct)
	// Error is why the phase failed, if it did: its figures are kept but
	// no ratio is computed from them.
	Error string `json:"error,omitempty"`
}

// newPhaseResult computes a phase's figures from what was seen of its n
// jobs and its process's samples at the window's ends.
func newPhaseResult(name, latency string, rate float64, n int, o outcome, s0, s1 procSample) phaseResult {
	p := phaseResult{
		Name: name, Latency: latency, Jobs: n, OfferedPerSec: rate,
		UserUsPerJob: usPerJob(s1.User-s0.User, n), SysUsPerJob: usPerJob(s1.Sys-s0.Sys, n),
		CPUResolutionUs: usPerJob(clockTick, n),
		P50MS:           ms(percentile(o.latencies, 0.50)), P99MS: ms(percentile(o.latencies, 0.99)),
		P999MS: ms(percentile(o.latencies, 0.999)), MaxMS: ms(percentile(o.latencies, 1)),
		Delivered: o.delivered, Rejected: o.rejected, Failed: o.terminated, Lost: o.lost,
		APNsAccepted: -1, APNsRejected: -1, APNsDuplicates: -1, APNsMissing: -1, StreamLeft: -1,
	}
	p.CPUUsPerJob = p.UserUsPerJob + p.SysUsPerJob
	perJob := func(a, b int64) *float64 {
		if a < 0 || b < 0 || n == 0 {
			return nil
		}
		v := float64(b-a) / float64(n)
		return &v
	}
	p.SyscallsPerJob = perJob(s0.Syscalls, s1.Syscalls)
	p.CtxSwitchesPerJob = perJob(s0.CtxSwitches, s1.CtxSwitches)
	if d := o.lastAck - o.firstPub; d > 0 {
		p.ElapsedS = d.Seconds()
		p.JobsPerSec = float64(o.finished) / d.Seconds()
	}
	if d := o.lastPub - o.firstPub; d > 0 && n > 1 {
		p.PublishPerSec = float64(n-1) / d.Seconds() // n publishes span n-1 intervals
	}
	return p
}

// setAPNs fills the APNs test server's counts of the phase's measured
// jobs, from its stats of them before and after the phase, which had warmup
// warm-up jobs (accepted, none rejected) too.
func (p *phaseResult) setAPNs(before, after serverStats, warmup int) {
	p.APNsAccepted = after.Accepted - before.Accepted - warmup
	p.APNsRejected = after.Rejected - before.Rejected
	p.APNsDuplicates = after.Duplicates - before.Duplicates
	p.APNsMissing = after.Missing
}

// compareResult is the report of -compare.
type compareResult struct {
	Protocol    string  `json:"protocol"`
	Rate        float64 `json:"rate"`
	PaceStepMS  float64 `json:"pace_step_ms"` // the publisher releases the jobs due every this long
	DurationS   float64 `json:"duration_s"`
	Jobs        int     `json:"jobs"`   // measured jobs a phase
	Warmup      int     `json:"warmup"` // jobs a phase finished before the measured ones, at the same rate
	Payload     int     `json:"payload_bytes"`
	Rejected    float64 `json:"rejected_share"`
	Conns       int     `json:"conns"`
	Worker      string  `json:"worker"` // -spawn-worker
	GoVersion   string  `json:"go_version"`
	LoadBefore  string  `json:"load_before"`
	ClockTickMS float64 `json:"clock_tick_ms"`
	Rounds      int     `json:"rounds"` // -rounds

	// Phases are every round's, in the order they ran.
	Phases []phaseResult `json:"phases"`
	// The ratios, each round's own and, at the top level, their medians
	// over the rounds where both phases ran.
	roundRatios
	PerRound []roundRatios `json:"per_round"`
	Warnings []string      `json:"warnings,omitempty"`
}

// roundRatios are the worker-to-consumer figures of one round, or their
// medians.
type roundRatios struct {
	Round int `json:"round,omitempty"` // 0 in the medians
	// WorkerOverConsumerCPU is the worker's CPU per job ÷ the bare
	// consumer's; WorkerMinusConsumerP99MS the worker's p99 − the
	// consumer's. 0 when a phase is missing.
	WorkerOverConsumerCPU    float64 `json:"worker_over_consumer_cpu"`
	WorkerMinusConsumerP99MS float64 `json:"worker_minus_consumer_p99_ms"`
	// NoAPNsOverConsumerCPU is the no-apns phase's CPU per job ÷ the bare
	// consumer's: the worker's own share, without the APNs round trip; 0
	// without -no-apns.
	NoAPNsOverConsumerCPU float64 `json:"no_apns_over_consumer_cpu,omitempty"`
}

// phase returns the phase named name of round (from 1), if it ran and did
// not fail.
func (r *compareResult) phase(round int, name string) (phaseResult, bool) {
	for _, p := range r.Phases {
		if p.Round == round && p.Name == name {
			return p, p.Error == ""
		}
	}
	return phaseResult{}, false
}

// lost is the jobs lost over every phase.
func (r *compareResult) lost() int {
	n := 0
	for _, p := range r.Phases {
		n += p.Lost
	}
	return n
}

// ratios computes round's worker-to-consumer figures; ok is false unless
// both the worker and the consumer ran in it without failing.
func (r *compareResult) ratios(round int) (x roundRatios, ok bool) {
	w, okW := r.phase(round, phaseWorker)
	c, okC := r.phase(round, phaseConsumer)
	if !okW || !okC {
		return x, false
	}
	x.Round = round
	if c.CPUUsPerJob > 0 {
		x.WorkerOverConsumerCPU = w.CPUUsPerJob / c.CPUUsPerJob
	}
	x.WorkerMinusConsumerP99MS = w.P99MS - c.P99MS
	if n, ok := r.phase(round, phaseNoAPNs); ok && c.CPUUsPerJob > 0 {
		x.NoAPNsOverConsumerCPU = n.CPUUsPerJob / c.CPUUsPerJob
	}
	return x, true
}

// setRatios computes each round's ratios and, at the top level, their
// medians.
func (r *compareResult) setRatios() {
	r.PerRound = r.PerRound[:0]
	for round := 1; round <= max(r.Rounds, 1); round++ {
		if x, ok := r.ratios(round); ok {
			r.PerRound = append(r.PerRound, x)
		}
	}
	r.roundRatios = roundRatios{
		WorkerOverConsumerCPU:    median(r.cpuRatios(func(x roundRatios) float64 { return x.WorkerOverConsumerCPU })),
		WorkerMinusConsumerP99MS: median(r.values(func(x roundRatios) float64 { return x.WorkerMinusConsumerP99MS })),
		NoAPNsOverConsumerCPU:    median(r.cpuRatios(func(x roundRatios) float64 { return x.NoAPNsOverConsumerCPU })),
	}
}

// cpuRatios is f, a CPU ratio, of each round's ratios where it was
// measured: it is 0 where its phase did not run (no-apns) or the consumer
// showed no CPU, and such rounds count for none.
func (r *compareResult) cpuRatios(f func(roundRatios) float64) []float64 {
	return slices.DeleteFunc(r.values(f), func(v float64) bool { return v == 0 })
}

// values is f of each round's ratios.
func (r *compareResult) values(f func(roundRatios) float64) []float64 {
	v := make([]float64, 0, len(r.PerRound))
	for _, x := range r.PerRound {
		v = append(v, f(x))
	}
	return v
}

// median is v's median (the mean of the two middle values for an even
// count), 0 for none; it sorts v.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	m := len(v) / 2
	if len(v)%2 == 0 {
		return (v[m-1] + v[m]) / 2
	}
	return v[m]
}

// Targets of issue #13, printed beside the ratios.
const (
	targetCPURatio = 1.5
	targetP99MS    = 1.0
)

func (r *compareResult) writeTable(w io.Writer) {
	fmt.Fprintf(w, "apns-bench -compare: %s, %.0f jobs/s offered for %s a phase (released every %s; %d jobs, after %d warm-up jobs at the same rate), payload %d B, %g%% rejected, worker %s, load before %s\n",
		r.Protocol, r.Rate, time.Duration(r.DurationS*float64(time.Second)), time.Duration(r.PaceStepMS*float64(time.Millisecond)), r.Jobs, r.Warmup, r.Payload, r.Rejected*100, r.Worker, r.LoadBefore)
	rounds := max(r.Rounds, 1)
	for round := 1; round <= rounds; round++ {
		if !slices.ContainsFunc(r.Phases, func(p phaseResult) bool { return p.Round == round }) {
			break // an error ended the run before this round
		}
		if rounds > 1 {
			fmt.Fprintf(w, "round %d of %d:\n", round, rounds)
		}
		r.writeRound(w, round)
	}
	if rounds > 1 && len(r.PerRound) > 0 {
		span := func(format string, v []float64) string {
			if len(v) == 0 {
				return "none"
			}
			return fmt.Sprintf(format, slices.Min(v), slices.Max(v))
		}
		of := "rounds"
		if len(r.PerRound) == 1 {
			of = "round"
		}
		fmt.Fprintf(w, "over %d %s, median (range):\n", len(r.PerRound), of)
		fmt.Fprintf(w, "worker ÷ consumer, CPU per job: %.2f (%s) (target ≤ %.1f)\n",
			r.WorkerOverConsumerCPU, span("%.2f–%.2f", r.cpuRatios(func(x roundRatios) float64 { return x.WorkerOverConsumerCPU })), targetCPURatio)
		fmt.Fprintf(w, "worker p99 − consumer p99: %+.2f ms (%s) (target ≤ +%.0f ms)\n",
			r.WorkerMinusConsumerP99MS, span("%+.2f to %+.2f", r.values(func(x roundRatios) float64 { return x.WorkerMinusConsumerP99MS })), targetP99MS)
		if r.NoAPNsOverConsumerCPU > 0 {
			fmt.Fprintf(w, "no-apns ÷ consumer, CPU per job: %.2f (%s)\n",
				r.NoAPNsOverConsumerCPU, span("%.2f–%.2f", r.cpuRatios(func(x roundRatios) float64 { return x.NoAPNsOverConsumerCPU })))
		}
	}
	fmt.Fprintf(w, "(each phase in its own process, measured from its first measured publish to its last ack; CPU is that process's, from /proc/<pid>/stat in %g ms ticks: ±%.2f µs/job at %d jobs; syscalls are /proc/<pid>/io syscr+syscw, context switches summed over its threads; latency: consumer and worker publish → ack passing the server, direct Send → outcome)\n",
		r.ClockTickMS, usPerJob(clockTick, r.Jobs), r.Jobs)
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "WARNING: %s\n", warn)
	}
}

// writeRound writes round's table, a column a phase, and its ratios.
func (r *compareResult) writeRound(w io.Writer, round int) {
	var phases []phaseResult
	for _, p := range r.Phases {
		if p.Round == round {
			phases = append(phases, p)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := []string{""}
	for _, p := range phases {
		head = append(head, p.Name)
	}
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	row := func(label string, cell func(p phaseResult) string) {
		cells := []string{label}
		for _, p := range phases {
			cells = append(cells, cell(p))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	f := func(format string, v float64) string { return fmt.Sprintf(format, v) }
	opt := func(v *float64) string {
		if v == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.1f", *v)
	}
	counts := func(vs ...int) string {
		s := make([]string, len(vs))
		for i, v := range vs {
			s[i] = fmt.Sprint(v)
			if v < 0 {
				s[i] = "n/a"
			}
		}
		return strings.Join(s, " / ")
	}
	row("offered jobs/s", func(p phaseResult) string { return f("%.0f", p.OfferedPerSec) })
	row("publish/s (achieved offer)", func(p phaseResult) string { return f("%.0f", p.PublishPerSec) })
	row("jobs/s (first publish → last ack)", func(p phaseResult) string { return f("%.0f", p.JobsPerSec) })
	row("CPU µs/job (user+sys)", func(p phaseResult) string { return f("%.1f", p.CPUUsPerJob) })
	row("  user / sys µs/job", func(p phaseResult) string { return fmt.Sprintf("%.1f / %.1f", p.UserUsPerJob, p.SysUsPerJob) })
	row("latency p50 ms", func(p phaseResult) string { return f("%.2f", p.P50MS) })
	row("latency p99 ms", func(p phaseResult) string { return f("%.2f", p.P99MS) })
	row("latency p999 ms", func(p phaseResult) string { return f("%.2f", p.P999MS) })
	row("latency max ms", func(p phaseResult) string { return f("%.2f", p.MaxMS) })
	row("syscalls/job (syscr+syscw)", func(p phaseResult) string { return opt(p.SyscallsPerJob) })
	row("context switches/job", func(p phaseResult) string { return opt(p.CtxSwitchesPerJob) })
	row("delivered / rejected / failed", func(p phaseResult) string { return counts(p.Delivered, p.Rejected, p.Failed) })
	row("lost", func(p phaseResult) string { return fmt.Sprint(p.Lost) })
	row("APNs accepted / rejected", func(p phaseResult) string { return counts(p.APNsAccepted, p.APNsRejected) })
	row("APNs duplicates / missing", func(p phaseResult) string { return counts(p.APNsDuplicates, p.APNsMissing) })
	_ = tw.Flush()
	for _, p := range phases {
		if p.Error != "" {
			fmt.Fprintf(w, "%s FAILED (no ratio from it): %s\n", p.Name, p.Error)
		}
	}
	if x, ok := r.ratios(round); ok {
		fmt.Fprintf(w, "worker ÷ consumer, CPU per job: %.2f (target ≤ %.1f)\n", x.WorkerOverConsumerCPU, targetCPURatio)
		fmt.Fprintf(w, "worker p99 − consumer p99: %+.2f ms (target ≤ +%.0f ms)\n", x.WorkerMinusConsumerP99MS, targetP99MS)
		if x.NoAPNsOverConsumerCPU > 0 {
			fmt.Fprintf(w, "no-apns ÷ consumer, CPU per job: %.2f (the worker without the APNs round trip)\n", x.NoAPNsOverConsumerCPU)
		}
	}
}

func (r *compareResult) writeJSON(path string) error { return writeJSONFile(path, r) }
