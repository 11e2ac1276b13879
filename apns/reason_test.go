package apns

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// reasonConstants returns the values of the Reason constants in reason.go.
func reasonConstants(t *testing.T) map[string]bool {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "reason.go", nil, 0)
	require.NoError(t, err)
	out := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Values) != 1 || !strings.HasPrefix(vs.Names[0].Name, "Reason") {
			return true
		}
		if lit, ok := vs.Values[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
			v, err := strconv.Unquote(lit.Value)
			require.NoError(t, err)
			out[v] = true
		}
		return true
	})
	require.NotEmpty(t, out)
	return out
}

// The one list holds every reason the engines give: Apple's HTTP/2 table
// and the binary statuses' names.
func TestReasonListComplete(t *testing.T) {
	t.Parallel()
	consts := reasonConstants(t)
	for sr := range reasonClasses {
		if sr.reason != "" {
			require.True(t, consts[sr.reason], "HTTP/2 reason %s has no constant", sr.reason)
		}
	}
	for st := range statusNames {
		require.True(t, consts[st.String()], "binary status %s has no constant", st)
	}
}

// The README lists every reason.
func TestReasonsInReadme(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	for r := range reasonConstants(t) {
		require.Contains(t, string(readme), "`"+r+"`", "README does not list %s", r)
	}
}

func TestReasonOf(t *testing.T) {
	t.Parallel()
	require.Empty(t, ReasonOf(nil))
	require.Empty(t, ReasonOf(ErrClosed))
	require.Equal(t, ReasonInvalidNotification, ReasonOf(ErrInvalidNotification))
	n := &Notification{Token: Token{1}, Payload: []byte(`{"aps":{},"aps":{}}`)}
	require.Equal(t, ReasonDuplicateKey, ReasonOf(n.Validate(HTTP2Limits)))
	n.Payload = []byte(`{"aps":[]}`)
	require.Equal(t, ReasonApsNotObject, ReasonOf(n.Validate(HTTP2Limits)))
}
