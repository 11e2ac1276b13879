package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// result is the JSON report. Times are from the first publish; latency is
// publish → the worker's final ack passing through the server.
type result struct {
	Protocol   string  `json:"protocol"`
	N          int     `json:"n"`
	Workers    int     `json:"workers"`
	Rate       float64 `json:"rate"` // 0: as fast as JetStream takes them
	Payload    int     `json:"payload_bytes"`
	Rejected   float64 `json:"rejected_share"`
	WindowMS   float64 `json:"window_ms"`        // binary assumed-delivered window
	ConfirmMS  float64 `json:"confirm_after_ms"` // binary confirm markers; 0: off
	Conns      int     `json:"conns"`
	MsgID      bool    `json:"msg_id"` // jobs published with a Nats-Msg-Id header
	Mode       string  `json:"mode"`   // in-process, spawn-worker, external
	GoVersion  string  `json:"go_version"`
	LoadBefore string  `json:"load_before"` // /proc/loadavg at the start
	Warmup     int     `json:"warmup"`      // jobs finished before the measured ones, not counted
	// Warnings say why the figures may mislead (e.g. a run too short).
	Warnings []string `json:"warnings,omitempty"`

	JobsPerSec       float64 `json:"jobs_per_sec"`        // finished jobs / (last ack - first publish)
	SteadyJobsPerSec float64 `json:"steady_jobs_per_sec"` // jobs finished between the 10% and 90% marks / that time
	PublishPerSec    float64 `json:"publish_per_sec"`
	ElapsedS         float64 `json:"elapsed_s"`
	P50MS            float64 `json:"p50_ms"`
	P90MS            float64 `json:"p90_ms"`
	P99MS            float64 `json:"p99_ms"`
	MaxMS            float64 `json:"max_ms"`

	PeakRSSMB        float64 `json:"peak_rss_mb"`
	CPUUsPerJob      float64 `json:"cpu_us_per_job"`
	CPUSPer100k      float64 `json:"cpu_s_per_100k"`
	Scope            string  `json:"scope"`                         // what peak_rss_mb and cpu_* measure
	BenchCPUUsPerJob float64 `json:"bench_cpu_us_per_job,omitzero"` // spawn-worker: the bench process's own (nats-server, publisher, observer)
	// ServerCPUUsPerJob is the APNs test server process's (spawn-worker).
	ServerCPUUsPerJob float64 `json:"apns_server_cpu_us_per_job,omitzero"`

	Delivered   int `json:"delivered"`
	Rejections  int `json:"rejected"`
	Terminated  int `json:"terminated"`
	Lost        int `json:"lost"`       // published jobs never finished (acked or termed)
	Duplicates  int `json:"duplicates"` // notifications the APNs server accepted twice; -1: unknown
	StreamLeft  int `json:"stream_left"`
	NakCount    int `json:"naks"`
	DeadLetters int `json:"dead_letters"`
	Reacks      int `json:"reacks"`
	// MissingAtAPNs counts jobs with a good token that the APNs server
	// never accepted although they were finished (binary: assumed
	// delivered); -1: unknown (no APNs server of ours).
	MissingAtAPNs int `json:"missing_at_apns"`
	APNsAccepted  int `json:"apns_accepted"`
	APNsRejected  int `json:"apns_rejected"`
	APNsConns     int `json:"apns_conns"` // connections the APNs server accepted (binary: one more per rejection)
	// Resends counts notifications written to APNs again (Outcome.Attempts
	// beyond 1; binary: those after a rejected one); in-process only, -1
	// otherwise.
	Resends int `json:"resends"`
	// SilentCloses counts connections the bench's APNs server closed
	// silently (-silent-close); WritesPerJob is then what the resend bound
	// is about: 1 + Resends per job (in-process only, -1 otherwise).
	SilentCloses int     `json:"apns_silent_closes"`
	WritesPerJob float64 `json:"writes_per_job"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func usPerJob(cpu time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(cpu) / float64(time.Microsecond) / float64(n)
}

func newResult(c *benchConfig, o outcome, load string) *result {
	r := &result{
		Protocol: c.protocol, N: c.n, Workers: c.workers, Rate: c.rate, Payload: len(makePayload(c.payload)),
		Rejected: c.rejected, WindowMS: ms(c.window), ConfirmMS: ms(c.confirm), Conns: c.conns, MsgID: c.msgID, GoVersion: runtime.Version(), LoadBefore: load,
		Delivered: o.delivered, Rejections: o.rejected, Terminated: o.terminated, Lost: o.lost, Reacks: o.reacks,
		P50MS: ms(percentile(o.latencies, 0.50)), P90MS: ms(percentile(o.latencies, 0.90)),
		P99MS: ms(percentile(o.latencies, 0.99)), MaxMS: ms(percentile(o.latencies, 1)),
	}
	switch {
	case c.baseline:
		r.Mode, r.Protocol, r.Rejected = "baseline (JetStream alone)", "none", 0
	case c.spawnWorker != "" && c.apnsAddr != "":
		r.Mode = "spawn-worker, external APNs"
	case c.spawnWorker != "":
		r.Mode = "spawn-worker"
	case c.natsURL != "":
		r.Mode = "external"
		r.WindowMS, r.ConfirmMS = 0, 0 // the worker's own settings
		if !c.protocolSet {
			r.Protocol = "unknown (the external worker's)"
		}
	case c.apnsAddr != "":
		r.Mode = "in-process, external APNs"
	default:
		r.Mode = "in-process"
	}
	if r.Protocol != "binary" {
		r.WindowMS, r.ConfirmMS = 0, 0
	}
	if d := o.lastAck - o.firstPub; d > 0 {
		r.ElapsedS = d.Seconds()
		r.JobsPerSec = float64(o.finished) / d.Seconds()
	}
	if d := o.p90 - o.p10; d > 0 {
		r.SteadyJobsPerSec = 0.8 * float64(o.finished) / d.Seconds()
	}
	if d := o.lastPub - o.firstPub; d > 0 {
		r.PublishPerSec = float64(c.n) / d.Seconds()
	}
	return r
}

func (r *result) setCPU(cpu time.Duration) {
	r.CPUUsPerJob = usPerJob(cpu, r.N)
	r.CPUSPer100k = cpu.Seconds() * 100_000 / float64(max(r.N, 1))
}

func (r *result) writeTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(k, f string, v ...any) { fmt.Fprintf(tw, "%s\t"+f+"\t\n", append([]any{k}, v...)...) }
	proto := r.Protocol
	if proto == "binary" && r.Mode != "external" {
		markers := "off"
		if r.ConfirmMS > 0 {
			markers = fmt.Sprintf("%gms", r.ConfirmMS)
		}
		proto += fmt.Sprintf(" (window %gms, confirm markers %s)", r.WindowMS, markers)
	}
	msgID := "off"
	if r.MsgID {
		msgID = "on"
	}
	fmt.Fprintf(w, "apns-bench: %s, %d jobs, %d worker(s), %s, Nats-Msg-Id %s, load before %s\n",
		proto, r.N, r.Workers, r.Mode, msgID, r.LoadBefore)
	row("jobs/s (first publish → last ack)", "%.0f", r.JobsPerSec)
	row("jobs/s (steady, 10%→90% of acks)", "%.0f", r.SteadyJobsPerSec)
	row("publish/s", "%.0f", r.PublishPerSec)
	row("elapsed", "%.2f s", r.ElapsedS)
	row("latency p50 / p90", "%.1f / %.1f ms", r.P50MS, r.P90MS)
	row("latency p99 / max", "%.1f / %.1f ms", r.P99MS, r.MaxMS)
	row("peak RSS", "%.1f MB", r.PeakRSSMB)
	row("CPU per job", "%.1f µs", r.CPUUsPerJob)
	row("CPU per 100 000 jobs", "%.2f s", r.CPUSPer100k)
	if r.BenchCPUUsPerJob > 0 {
		row("bench process CPU per job (nats-server, publisher)", "%.1f µs", r.BenchCPUUsPerJob)
	}
	if r.ServerCPUUsPerJob > 0 { // its own process: not with -apns-addr
		row("APNs test server process CPU per job", "%.1f µs", r.ServerCPUUsPerJob)
	}
	row("delivered / rejected / terminated", "%d / %d / %d", r.Delivered, r.Rejections, r.Terminated)
	row("lost / duplicates", "%d / %d", r.Lost, r.Duplicates)
	row("acked but never at APNs", "%d", r.MissingAtAPNs)
	row("APNs server accepted / rejected", "%d / %d", r.APNsAccepted, r.APNsRejected)
	row("APNs server connections / resends", "%d / %d", r.APNsConns, r.Resends)
	if r.SilentCloses > 0 {
		row("APNs server silent closes / writes per job", "%d / %.2f", r.SilentCloses, r.WritesPerJob)
	}
	row("naks / dead letters / left in stream", "%d / %d / %d", r.NakCount, r.DeadLetters, r.StreamLeft)
	_ = tw.Flush()
	fmt.Fprintf(w, "(RSS and CPU: %s)\n", r.Scope)
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "WARNING: %s\n", warn)
	}
}

func (r *result) writeJSON(path string) error { return writeJSONFile(path, r) }

// writeJSONFile writes v to path as indented JSON.
func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// startProgress draws a one-line progress bar on w until stop is called.
// Off a terminal (a log file, CI) it writes no carriage returns: a plain
// line every 10 s instead, and the last one.
func startProgress(w io.Writer, t *tracker, on bool) (stop func()) {
	if !on {
		return func() {}
	}
	tty := isTerminal(w)
	every := 250 * time.Millisecond
	if !tty {
		every = 10 * time.Second
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	draw := func() {
		fin, pub := t.finished.Load(), t.published.Load()
		const width = 30
		k := int(fin * width / int64(max(t.n, 1)))
		el := time.Since(t.start)
		if !tty {
			fmt.Fprintf(w, "progress: %3d%%  finished %d/%d  published %d  %.0f jobs/s  %.1fs\n", fin*100/int64(max(t.n, 1)),
				fin, t.n, pub, float64(fin)/max(el.Seconds(), 1e-9), el.Seconds())
			return
		}
		fmt.Fprintf(w, "\r[%s%s] %3d%%  finished %d/%d  published %d  %.0f jobs/s  %.1fs ",
			strings.Repeat("=", k), strings.Repeat(" ", width-k), fin*100/int64(max(t.n, 1)),
			fin, t.n, pub, float64(fin)/max(el.Seconds(), 1e-9), el.Seconds())
	}
	go func() {
		defer wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-done:
				draw()
				if tty {
					fmt.Fprintln(w)
				}
				return
			case <-tick.C:
				draw()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
