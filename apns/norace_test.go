//go:build !race

package apns_test

import "time"

// The stress test's size and assumed-delivered window without the race
// detector; see race_test.go.
const (
	stressN      = 100_000
	stressWindow = 200 * time.Millisecond
)
