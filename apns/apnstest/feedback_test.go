package apnstest_test

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// readFeedback connects with cert and returns everything the server sent
// until it closed.
func readFeedback(t *testing.T, s *apnstest.FeedbackServer, cert tls.Certificate) ([]byte, error) {
	t.Helper()
	conn, err := tls.Dial("tcp", s.Addr, &tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: s.RootCAs(), MinVersion: tls.VersionTLS12,
	})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	return io.ReadAll(conn)
}

func ftok(b byte) apns.Token { return apns.Token(bytes.Repeat([]byte{b}, 32)) }

func TestFeedbackServer(t *testing.T) {
	t.Parallel()
	s := apnstest.NewFeedbackServer()
	t.Cleanup(s.Close)
	t0 := time.Unix(1_700_000_000, 0)
	s.Add(ftok(1), t0)
	s.Add(ftok(2), t0.Add(time.Second))
	require.Equal(t, 2*38, s.Queued())

	got, err := readFeedback(t, s, s.ClientCert())
	require.NoError(t, err)
	want := []byte{0x65, 0x53, 0xf1, 0x00, 0, 32}
	want = append(want, ftok(1)...)
	want = append(want, 0x65, 0x53, 0xf1, 0x01, 0, 32)
	want = append(want, ftok(2)...)
	require.Equal(t, want, got)
	require.Equal(t, 0, s.Queued(), "the list is cleared once read")

	got, err = readFeedback(t, s, s.ClientCert())
	require.NoError(t, err)
	require.Empty(t, got)
	require.Equal(t, 2, s.Conns())
	require.Equal(t, 2, s.Served())
}

func TestFeedbackServerRawAndTruncated(t *testing.T) {
	t.Parallel()
	s := apnstest.NewFeedbackServer()
	t.Cleanup(s.Close)
	t0 := time.Unix(1, 0)
	s.AddRaw([]byte("garbage"))
	s.AddTruncated(ftok(3), t0, 10)
	got, err := readFeedback(t, s, s.ClientCert())
	require.NoError(t, err)
	require.Equal(t, append([]byte("garbage"), apnstest.EncodeFeedbackTuple(ftok(3), t0)[:10]...), got)
}

func TestFeedbackServerWrongCertificate(t *testing.T) {
	t.Parallel()
	s := apnstest.NewFeedbackServer()
	t.Cleanup(s.Close)
	s.Add(ftok(1), time.Unix(1, 0))
	_, err := readFeedback(t, s, apnstest.MustPKI().ClientCert)
	require.Error(t, err)
	require.True(t, apns.CertificateRefused(err), "%v", err)
	s.Close() // waits for the server side
	require.Equal(t, 1, s.HandshakeErrors())
	require.Equal(t, 0, s.Served())
	require.Equal(t, 38, s.Queued(), "a refused connection does not clear the list")
}

func TestFeedbackServerSharedPKI(t *testing.T) {
	t.Parallel()
	p := apnstest.MustPKI()
	s := apnstest.NewFeedbackServer(apnstest.FeedbackPKI(p))
	t.Cleanup(s.Close)
	require.Same(t, p, s.PKI())
	_, err := readFeedback(t, s, p.ClientCert)
	require.NoError(t, err)
}

func TestFeedbackServerStall(t *testing.T) {
	t.Parallel()
	t.Run("after data, unstall", func(t *testing.T) {
		t.Parallel()
		s := apnstest.NewFeedbackServer()
		t.Cleanup(s.Close)
		s.Add(ftok(1), time.Unix(1, 0))
		s.StallAfterData()
		conn, err := tls.Dial("tcp", s.Addr, &tls.Config{Certificates: []tls.Certificate{s.ClientCert()}, RootCAs: s.RootCAs()})
		require.NoError(t, err)
		defer conn.Close()
		buf := make([]byte, 38)
		_, err = io.ReadFull(conn, buf) // the data comes, then nothing
		require.NoError(t, err)
		s.Unstall()
		rest, err := io.ReadAll(conn)
		require.NoError(t, err)
		require.Empty(t, rest)
	})
	t.Run("handshake, close", func(t *testing.T) {
		t.Parallel()
		s := apnstest.NewFeedbackServer()
		s.StallHandshake()
		raw, err := net.Dial("tcp", s.Addr)
		require.NoError(t, err)
		defer raw.Close()
		conn := tls.Client(raw, &tls.Config{Certificates: []tls.Certificate{s.ClientCert()}, RootCAs: s.RootCAs(), ServerName: "127.0.0.1"})
		done := make(chan error, 1)
		go func() { done <- conn.Handshake() }()
		s.Close() // releases the stalled connection, if accepted yet, and waits for it
		require.Error(t, <-done)
		require.LessOrEqual(t, s.Conns(), 1)
		require.Equal(t, 0, s.Served())
		s.Close() // twice is fine
	})
}
