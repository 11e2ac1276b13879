package h2conn_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/jetpush/apns-worker/apns/internal/h2conn"
)

// script is a peer that advertises settings, then reads requests until
// the client goes or quit closes, reporting each one's path on got. It
// answers each with 200 once release gives it leave (nil: at once), or
// never if hoard; it signals acked, if set, when the client acknowledges
// its SETTINGS.
type script struct {
	got      chan<- string
	acked    chan<- struct{}
	release  <-chan struct{}
	quit     <-chan struct{}
	hoard    bool
	settings []http2.Setting
}

func (sc script) run(p *peer) {
	p.settings(sc.settings...)
	ended := make(chan struct{})
	defer close(ended)
	go func() {
		select {
		case <-sc.quit:
			p.c.Close()
		case <-ended:
		}
	}()
	dec := hpack.NewDecoder(4096, nil)
	paths := map[uint32]string{}
	for {
		f, err := p.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() && sc.acked != nil {
				sc.acked <- struct{}{}
			}
		case *http2.HeadersFrame:
			fields, err := dec.DecodeFull(f.HeaderBlockFragment()) // our client never sends CONTINUATION here
			if err != nil {
				return
			}
			for _, hf := range fields {
				if hf.Name == ":path" {
					paths[f.StreamID] = hf.Value
				}
			}
		case *http2.DataFrame:
			if !f.StreamEnded() {
				continue
			}
			sc.got <- paths[f.StreamID]
			if sc.hoard {
				continue
			}
			if sc.release != nil {
				select {
				case <-sc.release:
				case <-sc.quit:
					return
				}
			}
			p.respond(f.StreamID, "200", nil)
		}
	}
}

// TestIntakeKeepsTrafficOnOneConn: connections sharing a queue and an
// Intake take requests one connection at a time: requests sent one after
// the other all go to the same one, where without Intake the queue would
// hand them to both in turn.
func TestIntakeKeepsTrafficOnOneConn(t *testing.T) {
	t.Parallel()
	owner := newTestOwner()
	cfg := h2conn.Config[*testReq]{Intake: h2conn.NewIntake()}
	var conns [2]*client
	gots := [2]chan string{make(chan string, 100), make(chan string, 100)}
	for i := range conns {
		c, err := startPairWith(t, owner, cfg, script{got: gots[i]}.run)
		require.NoError(t, err)
		conns[i] = c
	}
	const n = 30
	for i := range n {
		conns[0].send(fmt.Sprintf("/%d", i), payload)
		res := conns[0].wait(1)
		require.NoError(t, res[fmt.Sprintf("/%d", i)].err)
	}
	require.ElementsMatch(t, []int{0, n}, []int{len(gots[0]), len(gots[1])},
		"requests sent one at a time went to both connections")
}

// TestIntakeHandsOn: the holder hands the intake on when it cannot open
// another stream (the peer allows one at a time), and when it ends; the
// token is never lost.
func TestIntakeHandsOn(t *testing.T) {
	t.Parallel()
	owner := newTestOwner()
	cfg := h2conn.Config[*testReq]{Intake: h2conn.NewIntake()}
	one := http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1}
	gots := [2]chan string{make(chan string, 100), make(chan string, 100)}
	releases := [2]chan struct{}{make(chan struct{}, 100), make(chan struct{}, 100)}
	quits := [2]chan struct{}{make(chan struct{}), make(chan struct{})}
	var conns [2]*client
	for i := range conns {
		c, err := startPairWith(t, owner, cfg, script{got: gots[i], release: releases[i], quit: quits[i], settings: []http2.Setting{one}}.run)
		require.NoError(t, err)
		conns[i] = c
	}
	// The first request fills whichever connection holds the intake; the
	// second must go to the other.
	conns[0].send("/a", payload)
	first := which(t, gots)
	conns[0].send("/b", payload)
	second := which(t, gots)
	require.NotEqual(t, first, second, "the second request waited for the full connection")
	releases[first] <- struct{}{}
	releases[second] <- struct{}{}
	res := conns[0].wait(2)
	require.NoError(t, res["/a"].err)
	require.NoError(t, res["/b"].err)

	// The peer of the second ends its connection: the first takes what
	// comes next, whoever held the intake.
	close(quits[second])
	require.Error(t, conns[second].ended())
	for i := range 5 {
		path := fmt.Sprintf("/c%d", i)
		conns[0].send(path, payload)
		require.Equal(t, first, which(t, gots))
		releases[first] <- struct{}{}
		require.NoError(t, conns[0].wait(1)[path].err)
	}
}

// which returns the index of the peer that reads the next request.
func which(t *testing.T, gots [2]chan string) int {
	t.Helper()
	select {
	case <-gots[0]:
		return 0
	case <-gots[1]:
		return 1
	case <-time.After(10 * time.Second):
		t.Fatal("no peer read the request")
		return -1
	}
}

// TestIntakeSpreadsABurst: a burst larger than a connection's share is not
// staked on one connection: the holder hands its turn on once it has its
// share of streams open, and the other takes the rest.
func TestIntakeSpreadsABurst(t *testing.T) {
	t.Parallel()
	owner := newTestOwner()
	cfg := h2conn.Config[*testReq]{Intake: h2conn.NewIntake()}
	gots := [2]chan string{make(chan string, 100), make(chan string, 100)}
	quit := make(chan struct{}) // the peers read every request and answer none until then
	acked := make(chan struct{}, 2)
	for i := range 2 {
		_, err := startPairWith(t, owner, cfg, script{got: gots[i], acked: acked, quit: quit, hoard: true}.run)
		require.NoError(t, err)
	}
	t.Cleanup(func() { close(quit) }) // before the pairs' cleanups: the peers go first
	// Each writer has run (it acked its peer's SETTINGS): both wait for
	// their turn before the burst.
	for range 2 {
		select {
		case <-acked:
		case <-time.After(10 * time.Second):
			t.Fatal("a connection's writer never ran")
		}
	}
	read := func() int { return len(gots[0]) + len(gots[1]) }
	send := func(from, to int) {
		for i := from; i < to; i++ {
			r := &testReq{path: fmt.Sprintf("/%d", i)}
			r.Payload = payload
			owner.queue <- r
		}
		require.Eventually(t, func() bool { return read() == to }, 10*time.Second, time.Millisecond, "requests read by the peers")
	}
	// A share at once, then more one at a time: the holder of a share
	// hands its turn on after any batch, and the other connection has
	// long been waiting for it by then.
	const n = 100
	send(0, 64)
	for i := 64; i < n; i++ {
		send(i, i+1)
	}
	// The holder hands its turn on at 64 streams; it takes a request back
	// only when the other was not waiting at that instant (not yet
	// scheduled), which a test cannot rule out: a few.
	a, b := len(gots[0]), len(gots[1])
	require.LessOrEqual(t, max(a, b), 64+10, "one connection took %d of the burst, the other %d", max(a, b), min(a, b))
}
