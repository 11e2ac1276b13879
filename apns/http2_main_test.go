package apns_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test of package apns (internal or external)
// leaves a goroutine behind. With APNS_HTTP2_BENCH_SERVER set, the binary
// is instead the HTTP/2 test server process of BenchmarkHTTP2.
func TestMain(m *testing.M) {
	if os.Getenv(benchServerEnv) != "" {
		runBenchServer()
		return
	}
	goleak.VerifyTestMain(m)
}
