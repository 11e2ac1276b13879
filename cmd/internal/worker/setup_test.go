package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/consumer"
)

// apiError is the server's error as the client decodes it from the API
// response.
func apiError(t *testing.T, e *server.ApiError) *jetstream.APIError {
	t.Helper()
	b, err := json.Marshal(e)
	require.NoError(t, err)
	var out jetstream.APIError
	require.NoError(t, json.Unmarshal(b, &out))
	return &out
}

// asSetup wraps err as the consumer and newConsumer do.
func asSetup(err error) error {
	return fmt.Errorf("jetstream setup (APNS_WORKER_JOBS_STREAM=APNS_JOBS, APNS_WORKER_EVENTS_STREAM=APNS_EVENTS): %w",
		fmt.Errorf("consumer: jobs stream APNS_JOBS: %w", err))
}

// TestClassifySetup: the errors of a cluster that is not ready yet are
// waited out, by their API error code (the server's own errors), wrapped
// as the set-up wraps them; everything else fails at once.
func TestClassifySetup(t *testing.T) {
	noPeers := func(why string) *jetstream.APIError {
		return apiError(t, server.NewJSClusterNoPeersError(errors.New(why)))
	}
	for _, tt := range []struct {
		name string
		err  error
		want setupFault
	}{
		{"peer offline", noPeers("no suitable peers for placement, peer offline"), setupPeerOffline},
		{"peer offline and a tag excluded", noPeers("no suitable peers for placement, peer offline, exclude tag set"), setupPeerOffline},
		{"peer not heard from since the cluster restarted", noPeers("no suitable peers for placement, miscellaneous issue"), setupPeerOffline},
		{"more replicas than servers", noPeers("no suitable peers for placement"), setupTooManyReplicas},
		{"replicas on a single server", apiError(t, server.NewJSStreamReplicasNotSupportedError()), setupTooManyReplicas},
		{"insufficient storage", noPeers("no suitable peers for placement, insufficient storage"), setupFails},
		{"tags not matched", noPeers("no suitable peers for placement, tags not matched ['az:1']"), setupFails},
		{"another placement failure", noPeers(`preferred server "n4" not known`), setupFails},
		{"no meta leader", apiError(t, server.NewJSClusterNotAvailError()), setupClusterNotReady},
		{"not the leader", apiError(t, server.NewJSClusterNotLeaderError()), setupClusterNotReady},
		{"cluster layer not up", apiError(t, server.NewJSClusterNotActiveError()), setupClusterNotReady},
		{"member change in flight", apiError(t, server.NewJSClusterServerMemberChangeInflightError()), setupClusterNotReady},
		{"no responders", nats.ErrNoResponders, setupClusterNotReady},
		{"request timeout", nats.ErrTimeout, setupClusterNotReady},
		{"context deadline", context.DeadlineExceeded, setupClusterNotReady},
		{"insufficient resources", apiError(t, server.NewJSInsufficientResourcesError()), setupFails},
		{"account resources", apiError(t, server.NewJSAccountResourcesExceededError()), setupFails},
		{"storage resources", apiError(t, server.NewJSStorageResourcesExceededError()), setupFails},
		{"subject overlap", apiError(t, server.NewJSStreamSubjectOverlapError()), setupFails},
		{"stream config differs", apiError(t, server.NewJSStreamNameExistError()), setupFails},
		{"stream not assigned", apiError(t, server.NewJSClusterNotAssignedError()), setupFails},
		{"retention mismatch", errors.New("exists with limits retention, the worker needs workqueue: delete it or point the worker at another stream"), setupFails},
		{"permissions, seen as a timeout", fmt.Errorf("%w (the NATS server reported: %w)", context.DeadlineExceeded,
			fmt.Errorf(`%w: Permissions Violation for Publish to "$JS.API.STREAM.INFO.APNS_JOBS"`, nats.ErrPermissionViolation)), setupFails},
		{"stopped", context.Canceled, setupFails},
		{"unknown", errors.New("something else"), setupFails},
	} {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, classifySetup(tt.err), "bare: %v", tt.err)
			require.Equal(t, tt.want, classifySetup(asSetup(tt.err)), "wrapped: %v", tt.err)
		})
	}
}

