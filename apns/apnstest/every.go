package apnstest

import mrand "math/rand/v2"

// every counts events and says which ones end an interval: every n-th, or,
// when random, after intervals drawn uniformly from [n/2, 3n/2] by a
// generator seeded with seed, so a run can be replayed. It is not safe for
// concurrent use.
type every struct {
	n    int64
	rnd  *mrand.Rand // nil: fixed intervals
	left int64       // events until the next hit
}

func newEvery(n int64, random bool, seed uint64) *every {
	e := &every{n: n}
	if random {
		e.rnd = mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	}
	e.left = e.interval()
	return e
}

func (e *every) interval() int64 {
	if e.rnd == nil || e.n < 2 {
		return e.n
	}
	lo := e.n / 2
	return lo + e.rnd.Int64N(e.n+1) // lo … lo+n, i.e. [n/2, 3n/2]
}

// hit counts one event and reports whether it ends an interval.
func (e *every) hit() bool {
	if e.left--; e.left > 0 {
		return false
	}
	e.left = e.interval()
	return true
}
