package feedback_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/feedback"
)

// startPoller runs p until the test ends and checks that Run returns nil.
func startPoller(t *testing.T, p *feedback.Poller) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return cancel
}

func TestPollerImmediateThenInterval(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	srv.Add(tok(1, 32), t0)
	batches := make(chan []feedback.BadToken, 1)
	p, err := feedback.NewPoller(newClient(t, srv), 10*time.Millisecond, func(_ context.Context, toks []feedback.BadToken) error {
		batches <- toks
		return nil
	})
	require.NoError(t, err)
	startPoller(t, p)

	require.Equal(t, []feedback.BadToken{{tok(1, 32), t0}}, <-batches)
	srv.Add(tok(2, 32), t0)
	require.Equal(t, []feedback.BadToken{{tok(2, 32), t0}}, <-batches)
	// Empty polls do not call the handler.
	srv.Add(tok(3, 32), t0)
	require.Equal(t, []feedback.BadToken{{tok(3, 32), t0}}, <-batches)
	require.GreaterOrEqual(t, srv.Conns(), 3)
}

func TestPollerFirstPollIsImmediate(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	srv.Add(tok(1, 32), t0)
	batches := make(chan []feedback.BadToken, 1)
	p, err := feedback.NewPoller(newClient(t, srv), time.Hour, func(_ context.Context, toks []feedback.BadToken) error {
		batches <- toks
		return nil
	})
	require.NoError(t, err)
	startPoller(t, p)
	require.Len(t, <-batches, 1)
}

// A failed fetch hands over the tokens read before the failure, then
// retries after the backoff, not the (long) interval.
func TestPollerFetchErrorBacksOff(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	srv.Add(tok(1, 32), t0)
	srv.AddRaw([]byte("garbage"))
	batches := make(chan []feedback.BadToken, 2)
	calls := 0
	p, err := feedback.NewPoller(newClient(t, srv), time.Hour, func(_ context.Context, toks []feedback.BadToken) error {
		calls++
		if calls == 1 {
			srv.Add(tok(2, 32), t0) // for the retry
		}
		batches <- toks
		return nil
	}, feedback.WithBackoff(time.Millisecond, 2*time.Millisecond))
	require.NoError(t, err)
	startPoller(t, p)
	require.Equal(t, []feedback.BadToken{{tok(1, 32), t0}}, <-batches)
	require.Equal(t, []feedback.BadToken{{tok(2, 32), t0}}, <-batches)
}

// A failed handler gets the same tokens again, with those fetched since.
func TestPollerHandlerErrorKeepsTokens(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	srv.Add(tok(1, 32), t0)
	batches := make(chan []feedback.BadToken, 3)
	calls := 0
	p, err := feedback.NewPoller(newClient(t, srv), time.Hour, func(_ context.Context, toks []feedback.BadToken) error {
		calls++
		batches <- append([]feedback.BadToken(nil), toks...)
		switch calls {
		case 1:
			srv.Add(tok(2, 32), t0)
			return errors.New("store down")
		case 2:
			return errors.New("store still down")
		}
		return nil
	}, feedback.WithBackoff(time.Millisecond, 0))
	require.NoError(t, err)
	startPoller(t, p)
	require.Equal(t, []feedback.BadToken{{tok(1, 32), t0}}, <-batches)
	require.Equal(t, []feedback.BadToken{{tok(1, 32), t0}, {tok(2, 32), t0}}, <-batches)
	require.Equal(t, []feedback.BadToken{{tok(1, 32), t0}, {tok(2, 32), t0}}, <-batches)
}

func TestPollerStops(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	srv.StallHandshake() // Run is inside Fetch when ctx ends
	p, err := feedback.NewPoller(newClient(t, srv), time.Hour, func(context.Context, []feedback.BadToken) error {
		return nil
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	cancel()
	require.NoError(t, <-done)
}

func TestPollerRunTwice(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	srv.Add(tok(1, 32), t0)
	handled := make(chan struct{})
	p, err := feedback.NewPoller(newClient(t, srv), time.Hour, func(context.Context, []feedback.BadToken) error {
		close(handled)
		return nil
	})
	require.NoError(t, err)
	startPoller(t, p)
	<-handled // the first Run is running
	require.ErrorIs(t, p.Run(context.Background()), feedback.ErrRunning)
}

func TestNewPoller(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	c := newClient(t, srv)
	h := func(context.Context, []feedback.BadToken) error { return nil }
	tests := []struct {
		name     string
		c        *feedback.Client
		interval time.Duration
		h        feedback.HandleFunc
		opts     []feedback.PollerOption
		wantErr  error
	}{
		{"ok", c, time.Minute, h, nil, nil},
		{"backoff", c, time.Minute, h, []feedback.PollerOption{feedback.WithBackoff(time.Second, time.Hour)}, nil},
		{"nil client", nil, time.Minute, h, nil, feedback.ErrInvalidOption},
		{"zero interval", c, 0, h, nil, feedback.ErrInvalidOption},
		{"nil handler", c, time.Minute, nil, nil, feedback.ErrInvalidOption},
		{"zero backoff", c, time.Minute, h, []feedback.PollerOption{feedback.WithBackoff(0, 0)}, feedback.ErrInvalidOption},
		{"backoff max < min", c, time.Minute, h, []feedback.PollerOption{feedback.WithBackoff(time.Second, time.Millisecond)}, feedback.ErrInvalidOption},
		{"negative stop grace", c, time.Minute, h, []feedback.PollerOption{feedback.WithStopGrace(-time.Second)}, feedback.ErrInvalidOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := feedback.NewPoller(tt.c, tt.interval, tt.h, tt.opts...)
			require.ErrorIs(t, err, tt.wantErr)
		})
	}
}

// TestPollerHandlesPendingAtStop: tokens whose handler call failed are
// still held when Run's context ends (the service has forgotten them): Run
// offers them once more, on a live context within the stop grace.
func TestPollerHandlesPendingAtStop(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	srv.Add(tok(1, 32), t0)
	type call struct {
		toks  []feedback.BadToken
		ctxOK bool
	}
	calls := make(chan call, 2)
	first := true
	p, err := feedback.NewPoller(newClient(t, srv), time.Hour, func(ctx context.Context, toks []feedback.BadToken) error {
		calls <- call{append([]feedback.BadToken(nil), toks...), ctx.Err() == nil}
		if first {
			first = false
			return errors.New("store down") // kept; the retry is an hour away
		}
		return nil
	}, feedback.WithBackoff(time.Hour, 0), feedback.WithStopGrace(time.Second))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	require.Equal(t, []feedback.BadToken{{tok(1, 32), t0}}, (<-calls).toks)
	cancel()
	require.NoError(t, <-done)
	last := <-calls
	require.Equal(t, []feedback.BadToken{{tok(1, 32), t0}}, last.toks)
	require.True(t, last.ctxOK, "the handler at stop gets a live context")
}
