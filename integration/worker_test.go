package integration

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
)

// TestEndToEnd: jobs published to the jobs subject all reach the binary
// gateway and are acked; the stream ends empty and nothing is rejected.
func TestEndToEnd(t *testing.T) {
	const n = 2000
	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	gw := startGateway(t)
	w := startWorker(t, "e2e", binaryEnv(t, ns.ClientURL(), gw, 200*time.Millisecond))

	jobs := publishJobs(t, js, "e2e", n, func(i int) apns.Token { return token(0xe1, i) })
	waitDrained(t, js, 90*time.Second)

	dups := requireAllDelivered(t, gw, jobs, nil)
	st := gw.Stats()
	require.Zero(t, st.Rejected)
	require.Zero(t, st.Malformed)
	require.Zero(t, subjectCount(t, js, subjRejected), "rejection events")
	require.Zero(t, subjectCount(t, js, subjBadTokens), "bad-token events")
	require.Zero(t, streamState(t, js, jobsStream).Msgs)
	require.Equal(t, 0, w.stop(60*time.Second), "exit code")
	t.Logf("%d jobs delivered, %d duplicates at the gateway, %d connections", n, dups, st.Conns)
}
