package apns

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// gateProbeEvery is how often, while APNs refuses the credentials, one
// notification is let through to see whether they work again: as often as
// the worker offers one (consumer.Options.CredentialsProbeInterval), so
// that its probes are not held back a second interval.
const gateProbeEvery = 30 * time.Second

// credGate holds work while APNs refuses the provider's credentials
// (certificate or token). Closing it bumps a generation; every delivery is
// stamped with the generation current when it was written, and only the
// success of a delivery written after the gate closed opens it again, so
// that an answer to a request sent before the refusal cannot reopen it.
//
// While closed, Send fails with the refusal but for one probe every
// interval (probes), or none when the wire probes by itself (a redial
// after a TLS refusal).
type credGate struct {
	now   func() time.Time
	every time.Duration
	log   *slog.Logger

	closed atomic.Bool   // err != nil, for the fast paths
	gen    atomic.Uint64 // bumped at each close

	mu      sync.Mutex
	err     error          // nil: open
	refused *providerToken // the provider token APNs refused, if any
	probes  bool           // Send lets a probe through every interval
	probeAt time.Time
}

// refusal returns the refusal in force, nil when the gate is open.
func (g *credGate) refusal() error {
	if !g.closed.Load() {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// admit decides for one Send: nil when open; nil and probe when closed and
// a probe is due (the caller sends it as the probe); the refusal otherwise.
func (g *credGate) admit() (probe bool, err error) {
	if !g.closed.Load() {
		return false, nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err == nil {
		return false, nil
	}
	if !g.probes {
		return false, g.err
	}
	if now := g.now(); !now.Before(g.probeAt) {
		g.probeAt = now.Add(g.every)
		return true, nil
	}
	return false, g.err
}

// close records a refusal, unless the gate is already closed; probes says
// whether Send lets probes through, refused is the provider token APNs
// refused (nil with certificate auth). It returns the refusal in force.
func (g *credGate) close(err error, probes bool, refused *providerToken) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return g.err
	}
	g.err, g.probes, g.refused = err, probes, refused
	g.gen.Add(1)
	g.closed.Store(true)
	g.probeAt = g.now().Add(g.every)
	g.log.LogAttrs(context.Background(), slog.LevelError,
		"apns credentials refused: intake held until they are accepted again",
		slog.String("error", err.Error()))
	return err
}

// succeeded opens the gate if a delivery written at generation gen, with
// provider token tok, proves the credentials work again: it was written
// after the gate closed (a probe), or sent with a newer token than the one
// refused. A success of one written before says nothing of them.
func (g *credGate) succeeded(gen uint64, tok *providerToken) {
	if !g.closed.Load() {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	newerToken := tok != nil && g.refused != nil && tok.iat.After(g.refused.iat)
	if g.err == nil || gen != g.gen.Load() && !newerToken {
		return
	}
	g.open()
}

// setInterval changes the probe interval (tests).
func (g *credGate) setInterval(d time.Duration) {
	g.mu.Lock()
	g.every = d
	if g.err != nil {
		g.probeAt = g.now().Add(d)
	}
	g.mu.Unlock()
}

// reconnected opens a gate closed by a refusal the wire probes itself
// (a TLS alert: it redials), once a new connection's handshake passed.
func (g *credGate) reconnected() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err == nil || g.probes {
		return
	}
	g.open()
}

// open clears the refusal; g.mu is held.
func (g *credGate) open() {
	g.err = nil
	g.closed.Store(false)
	g.log.LogAttrs(context.Background(), slog.LevelInfo, "apns credentials accepted again: intake resumed")
}
