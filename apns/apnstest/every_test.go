package apnstest

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEvery(t *testing.T) {
	t.Parallel()
	hits := func(e *every, n int) []int {
		var at []int
		for i := 1; i <= n; i++ {
			if e.hit() {
				at = append(at, i)
			}
		}
		return at
	}
	require.Equal(t, []int{3, 6, 9}, hits(newEvery(3, false, 0), 10))

	a, b := hits(newEvery(100, true, 7), 100_000), hits(newEvery(100, true, 7), 100_000)
	require.Equal(t, a, b, "the same seed gives the same intervals")
	require.NotEqual(t, a, hits(newEvery(100, true, 8), 100_000))
	prev, lo, hi := 0, 1000, 0
	for _, at := range a {
		d := at - prev
		lo, hi, prev = min(lo, d), max(hi, d), at
	}
	require.GreaterOrEqual(t, lo, 50)
	require.LessOrEqual(t, hi, 150)
	require.Less(t, lo, 60, "intervals spread over [n/2, 3n/2]")
	require.Greater(t, hi, 140)
}