// syncBuffer is a log sink the test reads while the worker writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serveNATS starts a nats-server with o on loopback and connects to it.
func serveNATS(t *testing.T, o *server.Options, connOpts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	o.Host, o.Port, o.NoLog, o.NoSigs = "127.0.0.1", -1, true, true
	s, err := server.NewServer(o)
	require.NoError(t, err)
	go s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	require.True(t, s.ReadyForConnections(10*time.Second))
	nc, err := nats.Connect(s.ClientURL(), connOpts...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}

// plainNATS connects to a nats-server without JetStream: every set-up
// request finds no responders, as during a cluster node's restart.
func plainNATS(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return serveNATS(t, &server.Options{})
}

func setupOptions() consumer.Options {
	return consumer.Options{JobsStream: "APNS_JOBS", JobsSubject: "apns.jobs", Durable: "apns-worker",
		EventsStream: "APNS_EVENTS", EventsSubject: "apns.events", Replicas: 3}
}

// TestSetUpJetStreamWaits: while JetStream does not answer, the set-up is
// retried with one WARN per retry naming APNS_WORKER_NATS_URL, /readyz's
// phase says why; after the timeout it is a DeadEnd that names the
// variables and how long it waited.
func TestSetUpJetStreamWaits(t *testing.T) {
	nc, js := plainNATS(t)
	var logs syncBuffer
	var phase atomicString
	const timeout = time.Second
	start := time.Now()
	_, err := setUpJetStream(context.Background(), nc, js, setupOptions(), timeout, phase.set, slog.New(slog.NewJSONHandler(&logs, nil)))
	took := time.Since(start)

	var dead *DeadEnd
	require.ErrorAs(t, err, &dead)
	require.Equal(t, "APNS_WORKER_NATS_URL", dead.Var)
	require.Equal(t, nc.ConnectedUrlRedacted(), dead.Value)
	require.ErrorIs(t, err, nats.ErrNoResponders)
	require.Contains(t, err.Error(), "JetStream not ready within 1s (APNS_WORKER_NATS_CONNECT_TIMEOUT), waited 1.")
	require.GreaterOrEqual(t, took, timeout)
	require.Less(t, took, timeout+minSetupAttempt)

	warns := strings.Count(logs.String(), `"level":"WARN","msg":"jetstream not ready yet, retrying","var":"APNS_WORKER_NATS_URL"`)
	// 100, 200, 400 ms, then the rest of the second: 4 or 5 retries.
	require.GreaterOrEqual(t, warns, 4, logs.String())
	require.LessOrEqual(t, warns, 6, logs.String())
	require.Contains(t, logs.String(), `"attempt":1,"waited":"`)
	require.Contains(t, logs.String(), `"error":"jetstream setup (APNS_WORKER_JOBS_STREAM=APNS_JOBS, APNS_WORKER_EVENTS_STREAM=APNS_EVENTS): consumer: jobs stream APNS_JOBS: nats: no responders available for request"`)
	require.Equal(t, "waiting for the JetStream cluster (APNS_WORKER_NATS_URL="+nc.ConnectedUrlRedacted()+"): the JetStream cluster has no leader or did not answer", phase.get())
}

// TestSetUpJetStreamOnce: APNS_WORKER_NATS_CONNECT_TIMEOUT=0 tries once.
func TestSetUpJetStreamOnce(t *testing.T) {
	nc, js := plainNATS(t)
	var logs syncBuffer
	_, err := setUpJetStream(context.Background(), nc, js, setupOptions(), 0, func(string) {}, slog.New(slog.NewJSONHandler(&logs, nil)))
	var dead *DeadEnd
	require.ErrorAs(t, err, &dead)
	require.Contains(t, err.Error(), "1 attempts")
	require.NotContains(t, logs.String(), "retrying")
}

// TestSetUpJetStreamStops: a cancelled context (SIGTERM) ends the wait at
// once, with context.Canceled and no DeadEnd.
func TestSetUpJetStreamStops(t *testing.T) {
	nc, js := plainNATS(t)
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := setUpJetStream(ctx, nc, js, setupOptions(), time.Minute, func(string) {}, slog.New(slog.NewJSONHandler(&logs, nil)))
		done <- err
	}()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `"attempt":3`) }, 10*time.Second, 10*time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
		require.NotErrorAs(t, err, new(*DeadEnd))
	case <-time.After(time.Second):
		t.Fatal("still waiting a second after the cancel")
	}
}

// atomicString records the last phase.
type atomicString struct {
	mu sync.Mutex
	s  string
}

func (a *atomicString) set(s string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.s = s
}

func (a *atomicString) get() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.s
}

// TestSetUpJetStreamAfterPartialSuccess: an attempt that created the jobs
// stream and then failed leaves nothing the next one trips on: it takes
// the stream as it is and creates the rest.
func TestSetUpJetStreamAfterPartialSuccess(t *testing.T) {
	nc, js := serveNATS(t, &server.Options{JetStream: true, StoreDir: t.TempDir()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts := setupOptions()
	opts.Replicas = 1
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: opts.JobsStream, Subjects: []string{opts.JobsSubject, opts.JobsSubject + ".>"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Replicas: 1})
	require.NoError(t, err)

	var logs syncBuffer
	w, err := setUpJetStream(ctx, nc, js, opts, time.Second, func(string) {}, slog.New(slog.NewJSONHandler(&logs, nil)))
	require.NoError(t, err)
	require.NoError(t, w.Shutdown(ctx, nil))
	_, err = js.Stream(ctx, opts.EventsStream)
	require.NoError(t, err)
	_, err = js.Consumer(ctx, opts.JobsStream, opts.Durable)
	require.NoError(t, err)
	require.NotContains(t, logs.String(), "retrying")
}

// TestSetUpJetStreamPermissions: a request the server refuses only times
// out; the refusal, which reaches the connection, fails the set-up at once
// (not a wait for the timeout, not a DeadEnd).
func TestSetUpJetStreamPermissions(t *testing.T) {
	nc, js := serveNATS(t, &server.Options{JetStream: true, StoreDir: t.TempDir(),
		Users: []*server.User{{Username: "w", Password: "p", Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"$JS.API.STREAM.>"}}}}}},
		nats.UserInfo("w", "p"), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	opts := setupOptions()
	opts.Replicas = 1
	opts.SetupTimeout = 500 * time.Millisecond // the request's own timeout

	var logs syncBuffer
	start := time.Now()
	_, err := setUpJetStream(context.Background(), nc, js, opts, time.Minute, func(string) {}, slog.New(slog.NewJSONHandler(&logs, nil)))
	require.Error(t, err)
	require.Less(t, time.Since(start), 5*time.Second)
	require.NotErrorAs(t, err, new(*DeadEnd))
	require.ErrorIs(t, err, nats.ErrPermissionViolation)
	require.Contains(t, err.Error(), `Permissions Violation for Publish to "$JS.API.STREAM.INFO.APNS_JOBS"`)
	require.NotContains(t, logs.String(), "retrying")
}
