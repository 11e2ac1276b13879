package enginetest

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheckPending(t *testing.T) {
	t.Parallel()
	for _, proto := range []Protocol{Binary, HTTP2} {
		all := applicable(proto)
		require.NoError(t, checkPending(Features{Protocol: proto, Pending: map[string]string{
			"SendSemantics/DoneContext":           "x",
			"ExactlyOneOutcome/NoFault":           "x",
			"CloseSemantics/Drains":               "x",
			"ExactlyOneOutcome/SilentCloseRandom": "x",
		}}, all))
		err := checkPending(Features{Protocol: proto, Pending: map[string]string{"SendSemantics/Typo": "x"}}, all)
		require.ErrorContains(t, err, `"SendSemantics/Typo"`)
	}
	// Features of one protocol are not cases of the other.
	require.Error(t, checkPending(Features{Protocol: Binary, Pending: map[string]string{"CredentialsGate": "x"}}, applicable(Binary)))
	require.NoError(t, checkPending(Features{Protocol: HTTP2, Pending: map[string]string{"CredentialsGate": "x"}}, applicable(HTTP2)))
	require.Error(t, checkPending(Features{Protocol: HTTP2, Pending: map[string]string{"SilentCloseBoundedResends/Every1000": "x"}}, applicable(HTTP2)))
}

func TestFaultCaseNamesAreUnique(t *testing.T) {
	t.Parallel()
	for _, fcs := range [][]faultCase{binaryFaults(), http2Faults()} {
		seen := map[string]bool{}
		for _, fc := range fcs {
			require.False(t, seen[fc.name], fc.name)
			seen[fc.name] = true
		}
	}
}

func TestToken(t *testing.T) {
	t.Parallel()
	require.False(t, isBad(token(7, false)))
	require.True(t, isBad(token(7, true)))
	require.NotEqual(t, token(1, false), token(2, false))
	require.Len(t, token(1, false), 32)
}
