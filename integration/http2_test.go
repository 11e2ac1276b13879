package integration

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
	"github.com/jetpush/apns-worker/consumer"
)

// TestHTTP2Mode runs the worker in HTTP/2 mode with token auth (the test
// server's .p8 key, key id, team id and topic) against the HTTP/2 test
// server: jobs are delivered; 410 Unregistered and 400 BadDeviceToken reach
// the rejected and the bad-tokens subjects; 400 DeviceTokenNotForTopic is a
// rejection but not a bad token.
func TestHTTP2Mode(t *testing.T) {
	const n = 500
	tok := func(i int) apns.Token { return token(0xc0, i) }
	type reject struct {
		status   int
		reason   string
		badToken bool
	}
	rejects := map[int]reject{
		100: {410, "Unregistered", true},
		200: {400, "BadDeviceToken", true},
		300: {400, "DeviceTokenNotForTopic", false},
	}
	var opts []apnstest.HTTP2Option
	for i, r := range rejects {
		opts = append(opts, apnstest.HTTP2Reason(tok(i), r.status, r.reason))
	}
	h2 := apnstest.NewHTTP2Server(opts...)
	t.Cleanup(h2.Close)
	dir := t.TempDir()
	ca, p8 := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "AuthKey.p8")
	require.NoError(t, os.WriteFile(ca, h2.PKI.CAPEM, 0o600))
	require.NoError(t, os.WriteFile(p8, h2.P8(), 0o600))

	ns := startNATS(t)
	_, js := connect(t, ns.ClientURL())
	w := startWorker(t, "http2", map[string]string{
		"APNS_WORKER_NATS_URL":      ns.ClientURL(),
		"APNS_WORKER_APNS_MODE":     "http2",
		"APNS_WORKER_APNS_ADDR":     h2.URL,
		"APNS_WORKER_APNS_CA_FILE":  ca,
		"APNS_WORKER_APNS_P8_FILE":  p8,
		"APNS_WORKER_APNS_KEY_ID":   h2.KeyID,
		"APNS_WORKER_APNS_TEAM_ID":  h2.TeamID,
		"APNS_WORKER_APNS_TOPIC":    "com.example.app",
		"APNS_WORKER_JOBS_BACKOFF":  "200ms,1s",
		"APNS_WORKER_MAX_IN_FLIGHT": "1000",
	})
	jobs := publishJobs(t, js, "h2", n, tok)
	waitDrained(t, js, 90*time.Second)

	byID := map[string]int{}
	for i, j := range jobs {
		byID[j.ID] = i
		if _, ok := rejects[i]; ok {
			require.Zero(t, h2.AcceptedFor(j.Token), "job %s", j.ID)
			continue
		}
		require.GreaterOrEqual(t, h2.AcceptedFor(j.Token), 1, "job %s not delivered", j.ID)
	}
	st := h2.Statuses()
	require.Equal(t, 1, st[410], "statuses %v", st)
	require.Equal(t, 2, st[400], "statuses %v", st)
	require.Equal(t, 1, h2.Mints(), "one JWT for the process")

	rej := readEvents[consumer.RejectionEvent](t, js, subjRejected)
	require.Len(t, rej, len(rejects))
	for _, ev := range rej {
		i, ok := byID[ev.JobID]
		require.True(t, ok, "event for unknown job %q", ev.JobID)
		r, ok := rejects[i]
		require.True(t, ok, "rejection event for job %s", ev.JobID)
		require.Equal(t, r.reason, ev.Reason)
		require.Equal(t, r.status, ev.HTTPStatus)
		require.Equal(t, "http2", ev.Protocol)
		require.Equal(t, jobs[i].Token.String(), ev.Token)
		require.JSONEq(t, jobJSON(t, jobs[i]), string(ev.Job))
		if r.status == 410 {
			require.False(t, ev.Timestamp.IsZero(), "410 carries APNs' timestamp")
		}
	}
	var wantBad, gotBad []string
	for i, r := range rejects {
		if r.badToken {
			wantBad = append(wantBad, tok(i).String())
		}
	}
	for _, ev := range readEvents[consumer.BadTokenEvent](t, js, subjBadTokens) {
		gotBad = append(gotBad, ev.Token)
		require.Equal(t, consumer.SourceRejection, ev.Source)
		require.Equal(t, rejects[byID[ev.JobID]].reason, ev.Reason)
	}
	require.ElementsMatch(t, wantBad, gotBad, "410 Unregistered and 400 BadDeviceToken are bad tokens")
	require.Equal(t, 0, w.stop(60*time.Second), "exit code")
}
