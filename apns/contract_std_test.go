package apns_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/enginetest"
)

// stdNoGoAwayCode is why the reference engine is not held to answering an
// invalid SETTINGS with a GOAWAY carrying the code: x/net's Transport ends
// the connection, but does not always send that GOAWAY first. Every
// notification still ends once, which the cases check.
const stdNoGoAwayCode = "x/net's Transport ends the connection on an invalid SETTINGS but does not always send GOAWAY with the code first"

// stdHidesConnectionFields is why the reference engine is not held to
// refusing a response with a connection-specific field: x/net's Transport
// deletes them from the response before the engine sees it (te, which it
// keeps, the engine checks itself).
const stdHidesConnectionFields = "x/net's Transport deletes connection-specific response fields, so the std engine cannot see them"

// TestContractStd runs the engine contract suite against the reference engine on x/net.
func TestContractStd(t *testing.T) {
	enginetest.Run(t, enginetest.Features{Protocol: enginetest.HTTP2, NoGoAwayCode: stdNoGoAwayCode, HidesConnectionFields: stdHidesConnectionFields},
		func(t *testing.T, s enginetest.Server, opts ...apns.Option) apns.Engine {
			key, err := apns.ParseP8(s.HTTP2.P8())
			require.NoError(t, err)
			e, err := apns.NewStdEngine(s.HTTP2.URL, apns.TokenAuth(key, s.HTTP2.KeyID, s.HTTP2.TeamID), append([]apns.Option{
				apns.WithRootCAs(s.HTTP2.RootCAs()),
				apns.WithTopic(enginetest.Topic),
				apns.WithRetryBackoff(time.Millisecond, 10*time.Millisecond),
			}, opts...)...)
			require.NoError(t, err)
			apns.SetStdCredentialsProbeForTest(e, 50*time.Millisecond)
			return e
		})
}
