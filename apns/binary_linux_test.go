//go:build linux

package apns_test

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// TestBinaryWindowStartsAtFlush: under TCP backpressure a flush blocks; the
// frames of the batch encoded around it must not count as assumed
// delivered from the batch's start. A gateway stops reading for three
// windows after the first frame, then rejects frame 33, the last of the first batch, which left the
// engine only after the stall (tiny receive buffer, 2 KB payloads): it
// must come out rejected, not delivered (M4).
func TestBinaryWindowStartsAtFlush(t *testing.T) {
	t.Parallel()
	const (
		window = 200 * time.Millisecond
		badID  = 33
		total  = 100
	)
	pki := apnstest.MustPKI()
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	raw, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := tls.NewListener(raw, pki.ServerTLS(true))
	serveRaw(t, ln, func(serial int, c net.Conn) {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		fr := apns.NewFrameReader(c, 2048)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if serial > 1 {
				continue
			}
			switch f.ID {
			case 1:
				// The stall under test, not synchronisation.
				stall := time.NewTimer(3 * window)
				<-stall.C
			case badID:
				_, _ = c.Write(apns.AppendErrorResponse(nil, apns.ErrorResponse{Status: apns.StatusInvalidToken, ID: f.ID}))
				return
			}
		}
	})
	out := newOutcomes()
	eng, err := apns.NewBinaryEngine(ln.Addr().String(), pki.ClientCert, apns.WithRootCAs(pki.RootCAs),
		apns.WithOutcomeFunc(out.add), apns.WithAssumeDelivered(window), apns.WithConns(1),
		apns.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(func() { _ = eng.Close(context.Background()) })
	payload := []byte(`{"aps":{"alert":"hello"},"pad":"` + strings.Repeat("x", 1900) + `"}`)
	for i := 1; i <= total; i++ {
		require.NoError(t, eng.Send(context.Background(), &apns.Notification{Token: tok(i), Payload: payload}, i))
	}
	for _, o := range out.wait(t, total, 20*time.Second) {
		if o.Ref == badID {
			rej, ok := o.Rejection()
			require.True(t, ok, "notification %d: want rejected, got %v", badID, o.Err)
			require.True(t, rej.BadToken())
			continue
		}
		require.NoError(t, o.Err, "notification %v", o.Ref)
	}
}
