package rawconn_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/internal/rawconn"
)

// selfSigned returns a server certificate for 127.0.0.1 and a pool that
// trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "rawconn test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// TestTLS runs TLS over a wrapped connection, as client and as server,
// against a peer on a plain one: the handshake completes, 1 MB goes each
// way intact, and close_notify ends each stream with io.EOF.
func TestTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	for _, side := range []string{"wrapped client", "wrapped server"} {
		t.Run(side, func(t *testing.T) {
			d, a := tcpPair(t)
			var clientConn, serverConn net.Conn = rawconn.Wrap(d), a
			if side == "wrapped server" {
				clientConn, serverConn = d, rawconn.Wrap(a)
			}
			client := tls.Client(clientConn, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
			server := tls.Server(serverConn, &tls.Config{Certificates: []tls.Certificate{cert}})
			defer client.Close()
			defer server.Close()
			require.NoError(t, client.SetDeadline(time.Now().Add(testTimeout)))
			require.NoError(t, server.SetDeadline(time.Now().Add(testTimeout)))

			up, down := pattern(11, 1<<20), pattern(12, 1<<20+3)
			// Each side writes, then sends close_notify, while the other reads.
			send := func(c *tls.Conn, b []byte) func() error {
				return async(t, func() error {
					err := write(c, b)
					if err == nil {
						err = c.CloseWrite()
					}
					return err
				})
			}
			handshake := async(t, func() error { return server.Handshake() })
			require.NoError(t, client.Handshake())
			require.NoError(t, handshake())
			require.Equal(t, uint16(tls.VersionTLS13), client.ConnectionState().Version)

			sentUp, sentDown := send(client, up), send(server, down)
			serverGot := async(t, func() received { return readToEOF(server, 16<<10) })
			clientGot := readToEOF(client, 10000)

			require.NoError(t, sentUp())
			require.NoError(t, sentDown())
			require.Equal(t, io.EOF, clientGot.err)
			require.Equal(t, len(down), clientGot.n)
			require.Equal(t, sha256.Sum256(down), clientGot.sum)
			sg := serverGot()
			require.Equal(t, io.EOF, sg.err)
			require.Equal(t, len(up), sg.n)
			require.Equal(t, sha256.Sum256(up), sg.sum)
		})
	}
}
