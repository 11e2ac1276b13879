//go:build race

package rawconn

import "syscall"

// With -race, the syscall package tells the race detector what each read
// and write did: that a write to a file descriptor happens before every
// later read of one, and which bytes of the buffer the call read or
// wrote. Raw system calls tell it nothing: a goroutine that hands data to
// another through a connection would be reported as racing with it, and
// a goroutine touching a buffer under a Read or Write would not be. These
// tell it, and do nothing else.

// raceReleaseIO: what this goroutine did so far happens before the
// reads of the bytes it is about to write. A write to no file descriptor.
func raceReleaseIO() { _, _ = syscall.Write(-1, nil) }

// raceAcquireIO: the read that just got bytes from fd happens after the
// writes that sent them. A zero-length read of a socket reads nothing.
func raceAcquireIO(fd uintptr) { _, _ = syscall.Read(int(fd), nil) }

// raceWriteRange: a raw read wrote into p. An instrumented copy reports
// writing (and reading) it.
func raceWriteRange(p []byte) { copy(p, p) }

// raceReadRange: a raw write read p. Copied out piece by piece, so that
// only reading p is reported.
func raceReadRange(p []byte) {
	var scratch [512]byte
	for len(p) > 0 {
		p = p[copy(scratch[:], p):]
	}
}
