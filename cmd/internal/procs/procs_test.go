package procs

import (
	"context"
	"log/slog"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// recorder is a Governor whose decisions are recorded, not applied.
func recorder() (*Governor, *[]bool) {
	var sets []bool
	g := &Governor{set: func(one bool) { sets = append(sets, one) }, log: slog.New(slog.DiscardHandler)}
	return g, &sets
}

// TestLightLoadTakesOneP: DownAfter samples in a row below Down take one
// P; a sample at or above Down restarts the count.
func TestLightLoadTakesOneP(t *testing.T) {
	g, sets := recorder()
	for range DownAfter - 1 {
		require.False(t, g.Observe(0.2))
	}
	require.False(t, g.Observe(Down), "a busier sample restarts the count")
	for range DownAfter - 1 {
		require.False(t, g.Observe(0.3))
	}
	require.Empty(t, *sets)
	require.True(t, g.Observe(0.3))
	require.Equal(t, []bool{true}, *sets)
	require.True(t, g.Observe(0.01), "stays on one P")
	require.Equal(t, []bool{true}, *sets, "applied once")
}

// TestLoadAboveUpGivesTheDefaultBack: on one P, one sample above Up gives
// the runtime its default; loads between Down and Up keep whatever the
// governor runs on, so the two do not flap.
func TestLoadAboveUpGivesTheDefaultBack(t *testing.T) {
	g, sets := recorder()
	for range DownAfter {
		g.Observe(0)
	}
	require.True(t, g.Observe(Up), "at Up, one P still")
	require.False(t, g.Observe(Up+0.01))
	require.Equal(t, []bool{true, false}, *sets)
	for range 3 * DownAfter {
		require.False(t, g.Observe((Down+Up)/2), "between the thresholds: the default stays")
	}
	require.Equal(t, []bool{true, false}, *sets)
}

// TestRunStartsOnOnePAndRestoresTheDefault: Run takes one P before its
// first sample, and when its context ends it returns and leaves the runtime
// on its default P count.
func TestRunStartsOnOnePAndRestoresTheDefault(t *testing.T) {
	if runtime.GOMAXPROCS(0) <= 1 {
		t.Skip("the runtime's default is one P: Run has nothing to govern")
	}
	g, sets := recorder()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	g.Run(ctx)
	require.Equal(t, []bool{true, false}, *sets, "one P from the start, the default back at the end")
	require.False(t, g.one)
}
