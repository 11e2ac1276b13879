package consumer

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
)

// TestMaxPayloadOption: Options.MaxPayload (APNS_WORKER_APNS_MAX_PAYLOAD)
// is the limit jobs are checked against before the engine, for HTTP/2 as
// for binary. A payload over it never reaches the engine: it gets one
// rejection event, PayloadTooLarge, whose error names the configured
// limit; one at the limit is sent.
func TestMaxPayloadOption(t *testing.T) {
	tests := []struct {
		protocol     string
		maxPayload   int
		pushType     string
		fits, tooBig int // payload sizes
	}{
		{ProtocolHTTP2, 256, "", 256, 257},
		{ProtocolHTTP2, 256, "voip", 256, 257},    // a lower limit caps VoIP too
		{ProtocolHTTP2, 4096, "voip", 5120, 5121}, // the default keeps VoIP's 5120
		{ProtocolHTTP2, 0, "", 4096, 4097},        // unset: the protocol's limit
		{ProtocolBinary, 2048, "", 2048, 2049},
		{ProtocolBinary, 2048, "", 2048, 70000}, // not "limit 65535"
		{ProtocolMock, 256, "", 256, 257},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("%s/%d/%s", tt.protocol, tt.maxPayload, tt.pushType)
		t.Run(name, func(t *testing.T) {
			js, _ := startJS(t)
			eng := newFakeEngine(nil)
			opts := testOptions()
			opts.Protocol = tt.protocol
			opts.MaxPayload = tt.maxPayload
			startWorker(t, js, opts, eng)

			tok := tokHex(1)
			job := func(id string, size int) []byte {
				j := `{"id":"` + id + `","token":"` + tok + `","payload":` + string(sizedPayload(size))
				if tt.pushType != "" {
					j += `,"push_type":"` + tt.pushType + `","topic":"com.example.app.` + tt.pushType + `"`
				}
				return []byte(j + "}")
			}
			ctx := ctxT(t)
			for _, m := range []*nats.Msg{
				{Subject: "apns.jobs", Data: job("too-big", tt.tooBig)},
				{Subject: "apns.jobs", Data: job("fits", tt.fits)},
			} {
				_, err := js.PublishMsg(ctx, m)
				require.NoError(t, err)
			}
			require.Eventually(t, func() bool { return streamMsgs(t, js, "APNS_JOBS", "") == 0 },
				20*time.Second, 10*time.Millisecond)
			require.Equal(t, 1, eng.sentTotal(), "only the job within the limit reached the engine")

			evs := events[RejectionEvent](t, js, "apns.events.rejected")
			require.Len(t, evs, 1)
			e := evs[0]
			require.Equal(t, "too-big", e.JobID)
			require.True(t, e.Malformed)
			require.Equal(t, apns.ReasonPayloadTooLarge, e.Reason, e.Error)
			limit := tt.maxPayload
			switch {
			case tt.maxPayload == 0:
				limit = apns.HTTP2Limits.MaxPayload
			case tt.pushType == "voip" && tt.maxPayload >= apns.HTTP2Limits.MaxPayload:
				limit = apns.HTTP2Limits.MaxPayloadVoIP
			}
			require.True(t, strings.HasSuffix(e.Error, fmt.Sprintf("limit %d", limit)), "error %q names the limit %d", e.Error, limit)
			if len(job("too-big", tt.tooBig)) > MaxEventJob {
				require.True(t, e.JobTruncated)
				return
			}
			var j map[string]json.RawMessage
			require.NoError(t, json.Unmarshal(e.Job, &j), "the event carries the job")
		})
	}
}
