//go:build race

package apns_test

import "time"

// Under the race detector the engine and the test gateway run several times
// slower, and on a busy machine the gateway can read a frame long after it
// was written. The stress test then sends fewer notifications (100 000 take
// well over a minute) and waits longer before assuming one delivered (a
// frame read after the window would be reported delivered and rejected).
const (
	// testWindow is the assumed-delivered window of most tests: short, so
	// they finish quickly, and long enough for the test gateway on busy
	// cores to answer before the engine assumes delivery.
	testWindow = time.Second

	stressN      = 40_000
	stressWindow = testWindow
)
