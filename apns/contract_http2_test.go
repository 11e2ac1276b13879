package apns_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/enginetest"
)

// http2Pending lists the contract cases the HTTP/2 engine fails, with what
// is wrong: none.
var http2Pending = map[string]string{}

// TestContractHTTP2 runs the engine contract suite against the HTTP/2
// engine, with direct socket calls (the default) and with the net
// package's (WithDirectSocketCalls(false)).
func TestContractHTTP2(t *testing.T) {
	for _, direct := range []bool{true, false} {
		t.Run(socketCalls(direct), func(t *testing.T) {
			enginetest.Run(t, enginetest.Features{Protocol: enginetest.HTTP2, Pending: http2Pending},
				func(t *testing.T, s enginetest.Server, opts ...apns.Option) apns.Engine {
					key, err := apns.ParseP8(s.HTTP2.P8())
					require.NoError(t, err)
					e, err := apns.NewHTTP2Engine(s.HTTP2.URL, apns.TokenAuth(key, s.HTTP2.KeyID, s.HTTP2.TeamID), append([]apns.Option{
						apns.WithRootCAs(s.HTTP2.RootCAs()),
						apns.WithTopic(enginetest.Topic),
						apns.WithRetryBackoff(time.Millisecond, 10*time.Millisecond),
						apns.WithDirectSocketCalls(direct),
					}, opts...)...)
					require.NoError(t, err)
					apns.SetCredentialsProbeForTest(e, 50*time.Millisecond)
					return e
				})
		})
	}
}

// socketCalls names a WithDirectSocketCalls setting in subtest names.
func socketCalls(direct bool) string {
	if direct {
		return "direct socket calls"
	}
	return "runtime socket calls"
}
