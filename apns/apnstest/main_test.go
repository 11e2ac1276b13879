package apnstest

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// test server's Close must wait for all of its goroutines.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
