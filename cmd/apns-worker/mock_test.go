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

// TestMockEnvComplete: the env file mock-apns writes holds every variable
// a worker needs to reach its HTTP/2 server; config.Load accepts it as it
// is, with nothing else set.
func TestMockEnvComplete(t *testing.T) {
	dir := t.TempDir()
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

	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, config.Prefix+"_") {
			t.Setenv(k, "")
			require.NoError(t, os.Unsetenv(k))
		}
	}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		require.True(t, ok, "line %q", line)
		t.Setenv(k, v)
	}
	c, err := config.Load()
	require.NoError(t, err, "env file:\n%s", b)
	require.Equal(t, config.ModeHTTP2, c.APNs.Mode)
	require.True(t, c.APNs.TokenAuth())
	require.Equal(t, filepath.Join(dir, "AuthKey.p8"), c.APNs.P8File)
	require.True(t, strings.HasPrefix(c.APNs.Addr, "https://127.0.0.1:"), c.APNs.Addr)
}
