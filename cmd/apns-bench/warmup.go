package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/consumer"
)

// minSteadyRun is the shortest measured run whose rate the bench trusts:
// shorter runs are mostly start-up and drain, and buffers (the pull
// buffer, the engine's window) make them look faster than a sustained load.
const minSteadyRun = 3 * time.Second

// warmPrefix starts the tokens of warm-up jobs: the bench's servers accept
// them and count them apart from the measured jobs' 0x7e57 and 0xbad0.
var warmPrefix = [2]byte{0x3a, 0x3a}

// warmUp publishes n jobs that the run does not count and waits until the
// workers finished them, so that the measured jobs meet connections,
// streams and caches already warm. With rate > 0 it publishes them paced at
// that rate, as the measured jobs will be. Job i's token ends in
// tokenBase+i. It returns the jobs stream's last sequence, the measured
// run's base.
func warmUp(ctx context.Context, js jetstream.JetStream, subject, stream, durable string, n int, payload []byte, o offer, tokenBase int) (uint64, error) {
	within := warmUpWithin(n, o.rate)
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	pace := newPacer(o, time.Now())
	defer pace.stop()
	for i := range n {
		if !pace.wait(ctx, i) {
			return 0, fmt.Errorf("warm-up: %d of %d jobs published within %s", i, n, within)
		}
		tok := warmToken(tokenBase + i)
		if _, err := js.PublishMsgAsync(jobMsg(subject, consumer.NewJob(tok, payload), payload, false)); err != nil {
			return 0, fmt.Errorf("warm-up publish: %w", err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, fmt.Errorf("warm-up: publish not confirmed within %s", within)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		s, err := js.Stream(ctx, stream)
		if err == nil {
			var c jetstream.Consumer
			if c, err = s.Consumer(ctx, durable); err == nil {
				var ci *jetstream.ConsumerInfo
				if ci, err = c.Info(ctx); err == nil && ci.NumPending == 0 && ci.NumAckPending == 0 {
					info, err := s.Info(ctx)
					if err != nil {
						return 0, err
					}
					return info.State.LastSeq, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("warm-up: %d jobs not finished within %s (%v)", n, within, err)
		case <-tick.C:
		}
	}
}

// warmToken is the token of warm-up job i.
func warmToken(i int) apns.Token {
	tok := make(apns.Token, 32)
	copy(tok, warmPrefix[:])
	binary.BigEndian.PutUint64(tok[24:], uint64(i))
	return tok
}

// warmUpWithin bounds a warm-up of n jobs at rate (0: at once): a minute,
// a millisecond a job, and the time the rate takes to offer them.
func warmUpWithin(n int, rate float64) time.Duration {
	d := 60*time.Second + time.Duration(n)*time.Millisecond
	if rate > 0 {
		d += time.Duration(float64(n) / rate * float64(time.Second))
	}
	return d
}
