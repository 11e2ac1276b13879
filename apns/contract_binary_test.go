package apns_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/enginetest"
)

// binaryPending lists the contract cases the binary engine fails, with
// what is wrong: none.
var binaryPending = map[string]string{}

// TestContractBinary runs the engine contract suite against the binary engine.
func TestContractBinary(t *testing.T) {
	enginetest.Run(t, enginetest.Features{Protocol: enginetest.Binary, Pending: binaryPending},
		func(t *testing.T, s enginetest.Server, opts ...apns.Option) apns.Engine {
			e, err := apns.NewBinaryEngine(s.Gateway.Addr, s.Gateway.ClientCert(), append([]apns.Option{
				apns.WithRootCAs(s.Gateway.RootCAs()),
				apns.WithAssumeDelivered(testWindow),
				apns.WithReconnectBackoff(5*time.Millisecond, 50*time.Millisecond),
			}, opts...)...)
			require.NoError(t, err)
			return e
		})
}
