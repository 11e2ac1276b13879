package apns_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// BenchmarkBinary measures notifications per second from Send to outcome
// over TLS loopback against apnstest.Gateway (the gateway runs in the same
// process, so it shares the CPU), 4 connections and a 50 ms
// assumed-delivered window; allocs/op are per notification, engine and
// gateway together. In rejected-1pct, about 1% of notifications go to
// tokens the gateway rejects: each rejection costs a reconnect and the
// resend of everything written after it.
func BenchmarkBinary(b *testing.B) {
	const tokens = 1000
	bad := func(i int) bool { return i%100 == 42 }
	for _, bm := range []struct {
		name   string
		reject bool
	}{
		{"clean", false},
		{"rejected-1pct", true},
	} {
		b.Run(bm.name, func(b *testing.B) {
			var opts []apnstest.GatewayOption
			ns := make([]*apns.Notification, tokens)
			for i := range ns {
				ns[i] = &apns.Notification{Token: tok(i), Payload: hello}
				if bm.reject && bad(i) {
					opts = append(opts, apnstest.Reject(tok(i), apns.StatusInvalidToken))
				}
			}
			gw := apnstest.NewGateway(opts...)
			defer gw.Close()

			var (
				target   atomic.Int64
				done     atomic.Int64
				rejected atomic.Int64
				failed   atomic.Int64
				attempts atomic.Int64
				finished = make(chan struct{}, 1)
			)
			target.Store(1 << 62)
			eng, err := apns.NewBinaryEngine(gw.Addr, gw.ClientCert(), apns.WithRootCAs(gw.RootCAs()),
				apns.WithConns(4), apns.WithAssumeDelivered(50*time.Millisecond), apns.WithMaxInFlight(1<<16),
				apns.WithOutcomeFunc(func(o apns.Outcome) {
					attempts.Add(int64(o.Attempts))
					if o.Err != nil {
						if _, ok := o.Rejection(); ok {
							rejected.Add(1)
						} else {
							failed.Add(1)
						}
					}
					if done.Add(1) == target.Load() {
						finished <- struct{}{}
					}
				}))
			if err != nil {
				b.Fatal(err)
			}
			defer eng.Close(context.Background())

			run := func(n int) time.Duration {
				done.Store(0)
				target.Store(int64(n))
				start := time.Now()
				const senders = 4
				var wg sync.WaitGroup
				for s := 0; s < senders; s++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := s; i < n; i += senders {
							if err := eng.Send(context.Background(), ns[i%tokens], nil); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				<-finished
				return time.Since(start)
			}
			run(2000) // connect and warm up
			rejected.Store(0)
			attempts.Store(0)
			conns0 := gw.Stats().Conns
			b.ReportAllocs()
			b.ResetTimer()
			elapsed := run(b.N)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "notifications/s")
			if f := failed.Load(); f > 0 {
				b.Fatalf("%d failed", f)
			}
			b.ReportMetric(float64(rejected.Load())/float64(b.N)*100, "%rejected")
			b.ReportMetric(float64(attempts.Load())/float64(b.N), "writes/notification")
			b.ReportMetric(float64(gw.Stats().Conns-conns0)/elapsed.Seconds(), "conns/s")
		})
	}
}

// BenchmarkAppendFrame measures the encode path alone.
func BenchmarkAppendFrame(b *testing.B) {
	n := &apns.Notification{Token: tok(1), Payload: hello, Expiration: time.Unix(2e9, 0)}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	b.SetBytes(int64(apns.FrameLen(n)))
	for b.Loop() {
		buf = apns.AppendFrame(buf[:0], 1, n)
	}
}
