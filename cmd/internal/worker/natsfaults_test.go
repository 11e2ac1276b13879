package worker

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/config"
)

// TestNATSFaultsVital: which refused subjects stop the worker.
func TestNATSFaultsVital(t *testing.T) {
	f := newNATSFaults(&config.Config{Events: config.Events{Subject: "apns.events"}, Jobs: config.Jobs{Stream: "APNS_JOBS", Consumer: "apns-worker"},
		NATS: config.NATS{URLs: []string{"nats://n:4222"}, User: "w"}}, slog.New(slog.DiscardHandler))
	viol := func(s string) error { return errors.Join(nats.ErrPermissionViolation, errors.New(s)) }
	for _, tt := range []struct {
		err   error
		vital bool
	}{
		{viol(`Permissions Violation for Publish to "$JS.API.CONSUMER.MSG.NEXT.APNS_JOBS.apns-worker"`), true},
		{viol(`Permissions Violation for Publish to "$JS.ACK.APNS_JOBS.apns-worker.1.2.3.1765000000000000000.0"`), true},
		{viol(`Permissions Violation for Publish to "apns.events.rejected"`), true},
		{viol(`Permissions Violation for Subscription to "_INBOX.abc.*"`), true},
		{viol(`Permissions Violation for Subscription to "_INBOX.abc" using queue "q"`), true},
		{viol(`Permissions Violation for Publish to "$JS.API.STREAM.INFO.APNS_JOBS"`), false}, // the set-up's
		{viol(`Permissions Violation for Publish to "apns.eventsx"`), false},
		{errors.New(`Permissions Violation for Publish to "$JS.ACK.x"`), false}, // not nats.go's violation
		{nats.ErrSlowConsumer, false},
	} {
		require.Equal(t, tt.vital, f.report(tt.err), "%v", tt.err)
	}
	select {
	case <-f.Done():
	default:
		t.Fatal("not done after a vital violation")
	}
	require.ErrorContains(t, f.Err(), `the NATS server refuses APNS_WORKER_NATS_USER=w permission to publish to "$JS.API.CONSUMER.MSG.NEXT.APNS_JOBS.apns-worker": the worker needs it to pull jobs from the durable consumer; grant "publish $JS.API.CONSUMER.MSG.NEXT.APNS_JOBS.apns-worker" to this user`)
	require.ErrorIs(t, f.Err(), nats.ErrPermissionViolation)
}

// TestRunStopsOnRefusedPermission: a NATS user that may set up the
// streams and the consumer but not pull, not ack, or not publish events
// gets a worker that stops at the first refusal (exit 1) with an ERROR
// naming the subject and the login variable, instead of one that runs
// for ever without taking a job, or sends every job to APNs again each
// ACK_WAIT. The job it held is still in the stream, for redelivery.
func TestRunStopsOnRefusedPermission(t *testing.T) {
	for _, tt := range []struct {
		name, deny, job, subject, grant string
	}{
		{"no pull", "$JS.API.CONSUMER.MSG.NEXT.>", "", "$JS.API.CONSUMER.MSG.NEXT.APNS_JOBS.apns-worker", "publish $JS.API.CONSUMER.MSG.NEXT.APNS_JOBS.apns-worker"},
		{"no ack", "$JS.ACK.>", `{"id":"j1","token":"abababababababababababababababababababababababababababababababab","payload":{"aps":{}}}`, "$JS.ACK.APNS_JOBS.apns-worker.", "publish $JS.ACK.APNS_JOBS.apns-worker.>"},
		{"no events", "apns.events.>", "not json", "apns.events.rejected", "publish apns.events.>"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			admin, js := serveNATS(t, &server.Options{JetStream: true, StoreDir: t.TempDir(),
				Users: []*server.User{
					{Username: "admin", Password: "pw"},
					{Username: "worker", Password: "pw", Permissions: &server.Permissions{
						Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{tt.deny}}}},
				}}, nats.UserInfo("admin", "pw"))
			ctx := context.Background()
			// The jobs stream as the worker makes it, with the job in it.
			_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "APNS_JOBS", Subjects: []string{"apns.jobs", "apns.jobs.>"},
				Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage})
			require.NoError(t, err)
			if tt.job != "" {
				_, err = js.Publish(ctx, "apns.jobs", []byte(tt.job))
				require.NoError(t, err)
			}

			for _, kv := range os.Environ() {
				if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, config.Prefix+"_") {
					t.Setenv(k, "")
				}
			}
			for k, v := range map[string]string{
				"NATS_URL": admin.ConnectedUrl(), "NATS_USER": "worker", "NATS_PASSWORD": "pw",
				"HTTP_ADDR": "", "SHUTDOWN_GRACE": "5s", "SOCKET_CALLS": "runtime",
			} {
				t.Setenv(config.Prefix+"_"+k, v)
			}
			cfg, err := config.Load()
			require.NoError(t, err)
			var logs syncBuffer
			done := make(chan error, 1)
			go func() { done <- Run(ctx, cfg, slog.New(slog.NewJSONHandler(&logs, nil))) }()
			select {
			case err = <-done:
			case <-time.After(60 * time.Second):
				t.Fatalf("Run still running after 60s\n%s", logs.String())
			}
			require.Error(t, err, "log:\n%s", logs.String())
			require.NotErrorAs(t, err, new(*DeadEnd))
			require.ErrorIs(t, err, nats.ErrPermissionViolation)
			require.Contains(t, err.Error(), "APNS_WORKER_NATS_USER=worker")
			require.Contains(t, err.Error(), tt.subject)
			require.Contains(t, logs.String(), `"level":"ERROR","msg":"nats refused a permission the worker cannot run without; stopping","subject":"`+tt.subject)
			require.Contains(t, logs.String(), `"grant":"`+tt.grant+`"`)
			require.Contains(t, logs.String(), `"var":"APNS_WORKER_NATS_USER","value":"worker"`)
			if tt.job != "" {
				st, err := js.Stream(ctx, "APNS_JOBS")
				require.NoError(t, err)
				require.Equal(t, uint64(1), st.CachedInfo().State.Msgs, "the job is still in the stream, for redelivery")
			}
		})
	}
}
