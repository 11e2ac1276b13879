package apns

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestValidateCollapseIDControl: a collapse id an HTTP/2 header value
// cannot carry (a control byte, a space at either end) is refused by
// Validate, for both protocols' limits, as InvalidCollapseId; other bytes,
// non-ASCII ones and inner spaces too, pass.
func TestValidateCollapseIDControl(t *testing.T) {
	t.Parallel()
	n := &Notification{Token: Token(bytes.Repeat([]byte{1}, 32)), Payload: []byte(`{"aps":{}}`)}
	for _, l := range []Limits{HTTP2Limits, BinaryLimits} {
		for _, id := range []string{"a\x00b", "a\r\nx-evil: 1", "\t", "\n", "a\x7f", "\x1f", " a", "a ", " "} {
			n.CollapseID = id
			err := n.Validate(l)
			require.ErrorIs(t, err, ErrInvalidCollapseID, "%q", id)
			require.Equal(t, ReasonInvalidCollapseID, ReasonOf(err), "%q", id)
		}
		for _, id := range []string{"", "a b", "order-42", "é", "~!", strings.Repeat("c", 64)} {
			n.CollapseID = id
			require.NoError(t, n.Validate(l), "%q", id)
		}
	}
}
