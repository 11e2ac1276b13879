package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/cmd/internal/worker"
	"github.com/jetpush/apns-worker/config"
	"github.com/jetpush/apns-worker/consumer"
)

// The direct phase of -compare: the worker's APNs engine, configured from
// the same APNS_WORKER_* environment, sends the same notifications to the
// same APNs test server without NATS, fed by a pacer at the same rate, in
// a process of its own (`apns-bench -run-direct`). Its latency is Send →
// outcome.

// directBatch is one paced batch of sends (the warm-up, or the measured
// jobs) and their outcomes.
type directBatch struct {
	start  time.Time
	sentAt []int64 // ns since start, by job; the sending goroutine
	doneAt []int64 // ns since start, by job; the outcome callback
	kind   []uint8 // kindAck, kindRejected or kindFailed
	left   atomic.Int64
	done   chan struct{} // closed at the last outcome
	atLast func()        // runs in the callback of the last outcome
}

// Outcome kinds of the direct phase (kindAck: delivered).
const (
	kindRejected = kindTerm + 1 + iota
	kindFailed
)

// directRef is the ref of a direct Send: its batch and index.
type directRef struct {
	b *directBatch
	i int
}

func newDirectBatch(n int) *directBatch {
	b := &directBatch{sentAt: make([]int64, n), doneAt: make([]int64, n), kind: make([]uint8, n), done: make(chan struct{})}
	b.left.Store(int64(n))
	if n == 0 {
		close(b.done)
	}
	return b
}

// onDirectOutcome is the direct engine's OutcomeFunc.
func onDirectOutcome(o apns.Outcome) {
	r, ok := o.Ref.(directRef)
	if !ok {
		return
	}
	b := r.b
	b.doneAt[r.i] = int64(time.Since(b.start))
	_, rejected := o.Rejection()
	switch {
	case o.Err == nil:
		b.kind[r.i] = kindAck
	case rejected:
		b.kind[r.i] = kindRejected
	default:
		b.kind[r.i] = kindFailed
	}
	if b.left.Add(-1) == 0 {
		if b.atLast != nil {
			b.atLast()
		}
		close(b.done)
	}
}

// send offers the batch's jobs to eng at rate (tokens from token), then
// waits for every outcome until ctx is done.
func (b *directBatch) send(ctx context.Context, eng apns.Engine, o offer, token func(i int) apns.Token, payload []byte) error {
	pace := newPacer(o, b.start)
	defer pace.stop()
	for i := range b.sentAt {
		if !pace.wait(ctx, i) {
			return fmt.Errorf("%d of %d sent: %w", i, len(b.sentAt), ctx.Err())
		}
		job := consumer.NewJob(token(i), payload) // what a producer publishes, as the worker turns it into a notification
		n, err := job.Notification()
		if err != nil {
			return err
		}
		b.sentAt[i] = int64(time.Since(b.start))
		if err := eng.Send(ctx, n, directRef{b, i}); err != nil {
			return fmt.Errorf("send %d: %w", i, err)
		}
	}
	select {
	case <-b.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%d outcomes not in: %w", b.left.Load(), ctx.Err())
	}
}

// outcome is what the batch saw, in the tracker's terms (delivered,
// rejected, terminated as failed; latency Send → outcome).
func (b *directBatch) outcome() outcome {
	var o outcome
	n := len(b.sentAt)
	if n > 0 {
		o.firstPub, o.lastPub = time.Duration(b.sentAt[0]), time.Duration(b.sentAt[n-1])
	}
	for i := range n {
		switch b.kind[i] {
		case kindNone:
			o.lost++
			continue
		case kindAck:
			o.delivered++
		case kindRejected:
			o.rejected++
		default:
			o.terminated++
		}
		o.finished++
		o.latencies = append(o.latencies, time.Duration(b.doneAt[i]-b.sentAt[i]))
		o.lastAck = max(o.lastAck, time.Duration(b.doneAt[i]))
	}
	slices.Sort(o.latencies)
	return o
}

// runDirect is `apns-bench -run-direct`: the warm-up, then the measured
// jobs, each paced at -rate, through an engine configured from
// APNS_WORKER_*; it writes the phase's result to -json FILE.
func runDirect(ctx context.Context, c *benchConfig, stderr io.Writer) error {
	if c.jsonFile == "" || c.rate <= 0 {
		return errors.New("-run-direct needs -json FILE and -rate")
	}
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.Log.Level}))
	eng, closeMock, err := worker.NewEngine(cfg, onDirectOutcome, log)
	if err != nil {
		return err
	}
	defer closeMock()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	payload := makePayload(c.payload)
	warm := newDirectBatch(c.warmup)
	warm.start = time.Now()
	err = warm.send(ctx, eng, c.offer(), func(i int) apns.Token { return warmToken(c.tokenBase + i) }, payload)
	var (
		b      *directBatch
		s0     procSample
		s1     atomic.Pointer[procSample]
		pid    = os.Getpid()
		sample = func() { s := sampleProc(pid); s1.Store(&s) }
	)
	if err == nil {
		b = newDirectBatch(c.n)
		b.atLast = sample // at the last outcome
		s0 = sampleProc(pid)
		b.start = time.Now()
		err = b.send(ctx, eng, c.offer(), func(i int) apns.Token { return tokenFor(c.tokenBase+i, c.rejected) }, payload)
	}
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer ccancel()
	err = errors.Join(err, eng.Close(cctx)) // every outcome reported
	if b == nil {
		return err
	}
	if s1.Load() == nil { // some job got no outcome: the window ends now
		sample()
	}
	res := newPhaseResult(phaseDirect, "Send → outcome", c.rate, c.n, b.outcome(), s0, *s1.Load())
	out, jerr := json.Marshal(res)
	if jerr == nil {
		jerr = os.WriteFile(c.jsonFile, out, 0o644)
	}
	return errors.Join(err, jerr)
}

// directPhase runs the direct phase in a child process: -warmup jobs, then
// -n, paced at -rate, with tokens from tokenBase.
func directPhase(ctx context.Context, c *benchConfig, env map[string]string, dir string, tokenBase int, stderr io.Writer) (phaseResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return phaseResult{}, err
	}
	out := filepath.Join(dir, "direct.json")
	cmd := exec.Command(exe, "-run-direct", "-json", out, "-rate", fmt.Sprint(c.rate), "-pace-step", c.paceStep.String(), "-n", fmt.Sprint(c.n),
		"-warmup", fmt.Sprint(c.warmup), "-rejected", fmt.Sprint(c.rejected), "-payload", fmt.Sprint(c.payload),
		"-token-base", fmt.Sprint(tokenBase), "-timeout", c.timeout.String())
	cmd.Env = childEnv(env)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return phaseResult{}, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	limit := c.timeout + warmUpWithin(c.warmup, c.rate) + 30*time.Second
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		err = errors.Join(ctx.Err(), <-done)
	case <-time.After(limit):
		_ = cmd.Process.Kill()
		err = fmt.Errorf("direct phase: not done within %s: %v", limit, <-done)
	}
	var res phaseResult
	b, rerr := os.ReadFile(out)
	if rerr == nil {
		rerr = json.Unmarshal(b, &res)
	}
	if err != nil || rerr != nil {
		return res, fmt.Errorf("direct phase (pid %d): %w", cmd.Process.Pid, errors.Join(err, rerr))
	}
	return res, nil
}
