// Package integration runs the worker process (cmd/apns-worker, built once
// in TestMain) against real embedded nats-servers with JetStream (file
// storage in temporary directories) and the apnstest servers.
package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// workerBin is the worker binary TestMain builds (without -race).
var workerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "apns-worker-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		os.Exit(1)
	}
	if err := buildWorker(dir); err != nil {
		fmt.Fprintln(os.Stderr, "integration: build the worker:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// buildWorker builds ./cmd/apns-worker from the module root into dir.
func buildWorker(dir string) error {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return fmt.Errorf("not in a module (GOMOD=%q)", gomod)
	}
	workerBin = filepath.Join(dir, "apns-worker")
	cmd := exec.Command("go", "build", "-o", workerBin, "./cmd/apns-worker")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w\n%s", err, out)
	}
	return nil
}
