package consumer

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
)

// TestSweepStatusShapedJobs: an empty job with a Status header never
// reaches the worker (nats.go takes it for a server status message). Behind
// a job held in back-off at the head of the stream (which the sweep must
// leave alone), the sweep stores its rejection event, with its id, and
// deletes it; the held job is then delivered.
func TestSweepStatusShapedJobs(t *testing.T) {
	js, _ := startJS(t)
	eng := newFakeEngine(func(_ *apns.Notification, attempt int) (error, bool) {
		if attempt == 1 {
			return fmt.Errorf("test: connection reset"), false
		}
		return nil, false
	})
	opts := testOptions()
	opts.AckWait = time.Second
	opts.Backoff = []time.Duration{4 * time.Second} // the head stays put for several sweeps
	startWorker(t, js, opts, eng)
	publishJobs(t, js, 1, tokHex)
	_, err := js.PublishMsg(ctxT(t), &nats.Msg{Subject: "apns.jobs", Header: nats.Header{
		"Status": {"408"}, "Description": {"Request Timeout"}, jetstream.MsgIDHeader: {"status-408"}}})
	require.NoError(t, err)

	require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
		20*time.Second, 20*time.Millisecond)
	rej := events[RejectionEvent](t, js, "apns.events.rejected")
	require.Len(t, rej, 1)
	require.Equal(t, "status-408", rej[0].JobID)
	require.Equal(t, uint64(2), rej[0].Seq)
	require.Equal(t, ReasonMalformedJob, rej[0].Reason)
	require.Contains(t, rej[0].Error, "Status header")
	require.Equal(t, 2, eng.sent(tokHex(0)), "the held job was swept too")
}
