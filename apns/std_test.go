package apns_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// newRefEngine starts a token-auth reference engine against s, closed at
// cleanup.
func newRefEngine(t testing.TB, s *apnstest.HTTP2Server, opts ...apns.Option) *apns.StdEngine {
	return newTokenEngine(t, s, apns.NewStdEngine, opts...)
}

func TestStdEngineDelivers(t *testing.T) {
	t.Parallel()
	s := newH2Server(t, apnstest.HTTP2Record(true))
	const n = 50
	col := newH2Collector(t, n)
	e := newRefEngine(t, s, apns.WithOutcomeFunc(col.fn))
	for i := range n {
		require.NoError(t, e.Send(context.Background(), &apns.Notification{Token: h2Token(i), Payload: h2Payload}, i))
	}
	for _, o := range col.wait(n) {
		require.NoError(t, o.Err)
		require.NotEmpty(t, o.APNsID)
		require.Equal(t, 1, o.Attempts)
	}
	reqs := s.Requests()
	require.Len(t, reqs, n)
	require.Equal(t, h2Topic, reqs[0].Header["apns-topic"])
	require.Equal(t, string(h2Payload), string(reqs[0].Payload))
	require.Positive(t, e.Stats().Connected)
}

// TestStdEngineRefusesOtherOptions: an option of another engine fails the
// constructor instead of being ignored.
func TestEnginesRefuseOtherEnginesOptions(t *testing.T) {
	t.Parallel()
	s := newH2Server(t)
	key, err := apns.ParseP8(s.P8())
	require.NoError(t, err)
	auth := apns.TokenAuth(key, s.KeyID, s.TeamID)
	_, err = apns.NewStdEngine(s.URL, auth, apns.WithAssumeDelivered(time.Second))
	require.ErrorIs(t, err, apns.ErrInvalidOption)
	require.ErrorContains(t, err, "WithAssumeDelivered")
	_, err = apns.NewStdEngine(s.URL, auth, apns.WithMaxConcurrentStreams(10))
	require.ErrorIs(t, err, apns.ErrInvalidOption)
	_, err = apns.NewHTTP2Engine(s.URL, auth, apns.WithConfirmMarkers(0))
	require.ErrorIs(t, err, apns.ErrInvalidOption)
	require.ErrorContains(t, err, "WithConfirmMarkers")
	gw := apnstest.NewGateway()
	t.Cleanup(gw.Close)
	_, err = apns.NewBinaryEngine(gw.Addr, gw.ClientCert(), apns.WithTopic("com.example.app"))
	require.ErrorIs(t, err, apns.ErrInvalidOption)
	require.ErrorContains(t, err, "WithTopic")
}

// TestHTTP2EnginesAgree is the differential oracle: the same notifications
// against the same answers through HTTP2Engine and StdEngine (x/net's
// Transport) give the same outcome for each.
func TestHTTP2EnginesAgree(t *testing.T) {
	t.Parallel()
	const n = 120
	answer := func(i int) (status int, reason string, ok bool) {
		switch i % 8 {
		case 1:
			return 400, "BadDeviceToken", true
		case 2:
			return 410, "Unregistered", true
		case 3:
			return 400, "BadTopic", true
		case 4:
			return 503, "ServiceUnavailable", true // retried, then failed
		case 5:
			return 403, "Forbidden", true
		}
		return 0, "", false
	}
	var opts []apnstest.HTTP2Option
	for i := range n {
		if st, reason, ok := answer(i); ok {
			opts = append(opts, apnstest.HTTP2Reason(h2Token(i), st, reason))
		}
	}
	run := func(t *testing.T, start func(*apnstest.HTTP2Server, ...apns.Option) apns.Engine) map[int]string {
		s := newH2Server(t, opts...)
		col := newH2Collector(t, n)
		e := start(s, apns.WithOutcomeFunc(col.fn), apns.WithMaxRetries(2))
		for i := range n {
			require.NoError(t, e.Send(context.Background(), &apns.Notification{Token: h2Token(i), Payload: h2Payload}, i))
		}
		got := make(map[int]string, n)
		for _, o := range col.wait(n) {
			got[o.Ref.(int)] = outcomeClass(o)
		}
		return got
	}
	ours := run(t, func(s *apnstest.HTTP2Server, o ...apns.Option) apns.Engine { return newH2Engine(t, s, o...) })
	ref := run(t, func(s *apnstest.HTTP2Server, o ...apns.Option) apns.Engine { return newRefEngine(t, s, o...) })
	require.Equal(t, ref, ours)
	require.Equal(t, "rejected 400 BadDeviceToken bad-token", ours[1])
	require.Equal(t, "rejected 410 Unregistered bad-token", ours[2])
	require.Equal(t, "failed retries-exhausted 3 attempts", ours[4])
	require.Equal(t, "delivered", ours[0])
}

// outcomeClass describes an outcome by what a consumer acts on.
func outcomeClass(o apns.Outcome) string {
	if o.Err == nil {
		return "delivered"
	}
	if rej, ok := o.Rejection(); ok {
		s := fmt.Sprintf("rejected %d %s", rej.HTTPStatus, rej.Reason)
		if errors.Is(o.Err, apns.ErrBadDeviceToken) {
			s += " bad-token"
		}
		return s
	}
	switch {
	case errors.Is(o.Err, apns.ErrRetriesExhausted):
		return fmt.Sprintf("failed retries-exhausted %d attempts", o.Attempts)
	case errors.Is(o.Err, apns.ErrCredentials):
		return "failed credentials"
	}
	return "failed " + o.Err.Error()
}
