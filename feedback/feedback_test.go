package feedback_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
	"github.com/jetpush/apns-worker/feedback"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func tok(b byte, n int) apns.Token { return apns.Token(bytes.Repeat([]byte{b}, n)) }

var t0 = time.Unix(1_700_000_000, 0).UTC()

// newServer starts a feedback server closed at the end of the test.
func newServer(t *testing.T, opts ...apnstest.FeedbackOption) *apnstest.FeedbackServer {
	t.Helper()
	srv := apnstest.NewFeedbackServer(opts...)
	t.Cleanup(srv.Close)
	return srv
}

func newClient(t *testing.T, srv *apnstest.FeedbackServer, opts ...feedback.Option) *feedback.Client {
	t.Helper()
	c, err := feedback.NewClient(srv.Addr, srv.ClientCert(), append([]feedback.Option{feedback.WithRootCAs(srv.RootCAs())}, opts...)...)
	require.NoError(t, err)
	return c
}

func TestFetch(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	c := newClient(t, srv)
	want := []feedback.BadToken{{tok(1, 32), t0}, {tok(2, 32), t0.Add(time.Second)}, {tok(3, 32), t0.Add(time.Hour)}}
	for _, bt := range want {
		srv.Add(bt.Token, bt.Time)
	}
	got, err := c.Fetch(context.Background())
	require.NoError(t, err)
	require.Equal(t, want, got)

	// The list is cleared once read.
	got, err = c.Fetch(context.Background())
	require.NoError(t, err)
	require.Empty(t, got)
	require.Equal(t, 2, srv.Conns())
	require.Equal(t, feedback.Production, "feedback.push.apple.com:2196")
	require.Equal(t, feedback.Sandbox, "feedback.sandbox.push.apple.com:2196")
}

func TestFetchMany(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	c := newClient(t, srv)
	const n = 5000
	for i := range n {
		srv.Add(tok(byte(i), 32), t0.Add(time.Duration(i)*time.Second))
	}
	got, err := c.Fetch(context.Background())
	require.NoError(t, err)
	require.Len(t, got, n)
	require.Equal(t, t0.Add((n-1)*time.Second), got[n-1].Time)
}

func TestFetchMalformed(t *testing.T) {
	t.Parallel()
	good := []feedback.BadToken{{tok(1, 32), t0}, {tok(2, 32), t0.Add(time.Second)}}
	tests := []struct {
		name    string
		then    func(*apnstest.FeedbackServer)
		opts    []feedback.Option
		want    []feedback.BadToken
		wantErr []error
	}{
		{"garbage", func(s *apnstest.FeedbackServer) { s.AddRaw([]byte("\x00\x00\x00\x01\x7fgarbage")) },
			nil, good, []error{feedback.ErrMalformed}},
		{"wrong token length", func(s *apnstest.FeedbackServer) { s.Add(tok(3, 31), t0) },
			nil, good, []error{feedback.ErrMalformed}},
		{"closed mid-header", func(s *apnstest.FeedbackServer) { s.AddTruncated(tok(3, 32), t0, 4) },
			nil, good, []error{feedback.ErrMalformed, io.ErrUnexpectedEOF}},
		{"closed mid-token", func(s *apnstest.FeedbackServer) { s.AddTruncated(tok(3, 32), t0, 37) },
			nil, good, []error{feedback.ErrMalformed, io.ErrUnexpectedEOF}},
		{"too many", func(s *apnstest.FeedbackServer) { s.Add(tok(3, 32), t0) },
			[]feedback.Option{feedback.WithMaxTokens(2)}, good, []error{feedback.ErrTooMany}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t)
			for _, bt := range good {
				srv.Add(bt.Token, bt.Time)
			}
			tt.then(srv)
			got, err := newClient(t, srv, tt.opts...).Fetch(context.Background())
			require.Equal(t, tt.want, got)
			for _, want := range tt.wantErr {
				require.ErrorIs(t, err, want)
			}
			require.ErrorContains(t, err, srv.Addr)
			if errors.Is(err, feedback.ErrMalformed) {
				require.ErrorContains(t, err, "tuple 3")
			}
		})
	}
}

func TestFetchTokenLen(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	srv.Add(tok(1, 8), t0)
	srv.Add(tok(2, 100), t0)
	got, err := newClient(t, srv, feedback.WithTokenLen(0)).Fetch(context.Background())
	require.NoError(t, err)
	require.Equal(t, []feedback.BadToken{{tok(1, 8), t0}, {tok(2, 100), t0}}, got)
}

