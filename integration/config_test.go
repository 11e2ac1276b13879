package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/config"
)

// TestConfigErrors: the worker process refuses bad variables, exits 2
// and names each bad variable on stderr (config's unit tests cover
// every variable; this checks the process path). Secrets stay out.
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	require.NoError(t, os.WriteFile(garbage, []byte("not a key\n"), 0o600))
	const secret = "hunter2-do-not-log"
	tests := []struct {
		name string
		env  map[string]string
		vars []string // named on stderr
	}{
		{"nats url scheme", map[string]string{"APNS_WORKER_NATS_URL": "ftp://127.0.0.1:4222"}, []string{"APNS_WORKER_NATS_URL"}},
		{"mode", map[string]string{"APNS_WORKER_APNS_MODE": "pigeon"}, []string{"APNS_WORKER_APNS_MODE"}},
		{"duration", map[string]string{"APNS_WORKER_JOBS_ACK_WAIT": "soon"}, []string{"APNS_WORKER_JOBS_ACK_WAIT"}},
		{"missing certificate", map[string]string{
			"APNS_WORKER_APNS_MODE": "binary", "APNS_WORKER_APNS_CERT_FILE": filepath.Join(dir, "missing.p12"),
		}, []string{"APNS_WORKER_APNS_CERT_FILE"}},
		{"bad p8", map[string]string{
			"APNS_WORKER_APNS_MODE": "http2", "APNS_WORKER_APNS_P8_FILE": garbage,
			"APNS_WORKER_APNS_KEY_ID": "ABCDE12345", "APNS_WORKER_APNS_TEAM_ID": "TEAM123456", "APNS_WORKER_APNS_TOPIC": "com.example.app",
		}, []string{"APNS_WORKER_APNS_P8_FILE"}},
		{"replicas", map[string]string{"APNS_WORKER_REPLICAS": "9"}, []string{"APNS_WORKER_REPLICAS"}},
		{"several at once", map[string]string{
			"APNS_WORKER_MAX_IN_FLIGHT": "-5", "APNS_WORKER_SHUTDOWN_GRACE": "1 minute", "APNS_WORKER_LOG_LEVEL": "loud",
		}, []string{"APNS_WORKER_MAX_IN_FLIGHT", "APNS_WORKER_SHUTDOWN_GRACE", "APNS_WORKER_LOG_LEVEL"}},
		{"password without user", map[string]string{
			"APNS_WORKER_NATS_URL": "nats://127.0.0.1:4222", "APNS_WORKER_NATS_PASSWORD": secret,
		}, []string{"APNS_WORKER_NATS_USER"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := spawnWorker(t, "config", tt.env)
			code := w.wait(60 * time.Second)
			out := w.log.String()
			require.Equal(t, 2, code, "exit code; output:\n%s", out)
			for _, v := range tt.vars {
				require.Contains(t, out, v+":", "stderr names the variable")
			}
			require.NotContains(t, out, secret)
			require.NotContains(t, out, `"worker running"`)
			require.Less(t, strings.Count(out, "\n"), 20, "a short error, not a log:\n%s", out)
		})
	}
}

// TestReadmeConfigTable: the README's table of variables (its
// Configuration section) has a row for every variable the worker reads and
// none other; each row's default is the one `apns-worker -h` prints, and
// each default the image sets (the Dockerfile's ENV) is named in the row
// as the image's.
func TestReadmeConfigTable(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(b), "\n## Configuration\n")
	require.True(t, ok, "README has no Configuration section")
	section, _, _ = strings.Cut(section, "\n## ")
	rows := map[string]string{} // variable → its default cell
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `APNS_WORKER_") {
			continue
		}
		cells := strings.Split(strings.TrimSuffix(strings.TrimPrefix(line, "|"), "|"), "|")
		require.Len(t, cells, 4, "row %q: variable, default, example, meaning", line)
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		name := strings.Trim(cells[0], "`")
		require.NotContains(t, rows, name, "two rows for %s", name)
		rows[name] = cells[1]
	}

	var usage bytes.Buffer
	require.NoError(t, config.Usage(&usage))
	defaults := map[string]string{}
	for _, line := range strings.Split(usage.String(), "\n")[1:] {
		if f := strings.Fields(line); len(f) >= 2 {
			defaults[f[0]] = f[1]
		}
	}
	for _, name := range config.Names() {
		cell, ok := rows[name]
		require.True(t, ok, "README has no row for %s", name)
		if def := defaults[name]; def != "-" {
			require.True(t, strings.HasPrefix(cell, "`"+def+"`"), "%s: README default %q, the worker's %q", name, cell, def)
		}
		delete(rows, name)
	}
	require.Empty(t, rows, "README rows for variables the worker does not read")

	for _, in := range parseDockerfile(t, filepath.Join(repoRoot(t), "Dockerfile")) {
		if in.Cmd != "ENV" {
			continue
		}
		for _, kv := range strings.Fields(in.Args) {
			name, val, _ := strings.Cut(kv, "=")
			if strings.HasPrefix(name, "APNS_WORKER_") {
				require.Contains(t, readmeRow(t, string(b), name), "`"+val+"` in the image", "README row of %s", name)
			}
		}
	}
}

// readmeRow returns the README's table row for variable name.
func readmeRow(tb testing.TB, readme, name string) string {
	tb.Helper()
	for _, line := range strings.Split(readme, "\n") {
		if strings.HasPrefix(line, "| `"+name+"` |") {
			return line
		}
	}
	tb.Fatalf("README has no row for %s", name)
	return ""
}
