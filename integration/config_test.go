package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestConfigErrors: the worker process refuses bad variables, exits
// non-zero and names each bad variable on stderr (config's unit tests cover
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
			require.NotZero(t, code, "exit code; output:\n%s", out)
			for _, v := range tt.vars {
				require.Contains(t, out, v+":", "stderr names the variable")
			}
			require.NotContains(t, out, secret)
			require.NotContains(t, out, `"worker running"`)
			require.Less(t, strings.Count(out, "\n"), 20, "a short error, not a log:\n%s", out)
		})
	}
}
