//go:build unix

package integration

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestStartupDataDirNotWritable: a data dir that exists but that the
// worker's user cannot write (a host directory mounted into a container
// for another uid, say) ends start-up at once with exit code 2, naming the
// variable, the directory and the uid; before, start-up hung for 30 s and
// said nothing. Root writes anywhere, so under root the worker runs as
// nobody (uid 65534).
func TestStartupDataDirNotWritable(t *testing.T) {
	base := t.TempDir()
	dataDir := filepath.Join(base, "nats")
	require.NoError(t, os.Mkdir(dataDir, 0o755))
	require.NoError(t, os.Chmod(dataDir, 0o555))
	t.Cleanup(func() { _ = os.Chmod(dataDir, 0o755) }) // so that TempDir can remove it
	bin := workerBin
	var cred *syscall.Credential
	uid := os.Getuid()
	if uid == 0 {
		uid = 65534
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
		// nobody must reach the directory and run the binary: t.TempDir
		// and the built binary's directory are private to root.
		require.NoError(t, os.Chmod(base, 0o755))
		require.NoError(t, os.Chmod(filepath.Dir(base), 0o755))
		bin = filepath.Join(base, "apns-worker")
		copyFile(t, workerBin, bin, 0o755)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadEndWithin+5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Dir = base
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"APNS_WORKER_LOG_FORMAT=json",
		"APNS_WORKER_HTTP_ADDR=",
		"APNS_WORKER_EMBEDDED_LISTEN=" + freeAddr(t),
		"APNS_WORKER_EMBEDDED_DATA_DIR=" + dataDir,
	}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "%s", out)
	require.Equal(t, 2, ee.ExitCode(), "log:\n%s", out)
	require.Less(t, took, deadEndWithin, "log:\n%s", out)
	last := lastLine(string(out))
	require.Contains(t, last, `"msg":"cannot start"`)
	require.Contains(t, last, `"var":"APNS_WORKER_EMBEDDED_DATA_DIR"`)
	require.Contains(t, last, `"value":"`+dataDir+`"`)
	require.Contains(t, last, "not writable by this process (uid ")
	require.Contains(t, last, "permission denied")
	t.Logf("exit 2 after %s: %s", took.Round(time.Millisecond), last)
}

// copyFile copies src to dst with mode perm.
func copyFile(tb testing.TB, src, dst string, perm os.FileMode) {
	tb.Helper()
	in, err := os.Open(src)
	require.NoError(tb, err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	require.NoError(tb, err)
	_, err = io.Copy(out, in)
	require.NoError(tb, err)
	require.NoError(tb, out.Close())
}