func TestFetchStalled(t *testing.T) {
	t.Parallel()
	t.Run("context deadline", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t)
		srv.Add(tok(1, 32), t0)
		srv.StallAfterData()
		// Long enough for the handshake and first read on a loaded machine.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		got, err := newClient(t, srv).Fetch(ctx)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		t.Log(err)
		require.Equal(t, []feedback.BadToken{{tok(1, 32), t0}}, got)
	})
	t.Run("read timeout", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t)
		srv.Add(tok(1, 32), t0)
		srv.StallAfterData()
		got, err := newClient(t, srv, feedback.WithReadTimeout(time.Second)).Fetch(context.Background())
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		require.ErrorContains(t, err, "no data for 1s")
		t.Log(err)
		require.Equal(t, []feedback.BadToken{{tok(1, 32), t0}}, got)
	})
	t.Run("fetch timeout", func(t *testing.T) {
		// The bound on the whole fetch, which a service that trickles
		// a byte at a time cannot stretch as it does the read timeout.
		t.Parallel()
		srv := newServer(t)
		srv.Add(tok(1, 32), t0)
		srv.StallAfterData()
		start := time.Now()
		got, err := newClient(t, srv, feedback.WithFetchTimeout(time.Second)).Fetch(context.Background())
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Less(t, time.Since(start), 20*time.Second, "the read timeout (30s) ended it, not the fetch timeout")
		t.Log(err)
		require.Equal(t, []feedback.BadToken{{tok(1, 32), t0}}, got)
	})
	t.Run("handshake, dial timeout", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t)
		srv.StallHandshake()
		start := time.Now()
		got, err := newClient(t, srv, feedback.WithDialTimeout(100*time.Millisecond)).Fetch(context.Background())
		require.Error(t, err)
		require.ErrorContains(t, err, "tls handshake")
		t.Log(err)
		require.Empty(t, got)
		require.Less(t, time.Since(start), 5*time.Second)
	})
	t.Run("handshake, cancel", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t)
		srv.StallHandshake()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := newClient(t, srv).Fetch(ctx)
			done <- err
		}()
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
	})
	t.Run("unstall", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t)
		srv.Add(tok(1, 32), t0)
		srv.StallAfterData()
		done := make(chan error, 1)
		go func() {
			_, err := newClient(t, srv).Fetch(context.Background())
			done <- err
		}()
		// Whether Unstall comes before the connection (which then does not
		// stall) or releases it, Fetch must end without error.
		srv.Unstall()
		require.NoError(t, <-done)
	})
}

func TestFetchCredentials(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	other := apnstest.MustPKI() // a client certificate srv does not trust
	c, err := feedback.NewClient(srv.Addr, other.ClientCert, feedback.WithRootCAs(srv.RootCAs()))
	require.NoError(t, err)
	srv.Add(tok(1, 32), t0)
	got, err := c.Fetch(context.Background())
	require.ErrorIs(t, err, apns.ErrCredentials)
	require.Empty(t, got)
	t.Log(err)
	srv.Close() // waits for the server's side of the handshake
	require.Equal(t, 1, srv.HandshakeErrors())
	require.Positive(t, srv.Queued(), "the list must survive a refused connection")
}

func TestFetchUntrustedServer(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	c, err := feedback.NewClient(srv.Addr, srv.ClientCert(), feedback.WithRootCAs(apnstest.MustPKI().RootCAs))
	require.NoError(t, err)
	_, err = c.Fetch(context.Background())
	var unknown x509.UnknownAuthorityError
	require.ErrorAs(t, err, &unknown)
	require.NotErrorIs(t, err, apns.ErrCredentials)
}

func TestFetchRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	c, err := feedback.NewClient(addr, apnstest.MustPKI().ClientCert)
	require.NoError(t, err)
	got, err := c.Fetch(context.Background())
	require.Error(t, err)
	require.ErrorContains(t, err, addr)
	require.Empty(t, got)
}

func TestNewClient(t *testing.T) {
	t.Parallel()
	p := apnstest.MustPKI()
	tests := []struct {
		name    string
		addr    string
		cert    tls.Certificate
		opts    []feedback.Option
		wantErr error
	}{
		{"production", feedback.Production, p.ClientCert, nil, nil},
		{"all options", feedback.Sandbox, p.ClientCert, []feedback.Option{
			feedback.WithRootCAs(p.RootCAs), feedback.WithDialTimeout(time.Second), feedback.WithReadTimeout(time.Second),
			feedback.WithTokenLen(0), feedback.WithMaxTokens(10), feedback.WithLogger(slog.Default())}, nil},
		{"nil logger", feedback.Production, p.ClientCert, []feedback.Option{feedback.WithLogger(nil)}, feedback.ErrInvalidOption},
		{"no port", "feedback.push.apple.com", p.ClientCert, nil, apns.ErrInvalidOption},
		{"no certificate", feedback.Production, tls.Certificate{}, nil, apns.ErrNoCertificate},
		{"dial timeout", feedback.Production, p.ClientCert, []feedback.Option{feedback.WithDialTimeout(0)}, feedback.ErrInvalidOption},
		{"read timeout", feedback.Production, p.ClientCert, []feedback.Option{feedback.WithReadTimeout(-1)}, feedback.ErrInvalidOption},
		{"token length", feedback.Production, p.ClientCert, []feedback.Option{feedback.WithTokenLen(101)}, feedback.ErrInvalidOption},
		{"max tokens", feedback.Production, p.ClientCert, []feedback.Option{feedback.WithMaxTokens(0)}, feedback.ErrInvalidOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := feedback.NewClient(tt.addr, tt.cert, tt.opts...)
			require.ErrorIs(t, err, tt.wantErr)
			if tt.wantErr == nil {
				require.Equal(t, tt.addr, c.Addr())
			} else {
				require.ErrorIs(t, err, feedback.ErrInvalidOption)
			}
		})
	}
}
