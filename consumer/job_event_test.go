package consumer

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestMalformedJobNakedUntilEventStored: a malformed job whose event cannot
// be stored (no responders while the events stream has no leader, through
// every one of the worker's own retries) is not terminated: it is naked,
// comes back, and is terminated once its one event is stored.
func TestMalformedJobNakedUntilEventStored(t *testing.T) {
	js, _ := startJS(t)
	ljs := &leaderlessJS{JetStream: js}
	eng := newFakeEngine(nil)
	opts := testOptions()
	opts.eventRetryBase = time.Millisecond
	startWorker(t, ljs, opts, eng)
	ljs.failures.Store(1 + maxEventRetries) // the first delivery's publishes
	_, err := js.Publish(ctxT(t), "apns.jobs", []byte(`{"id":"m1","token":"zz","payload":{"aps":{}}}`))
	require.NoError(t, err)

	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		10*time.Second, 10*time.Millisecond)
	require.Equal(t, uint64(2), consumerInfo(t, js).Delivered.Consumer, "naked without its event, terminated with it")
	evs := events[RejectionEvent](t, js, "apns.events.rejected")
	require.Len(t, evs, 1)
	require.Equal(t, "m1", evs[0].JobID)
	require.True(t, evs[0].Malformed)
	require.Zero(t, eng.sentTotal())
}
