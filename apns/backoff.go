package apns

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Backoff is a capped exponential back-off with jitter: the one used for
// every retry and reconnect in this module (the engines' retries and
// reconnects, the feedback poller).
type Backoff struct {
	Min time.Duration // the first delay
	Max time.Duration // the cap of its doubling
}

// Validate reports a Backoff that cannot be used: Min <= 0 or Max < Min.
func (b Backoff) Validate() error {
	if b.Min <= 0 || b.Max < b.Min {
		return fmt.Errorf("%w: backoff %v..%v", ErrInvalidOption, b.Min, b.Max)
	}
	return nil
}

// Delay is the wait before attempt n+1 after n failures in a row (n >= 1):
// Min doubled n-1 times, capped at Max, then spread by ±25% so that many
// waiters do not come back at once.
func (b Backoff) Delay(n int) time.Duration {
	d := b.Min
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	if d <= 0 {
		return 0
	}
	return d - d/4 + time.Duration(rand.Int64N(int64(d/2)+1))
}
