package apns

import (
	"context"
	"errors"
	"time"
)

// Engine sends notifications and reports one Outcome for each.
type Engine interface {
	// Send validates n and queues it, blocking while the engine is
	// saturated. It fails only for an invalid n (the error wraps
	// ErrInvalidNotification), a done ctx, or ErrClosed; every n it accepts
	// gets exactly one Outcome, carrying ref, through the OutcomeFunc.
	// The engine owns n until its Outcome: the caller must not change it.
	Send(ctx context.Context, n *Notification, ref any) error
	// Close stops intake, waits for outcomes until ctx ends, then reports
	// the rest as failed with ErrClosed. It returns nil after a full drain,
	// and an error wrapping ctx's when its ctx ended first. It is safe to
	// call more than once and concurrently; each call returns once every
	// outcome was reported.
	Close(ctx context.Context) error
	// Stats is a snapshot for health checks and metrics.
	Stats() Stats
}

// Stats is a snapshot of an engine's state.
type Stats struct {
	Conns      int    // connections configured
	Connected  int    // connections currently up
	InFlight   int    // accepted by Send, no outcome yet
	Reconnects uint64 // connections replaced since start
	// ConfirmMarkers counts the binary engine's confirm markers the
	// gateway answered (WithConfirmMarkers); MarkersOff is set once the
	// gateway mishandled one and the engine went back to the window.
	ConfirmMarkers uint64
	MarkersOff     bool
	// CredentialsErr is non-nil once APNs refused the credentials; the
	// engine fails new work until it is fixed (HTTP/2).
	CredentialsErr error
	// Faults counts, by HTTP status, the HTTP/2 answers that were not
	// APNs' verdicts (ErrNotAPNs: proxies' 502s, HTML 404s, 400s without
	// Apple's JSON), each retried; a copy, nil when there were none.
	Faults map[int]uint64
	// FaultingSince is when the answers stopped being APNs' verdicts: the
	// first fault since the last verdict, zero when the last answer was
	// APNs' (health checks fail once it is old).
	FaultingSince time.Time
}

// Outcome is the final result for one notification.
type Outcome struct {
	Ref          any           // the caller's ref from Send
	Notification *Notification // as passed to Send
	// Err is nil when delivered, a *RejectionError when APNs refused the
	// notification for good, and any other error when it failed.
	Err      error
	APNsID   string    // HTTP/2: the apns-id APNs returned
	Attempts int       // times written to APNs (0 if never written)
	Accepted time.Time // when Send accepted it
}

// Delivered reports whether APNs took the notification (HTTP/2 200, or
// binary assumed delivered).
func (o Outcome) Delivered() bool { return o.Err == nil }

// Rejection returns the rejection, if APNs refused the notification for good.
func (o Outcome) Rejection() (*RejectionError, bool) {
	var rej *RejectionError
	ok := errors.As(o.Err, &rej)
	return rej, ok
}

// OutcomeFunc receives outcomes. Engines call it from their own goroutines,
// possibly concurrently; it must not block for long or call Send.
type OutcomeFunc func(Outcome)
