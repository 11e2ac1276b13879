//go:build !unix

package procs

import "time"

// cpuTime is not known here: Run leaves GOMAXPROCS to the runtime.
func cpuTime() (time.Duration, bool) { return 0, false }
