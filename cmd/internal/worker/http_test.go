package worker

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
)

// statsEngine is an engine that only reports stats.
type statsEngine struct{ st apns.Stats }

func (e statsEngine) Send(context.Context, *apns.Notification, any) error { return apns.ErrClosed }
func (e statsEngine) Close(context.Context) error                         { return nil }
func (e statsEngine) Stats() apns.Stats                                   { return e.st }

// TestReadyzFaults: answers that are not APNs' verdicts fail /readyz once
// they have lasted faultsPersist, not before.
func TestReadyzFaults(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	require.NoError(t, err)
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	require.True(t, ns.ReadyForConnections(5*time.Second))
	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)

	tests := []struct {
		name  string
		since time.Time
		ready bool
	}{
		{"no faults", time.Time{}, true},
		{"faults just began", time.Now().Add(-time.Second), true},
		{"faults persist", time.Now().Add(-2 * faultsPersist), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r readiness
			r.set(nc, statsEngine{apns.Stats{Conns: 4, Connected: 4, FaultingSince: tt.since, Faults: map[int]uint64{404: 7}}})
			problems, _ := r.problems()
			if tt.ready {
				require.Empty(t, problems)
				return
			}
			require.Len(t, problems, 1)
			require.Contains(t, problems[0], "not APNs verdicts")
			require.Contains(t, problems[0], "404:7")
		})
	}
}
