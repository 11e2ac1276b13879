package gcfloor

import (
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, tt := range []struct {
		name              string
		floor, live, root uint64
		base, want        int
	}{
		{"small heap: the minimum heap reaches the floor", 32 * mib, 1 * mib, 1 * mib, 100, 800}, // 4 MiB × 8
		{"goal at the floor", 64 * mib, 8 * mib, 8 * mib, 100, 350},                              // 8 + 16 × 3.5 = 64
		{"rounded up", 64 * mib, 7 * mib, 9 * mib, 100, 357},                                     // 57/16 = 3.5625
		{"half the floor: GOGC's own", 32 * mib, 16 * mib, 0, 100, 100},                          // (32−16)/16 = 1
		{"above the floor", 32 * mib, 64 * mib, 1 * mib, 100, 100},                               // nothing to raise
		{"never below the base", 32 * mib, 15 * mib, 1 * mib, 400, 400},                          // 17/16 < 4
		{"bounded", 1 << 50, 1, 0, 100, maxPercent},                                              // a near-empty heap, a huge floor
		{"nothing scanned yet", 32 * mib, 0, 0, 100, 100},                                        // before any cycle
		{"roots count", 32 * mib, 2 * mib, 30 * mib, 100, 100},                                   // 30/32 < 1
		{"a floor below the minimum heap", 2 * mib, 512 << 10, 0, 100, 100},                      // 4 MiB already
	} {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, percent(tt.floor, tt.live, tt.root, tt.base))
		})
	}
}

// runtimeGoal is the heap goal Go's pacer sets for GOGC p after a cycle
// that marked live with roots of stacks and globals (runtime/mgcpacer.go,
// gcControllerState.commit and setGCPercent): live + (live + roots) × p/100,
// at least minHeap × p/100.
func runtimeGoal(live, roots uint64, p int) uint64 {
	return max(live+(live+roots)*uint64(p)/100, minHeap*uint64(p)/100)
}

// TestPercentMeetsTheRuntime: for every floor the configuration allows (up
// to 65 536 MiB) and a live heap below it, the GOGC percent returns puts
// the runtime's goal at the floor or above, and one less would not (unless
// it is the base).
func TestPercentMeetsTheRuntime(t *testing.T) {
	const mib = 1 << 20
	for _, floor := range []uint64{1 * mib, 4 * mib, 32 * mib, 256 * mib, 4096 * mib, 8192 * mib, 65536 * mib} {
		for _, live := range []uint64{64 << 10, 1 * mib, 3 * mib, 15 * mib, 200 * mib, 5000 * mib} {
			for _, roots := range []uint64{0, 300 << 10, 4 * mib} {
				if live >= floor {
					continue
				}
				p := percent(floor, live, roots, 100)
				require.GreaterOrEqual(t, runtimeGoal(live, roots, p), floor, "floor %d MiB, live %d KiB, roots %d KiB: GOGC %d", floor/mib, live>>10, roots>>10, p)
				if p > 100 {
					require.Less(t, runtimeGoal(live, roots, p-1), floor, "floor %d MiB, live %d KiB, roots %d KiB: GOGC %d is not the least", floor/mib, live>>10, roots>>10, p)
				}
			}
		}
	}
}

// report sends each GOGC the floor computes to tuned, never blocking the
// finalizer goroutine (a full channel drops it).
func report(tuned chan<- int) func(int) {
	return func(p int) {
		select {
		case tuned <- p:
		default:
		}
	}
}

// gogc reads GOGC and the heap goal now.
func gogc() (percent int, goal uint64) {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}, {Name: "/gc/heap/goal:bytes"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64()), s[1].Value.Uint64()
}

// waitTune runs collections until the floor's finalizer reports a GOGC.
func waitTune(t *testing.T, tuned <-chan int) int {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		runtime.GC()
		select {
		case p := <-tuned:
			return p
		case <-deadline:
			t.Fatal("no collection ran the floor's finalizer")
		default:
			runtime.Gosched() // the finalizer goroutine's turn
		}
	}
}

// TestKeepRaisesTheGoal: on a small heap, after a collection, GOGC is
// raised so that the heap goal is at least the floor; stop restores GOGC.
func TestKeepRaisesTheGoal(t *testing.T) {
	unsetenv(t, "GOGC")
	before, _ := gogc()
	const floor = 256 << 20
	tuned := make(chan int, 16)
	stop := keep(floor, slog.Default(), report(tuned))
	t.Cleanup(stop) // GOGC restored even if the test fails part-way
	p := waitTune(t, tuned)
	require.Greater(t, p, before, "a test binary's heap is far below 256 MiB")
	now, goal := gogc()
	require.Equal(t, p, now)
	require.GreaterOrEqual(t, goal, uint64(floor), "the goal reaches the floor")
	require.Less(t, goal, uint64(floor)*5/4, "and not far past it")

	stop()
	now, _ = gogc()
	require.Equal(t, before, now, "stop restores GOGC")
	runtime.GC()
	runtime.GC()
	now, _ = gogc()
	require.Equal(t, before, now, "and the finalizer stops tuning")
}

// TestKeepLeavesALargeHeap: with the live heap at half the floor or more,
// GOGC stays as it was.
func TestKeepLeavesALargeHeap(t *testing.T) {
	unsetenv(t, "GOGC")
	before, _ := gogc()
	live := make([]byte, 16<<20)
	for i := range live {
		live[i] = byte(i) // touched, and kept below
	}
	tuned := make(chan int, 16)
	stop := keep(16<<20, slog.Default(), report(tuned))
	defer stop()
	require.Equal(t, before, waitTune(t, tuned))
	now, _ := gogc()
	require.Equal(t, before, now)
	runtime.KeepAlive(live)
}

// TestKeepOff: a floor of 0, an explicit GOGC, or GC turned off leave GOGC
// alone and run no finalizer.
func TestKeepOff(t *testing.T) {
	before, _ := gogc()
	tuned := make(chan int, 16)
	keep(0, slog.Default(), report(tuned))()

	t.Setenv("GOGC", "150")
	stop := keep(256<<20, slog.Default(), report(tuned))
	runtime.GC()
	runtime.GC()
	stop()

	unsetenv(t, "GOGC")
	old := debug.SetGCPercent(-1)
	stop = keep(256<<20, slog.Default(), report(tuned))
	now, _ := gogc()
	debug.SetGCPercent(old)
	stop()
	require.Equal(t, -1, now, "GC stays off")

	runtime.GC()
	select {
	case p := <-tuned:
		t.Fatalf("tuned to %d", p)
	default:
	}
	now, _ = gogc()
	require.Equal(t, before, now)
}

// TestKeepEmptyGOGC: an empty GOGC is the runtime's default, not an explicit
// choice: the floor applies.
func TestKeepEmptyGOGC(t *testing.T) {
	t.Setenv("GOGC", "")
	before, _ := gogc()
	tuned := make(chan int, 16)
	stop := keep(256<<20, slog.Default(), report(tuned))
	t.Cleanup(stop)
	require.Greater(t, waitTune(t, tuned), before)
}
