//go:build !unix

package worker

// lockDir does not lock where flock is missing.
func lockDir(string) (unlock func(), err error) { return func() {}, nil }
