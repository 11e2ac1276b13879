//go:build !race

package apns_test

import "time"

// Assumed-delivered windows without the race detector; see race_test.go.
const (
	// testWindow is the assumed-delivered window of most tests: short, so
	// they finish quickly, and long enough for the test gateway on busy
	// cores to answer before the engine assumes delivery.
	testWindow = 250 * time.Millisecond

	stressWindow = testWindow
)
