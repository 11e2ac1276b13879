package enginetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// silentCloseCases: a gateway that closes silently every N frames, at full
// rate, with the binary engine's default assumed-delivered window (5s): the
// gateway may see each notification at most twice in total.
func silentCloseCases() []scenario {
	var out []scenario
	for _, n := range []int{1000, 2000, 5000} {
		out = append(out, scenario{fmt.Sprintf("Every%d", n), func(t *testing.T, e *env) {
			k := 4 * n
			srv := e.server(gw(apnstest.CloseEvery(n), apnstest.CountOnly()))
			eng, col := e.engine(srv, apns.WithAssumeDelivered(5*time.Second))
			accepted := sendAll(t, e.ctx, eng, k, false)
			col.wait(t, e.ctx, len(accepted))
			_, err := closeBounded(t, e.ctx, eng, 10*time.Second)
			require.NoError(t, err)
			got := col.exactlyOne(t, accepted)
			failed, example := 0, ""
			for _, o := range got {
				if o.Err != nil {
					if failed++; failed == 1 {
						example = firstLine(o.Err.Error(), 200)
					}
				}
			}
			st := srv.Gateway.Stats()
			require.Positive(t, st.SilentCloses)
			assert.LessOrEqualf(t, st.Accepted, 2*k, "sends for %d notifications (%d silent closes)", k, st.SilentCloses)
			assert.Zerof(t, failed, "notifications failed (of %d), e.g. %s", k, example)
		}})
	}
	return out
}
