package gcfloor

import (
	"os"
	"testing"
)

// unsetenv unsets name for the test (t.Setenv first, so it is restored).
func unsetenv(t *testing.T, name string) {
	t.Helper()
	t.Setenv(name, "")
	if err := os.Unsetenv(name); err != nil {
		t.Fatal(err)
	}
}
