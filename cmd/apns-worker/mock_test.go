package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/config"
)

// startMockEnv runs mock-apns on free loopback ports until the test ends
// and returns the env file it wrote.
func startMockEnv(t *testing.T) (dir, env string) {
	t.Helper()
	dir = t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runMockAPNs(ctx, []string{"-binary", "127.0.0.1:0", "-feedback", "127.0.0.1:0", "-http2", "127.0.0.1:0", "-dir", dir})
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	envFile := filepath.Join(dir, "env")
	require.Eventually(t, func() bool { _, err := os.Stat(envFile); return err == nil }, 30*time.Second, 20*time.Millisecond)
	b, err := os.ReadFile(envFile)
	require.NoError(t, err)
	return dir, string(b)
}

// loadEnv loads the configuration from env's variable lines alone, with
// every other APNS_WORKER_* variable unset.
func loadEnv(t *testing.T, env string) (*config.Config, error) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, config.Prefix+"_") {
			t.Setenv(k, "")
			require.NoError(t, os.Unsetenv(k))
		}
	}
	for _, line := range strings.Split(env, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		require.True(t, ok, "line %q", line)
		t.Setenv(k, v)
	}
	return config.Load()
}

// TestMockEnvComplete: the env file mock-apns writes holds every variable
// a worker needs to reach its HTTP/2 server; config.Load accepts it as it
// is, with nothing else set.
func TestMockEnvComplete(t *testing.T) {
	dir, env := startMockEnv(t)
	c, err := loadEnv(t, env)
	require.NoError(t, err, "env file:\n%s", env)
	require.Equal(t, config.ModeHTTP2, c.APNs.Mode)
	require.True(t, c.APNs.TokenAuth())
	require.Equal(t, filepath.Join(dir, "AuthKey.p8"), c.APNs.P8File)
	require.True(t, strings.HasPrefix(c.APNs.Addr, "https://127.0.0.1:"), c.APNs.Addr)
}

// TestMockEnvBinary: the env file's binary alternative, done as its comment
// says (the commented lines in, the four token-auth lines out), is a
// binary-mode configuration for the mock's gateway and its feedback
// service, whose address it must give: with a gateway not Apple's the
// worker polls no feedback service unless told where.
func TestMockEnvBinary(t *testing.T) {
	dir, env := startMockEnv(t)
	_, binary, ok := strings.Cut(env, "# Binary protocol instead")
	require.True(t, ok, "env file:\n%s", env)
	var lines []string
	for _, line := range strings.Split(env, "\n") {
		switch k, _, _ := strings.Cut(line, "="); k {
		case "APNS_WORKER_APNS_P8_FILE", "APNS_WORKER_APNS_KEY_ID", "APNS_WORKER_APNS_TEAM_ID", "APNS_WORKER_APNS_TOPIC":
			continue // "unset the four token-auth lines"
		}
		lines = append(lines, line)
	}
	for _, line := range strings.Split(binary, "\n")[1:] {
		if v, ok := strings.CutPrefix(line, "# "); ok {
			lines = append(lines, v)
		}
	}
	c, err := loadEnv(t, strings.Join(lines, "\n"))
	require.NoError(t, err, "env file:\n%s", strings.Join(lines, "\n"))
	require.Equal(t, config.ModeBinary, c.APNs.Mode)
	require.Equal(t, filepath.Join(dir, "client.pem"), c.APNs.CertFile)
	require.True(t, strings.HasPrefix(c.APNs.Addr, "127.0.0.1:"), c.APNs.Addr)
	require.True(t, strings.HasPrefix(c.Feedback.Addr, "127.0.0.1:"), "feedback address %q", c.Feedback.Addr)
	require.NotEqual(t, c.APNs.Addr, c.Feedback.Addr)
}
