package consumer

import (
	"context"
	"log/slog"
	"time"

	"github.com/jetpush/apns-worker/apns"
)

// The sender's pause while APNs refuses the credentials: no job reaches
// Send until a probe shows them fixed.

// maxSendTries bounds the probes one job makes while the credentials are
// refused before it is naked.
const maxSendTries = 1000

// credRecheck is how often a paused sender asks the engine whether its
// credentials were fixed.
const credRecheck = time.Second

// pause records a credentials refusal the sender saw: no job reaches Send
// before the next probe. Sender goroutine only.
func (w *Worker) pause(cause error) {
	now := time.Now()
	if w.credErr == nil { // a new pause: the first probe one interval on
		w.probeAt = now.Add(w.opts.CredentialsProbeInterval)
	}
	w.credErr, w.credCheck = cause, now.Add(min(credRecheck, w.opts.CredentialsProbeInterval))
	w.logCredentials(cause)
}

// awaitCredentials returns true once the sender may call Send: the engine
// reports no credentials error, or a probe is due (one every
// CredentialsProbeInterval while it does). It waits otherwise, asking the
// engine every credRecheck, and returns false if ctx or stopping ends the
// wait first. Sender goroutine only.
func (w *Worker) awaitCredentials(ctx context.Context, stopping <-chan struct{}, eng apns.Engine) bool {
	for {
		now := time.Now()
		if !now.Before(w.credCheck) {
			if cerr := eng.Stats().CredentialsErr; cerr != nil {
				w.pause(cerr)
			} else {
				w.credErr, w.credCheck = nil, now.Add(credRecheck)
			}
		}
		if w.credErr == nil {
			return true
		}
		if !now.Before(w.probeAt) {
			w.probeAt = now.Add(w.opts.CredentialsProbeInterval)
			return true
		}
		next := w.credCheck
		if w.probeAt.Before(next) {
			next = w.probeAt
		}
		t := time.NewTimer(next.Sub(now))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		case <-stopping:
			t.Stop()
			return false
		}
	}
}

// logCredentials logs a credentials refusal loudly, at most every 10 s.
func (w *Worker) logCredentials(cause error) {
	now := time.Now().UnixNano()
	if last := w.lastCredsLog.Load(); now-last > int64(10*time.Second) && w.lastCredsLog.CompareAndSwap(last, now) {
		w.log.Error("APNS REFUSED THE CREDENTIALS: jobs are held and probed until they are fixed", slog.Any("error", cause))
	}
}

// credentials naks a job APNs could not take because the credentials are
// refused, with the last (longest) back-off: a configuration problem must
// not burn the job's attempts towards a dead letter, nor spin it.
func (w *Worker) credentials(it *item, cause error) {
	w.logCredentials(cause)
	w.finish(it, actNakDelay, w.opts.Backoff[len(w.opts.Backoff)-1])
}
