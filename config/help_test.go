package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestUsageListsEveryVariable: the -h table has one line per variable Load
// reads, each with its default and a meaning.
func TestUsageListsEveryVariable(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, Usage(&b))
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	names := Names()
	require.Len(t, names, 53)
	require.Len(t, lines, len(names)+1, "a header and one line per variable:\n%s", b.String())
	for i, name := range names {
		f := strings.Fields(lines[i+1])
		require.Equal(t, name, f[0])
		require.GreaterOrEqual(t, len(f), 3, "line %q: default and meaning", lines[i+1])
	}
	require.Regexp(t, `APNS_WORKER_JOBS_ACK_WAIT +10s +\S`, b.String())
	require.Regexp(t, `APNS_WORKER_NATS_CONNECT_TIMEOUT +30s +\S`, b.String())
	require.Regexp(t, `APNS_WORKER_NATS_URL +- +\S`, b.String())
}

func TestUnknownVars(t *testing.T) {
	env := []string{
		"APNS_WORKER_NATS_URL=nats://x:4222", // known
		"APNS_WORKER_APNS_CON=8",             // misspelt
		"APNS_WORKER_JOBS_ACKWAIT=5s",        // misspelt
		"APNS_WORKER_BENCH_ONLY=1",           // known to the caller
		"PATH=/bin",                          // not ours
		"APNS_WORKERS_MODE=mock",             // another prefix
	}
	got := UnknownVars(env, "APNS_WORKER_BENCH_ONLY")
	require.Equal(t, []Unknown{
		{Name: "APNS_WORKER_APNS_CON", Nearest: "APNS_WORKER_APNS_CONNS"},
		{Name: "APNS_WORKER_JOBS_ACKWAIT", Nearest: "APNS_WORKER_JOBS_ACK_WAIT"},
	}, got)
	require.Equal(t, 3, levenshtein("kitten", "sitting"))
	require.Equal(t, 0, levenshtein("", ""))
}

// TestLogAbsolutePaths: the logged config names files by absolute path,
// whatever the working directory.
func TestLogAbsolutePaths(t *testing.T) {
	setEnv(t, map[string]string{"EMBEDDED_DATA_DIR": "./data/nats"})
	c, err := Load()
	require.NoError(t, err)
	wd, err := os.Getwd()
	require.NoError(t, err)
	require.Contains(t, c.String(), "embedded.data_dir="+filepath.Join(wd, "data", "nats"))
	require.Equal(t, "./data/nats", c.Embedded.DataDir, "the setting itself is kept as given")
}
