package apns_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test of package apns (internal or external)
// leaves a goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
