//go:build race

package apns_test

import "time"

// Under the race detector the engine and the test gateway run several times
// slower, and on a busy machine the gateway can read a frame long after it
// was written: a frame read after the assumed-delivered window would be
// reported delivered although the gateway rejects it. So the windows are
// longer. (The stress test keeps its 100 000 notifications: about 30 s
// under -race on 2 shared cores.)
const (
	// testWindow is the assumed-delivered window of most tests: short, so
	// they finish quickly, and long enough for the test gateway on busy
	// cores to answer before the engine assumes delivery.
	testWindow = time.Second

	stressWindow = testWindow
)
