//go:build !race

package rawconn

// Without the race detector there is nothing to tell it (race_linux.go).

func raceReleaseIO()        {}
func raceAcquireIO(uintptr) {}
func raceWriteRange([]byte) {}
func raceReadRange([]byte)  {}
