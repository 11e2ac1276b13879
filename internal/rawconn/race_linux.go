//go:build race

package rawconn

import "syscall"

// The race detector takes a write to a file descriptor as happening
// before every later read of one (the syscall package tells it so); raw
// system calls tell it nothing, so with -race a goroutine that hands data
// to another through a connection would be reported as racing with it.
// These make the syscall package's calls that tell it, and nothing else.

// raceReleaseIO: what this goroutine did so far happens before the
// reads of the bytes it is about to write. A write to no file descriptor.
func raceReleaseIO() { _, _ = syscall.Write(-1, nil) }

// raceAcquireIO: the read that just got bytes from fd happens after the
// writes that sent them. A zero-length read of a socket reads nothing.
func raceAcquireIO(fd uintptr) { _, _ = syscall.Read(int(fd), nil) }
