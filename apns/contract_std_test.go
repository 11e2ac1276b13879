package apns_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/enginetest"
)

// stdPending lists the contract cases the reference engine fails, with
// what is wrong: delete a line to run its case. Where x/net's Transport
// itself behaves otherwise, the case stays pending: the reference is x/net.
var stdPending = map[string]string{
	"ExactlyOneOutcome/InvalidSettingsMaxFrameSize0":        xnetNoGoAway,
	"ExactlyOneOutcome/InvalidSettingsMaxFrameSizeTooLarge": xnetNoGoAway,
	"ExactlyOneOutcome/InvalidSettingsInitialWindowSize":    xnetNoGoAway,
	"ExactlyOneOutcome/InvalidSettingsEnablePush2":          xnetNoGoAway,
}

const xnetNoGoAway = "x/net's Transport ends the connection on an invalid SETTINGS but does not always send GOAWAY with the code first (every notification still ends once)"

// TestContractStd runs the engine contract suite against the reference engine on x/net.
func TestContractStd(t *testing.T) {
	enginetest.Run(t, enginetest.Features{Protocol: enginetest.HTTP2, Pending: stdPending},
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
