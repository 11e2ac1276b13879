package consumer

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jetpush/apns-worker/apns"
)

// logJob writes the per-job debug line for an outcome: job id, token
// prefix, outcome, the engine's attempts, the JetStream delivery and the
// latency from the engine accepting the job. With debug off it costs one
// level check.
func (w *Worker) logJob(it *item, o apns.Outcome) {
	if !w.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	outcome := "delivered"
	var reason string
	if o.Err != nil {
		outcome, reason = "failed", o.Err.Error()
		if rej, ok := o.Rejection(); ok {
			outcome, reason = "rejected", rej.Reason
			if reason == "" {
				reason = rej.Status.String()
			}
		} else if errors.Is(o.Err, apns.ErrInvalidNotification) {
			outcome = "malformed"
		}
	}
	var tok string
	if o.Notification != nil {
		tok = o.Notification.Token.String()
		tok = tok[:min(len(tok), 8)]
	}
	_, deliveries := w.meta(it)
	attrs := []slog.Attr{
		slog.String("job_id", it.id),
		slog.String("token_prefix", tok),
		slog.String("outcome", outcome),
		slog.Int("attempts", o.Attempts),
		slog.Uint64("delivery", deliveries),
	}
	if !o.Accepted.IsZero() {
		attrs = append(attrs, slog.String("latency", time.Since(o.Accepted).Round(time.Microsecond).String()))
	}
	if reason != "" {
		attrs = append(attrs, slog.String("reason", reason))
	}
	w.log.LogAttrs(context.Background(), slog.LevelDebug, "job", attrs...)
}
