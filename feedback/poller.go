package feedback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jetpush/apns-worker/apns"
)

// ErrRunning is returned by Run while another Run of the same Poller is
// active.
var ErrRunning = errors.New("feedback: poller already running")

// HandleFunc receives a non-empty batch of bad tokens, in the order the
// service sent them. An error makes the Poller keep the batch and offer it
// again (with tokens fetched since appended) after a backoff: the service
// will not send them twice. It is called from Run's goroutine only.
type HandleFunc func(ctx context.Context, toks []BadToken) error

// PollerOption configures a Poller.
type PollerOption func(*pollerOptions) error

type pollerOptions struct {
	backoffMin time.Duration
	backoffMax time.Duration // 0: the interval
	stopGrace  time.Duration
}

// WithStopGrace sets how long Run, once its context is done, still gives the
// handler for tokens it holds (fetched, not yet handled: the service will
// not send them again). Default 3s; 0 drops them with a warning.
func WithStopGrace(d time.Duration) PollerOption {
	return func(o *pollerOptions) error {
		if d < 0 {
			return fmt.Errorf("%w: stop grace %v < 0", ErrInvalidOption, d)
		}
		o.stopGrace = d
		return nil
	}
}

// WithBackoff sets the wait after a failed fetch or handler call: min,
// doubling with each consecutive failure up to max, with jitter (default
// 1s up to the interval). max 0 means the interval; waits never exceed it.
func WithBackoff(min, max time.Duration) PollerOption {
	return func(o *pollerOptions) error {
		if min <= 0 || max < 0 || (max != 0 && max < min) {
			return fmt.Errorf("%w: backoff %v..%v", ErrInvalidOption, min, max)
		}
		o.backoffMin, o.backoffMax = min, max
		return nil
	}
}

// Poller fetches from a Client on an interval and passes the bad tokens to
// a HandleFunc.
type Poller struct {
	c        *Client
	interval time.Duration
	handle   HandleFunc
	o        pollerOptions
	running  atomic.Bool
}

// NewPoller returns a poller that fetches from c every interval and calls
// handle with what it got. Start it with Run.
func NewPoller(c *Client, interval time.Duration, handle HandleFunc, opts ...PollerOption) (*Poller, error) {
	switch {
	case c == nil:
		return nil, fmt.Errorf("%w: nil client", ErrInvalidOption)
	case interval <= 0:
		return nil, fmt.Errorf("%w: interval %v <= 0", ErrInvalidOption, interval)
	case handle == nil:
		return nil, fmt.Errorf("%w: nil handler", ErrInvalidOption)
	}
	o := pollerOptions{backoffMin: time.Second, stopGrace: 3 * time.Second}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if o.backoffMax == 0 || o.backoffMax > interval {
		o.backoffMax = interval
	}
	if o.backoffMin > o.backoffMax {
		o.backoffMin = o.backoffMax
	}
	return &Poller{c: c, interval: interval, handle: handle, o: o}, nil
}

// Run fetches at once, then every interval after the previous poll ended,
// until ctx is done; then it returns nil. A failed fetch or handler call is
// logged and retried after a backoff (see WithBackoff) instead of the
// interval. Tokens fetched but not yet handled when ctx ends are offered to
// the handler once more, within the stop grace (see WithStopGrace); if that
// fails too they are lost, and logged as such. Run fails with ErrRunning if
// the Poller already runs.
func (p *Poller) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer p.running.Store(false)
	var (
		pending  []BadToken
		failures int
	)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			p.handleAtStop(ctx, pending)
			return nil
		case <-timer.C:
		}
		var ok bool
		pending, ok = p.poll(ctx, pending)
		if ok {
			failures = 0
			timer.Reset(p.interval)
			continue
		}
		failures++
		timer.Reset(p.backoff(failures))
	}
}

// poll fetches, appends to pending and hands pending over. It returns what
// is still pending and whether both steps succeeded.
func (p *Poller) poll(ctx context.Context, pending []BadToken) ([]BadToken, bool) {
	log := p.c.o.log
	toks, err := p.c.Fetch(ctx)
	if ctx.Err() != nil {
		return append(pending, toks...), false
	}
	if err != nil {
		log.LogAttrs(ctx, slog.LevelWarn, "feedback fetch failed",
			slog.String("addr", p.c.addr), slog.Int("tokens", len(toks)), slog.Any("error", err))
	}
	pending = append(pending, toks...)
	if max := p.c.o.maxTokens; len(pending) > max {
		log.LogAttrs(ctx, slog.LevelWarn, "feedback tokens dropped, handler too far behind",
			slog.Int("dropped", len(pending)-max))
		pending = append(pending[:0], pending[len(pending)-max:]...)
	}
	if len(pending) == 0 {
		return nil, err == nil
	}
	if herr := p.handle(ctx, pending); herr != nil {
		if ctx.Err() == nil {
			log.LogAttrs(ctx, slog.LevelWarn, "feedback handler failed",
				slog.Int("tokens", len(pending)), slog.Any("error", herr))
		}
		return pending, false
	}
	return nil, err == nil
}

// handleAtStop offers the tokens still held to the handler once more, within
// the stop grace, on a context that outlives Run's: the feedback service
// has forgotten them.
func (p *Poller) handleAtStop(ctx context.Context, pending []BadToken) {
	if len(pending) == 0 {
		return
	}
	log := p.c.o.log
	if p.o.stopGrace > 0 {
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.o.stopGrace)
		defer cancel()
		err := p.handle(hctx, pending)
		if err == nil {
			return
		}
		log.LogAttrs(ctx, slog.LevelWarn, "feedback handler failed at stop", slog.Any("error", err))
	}
	log.LogAttrs(ctx, slog.LevelWarn, "feedback tokens not handled before stop",
		slog.String("addr", p.c.addr), slog.Int("tokens", len(pending)))
}

// backoff is the wait after the n-th consecutive failure (n >= 1): the
// module's one back-off, from min doubling up to max, with jitter.
func (p *Poller) backoff(n int) time.Duration {
	return apns.Backoff{Min: p.o.backoffMin, Max: p.o.backoffMax}.Delay(n)
}
