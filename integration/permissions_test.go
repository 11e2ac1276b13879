package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// workerPermissions are the NATS permissions the README (Operating it,
// "NATS permissions") lists for a worker on the default streams and
// durable: publish to these, subscribe to _INBOX.>.
var workerPermissions = []string{
	"$JS.API.INFO",
	"$JS.API.STREAM.INFO.APNS_JOBS", "$JS.API.STREAM.CREATE.APNS_JOBS", "$JS.API.STREAM.UPDATE.APNS_JOBS",
	"$JS.API.STREAM.MSG.GET.APNS_JOBS", "$JS.API.STREAM.MSG.DELETE.APNS_JOBS",
	"$JS.API.STREAM.INFO.APNS_EVENTS", "$JS.API.STREAM.CREATE.APNS_EVENTS", "$JS.API.STREAM.UPDATE.APNS_EVENTS",
	"$JS.API.CONSUMER.INFO.APNS_JOBS.apns-worker", "$JS.API.CONSUMER.CREATE.APNS_JOBS.apns-worker",
	"$JS.API.CONSUMER.MSG.NEXT.APNS_JOBS.apns-worker",
	"$JS.ACK.APNS_JOBS.apns-worker.>",
	"apns.events.>",
}

// TestLeastPrivilege: a worker whose NATS user has only the permissions
// the README lists sets up its streams and durable, delivers, rejects,
// refuses a malformed job, and sweeps an empty job with a Status header,
// without a single permissions violation.
func TestLeastPrivilege(t *testing.T) {
	js, url := natsWithLimitedUser(t, "worker", workerPermissions...)
	env := limitedEnv(mockEnv(url), "worker")
	env["APNS_WORKER_JOBS_ACK_WAIT"] = "2s" // the sweep's pace
	w := startWorker(t, "least-privilege", env)
	publishRaw(t, js, []byte(`{"id":"lp-1","token":"`+strings.Repeat("ab", 32)+`","payload":{"aps":{"alert":"hi"}}}`))
	publishRaw(t, js, []byte(`{"id":"lp-2","token":"`+mockBadToken+`","payload":{"aps":{"alert":"hi"}}}`))
	publishRaw(t, js, []byte("not json"))
	_, err := js.PublishMsg(ctxT(t, 10*time.Second), &nats.Msg{Subject: jobsSubject, Header: nats.Header{"Status": {"408"}}})
	require.NoError(t, err)
	waitDrained(t, js, 60*time.Second)
	require.Equal(t, 3, subjectCount(t, js, subjRejected), "rejections: the bad token, not json, the status-shaped job")
	require.Equal(t, 0, w.stop(30*time.Second), "exit code")
	require.NotContains(t, strings.ToLower(w.log.String()), "permissions violation", w.log.String())
}
