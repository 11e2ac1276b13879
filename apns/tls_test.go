package apns_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// Test material, made once: two unrelated PKIs and an RSA certificate.
var (
	pkiA = sync.OnceValue(apnstest.MustPKI)
	pkiB = sync.OnceValue(apnstest.MustPKI)
	rsaM = sync.OnceValue(func() rsaMaterial {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(7),
			Subject:      pkix.Name{CommonName: "Apple Push Services: com.example.rsa"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			panic(err)
		}
		return rsaMaterial{key: key, cert: cert, certPEM: pemOf("CERTIFICATE", der)}
	})
)

type rsaMaterial struct {
	key     *rsa.PrivateKey
	cert    *x509.Certificate
	certPEM []byte
}

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func concat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func mustDER(der []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return der
}

func TestParsePEMCertificate(t *testing.T) {
	t.Parallel()
	a, b, r := pkiA(), pkiB(), rsaM()
	ecSEC1 := pemOf("EC PRIVATE KEY", mustDER(x509.MarshalECPrivateKey(a.ClientKey)))
	rsaPKCS1 := pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(r.key))
	rsaPKCS8 := pemOf("PRIVATE KEY", mustDER(x509.MarshalPKCS8PrivateKey(r.key)))
	bagAttrs := []byte("Bag Attributes\n    friendlyName: Apple Push Services: com.example.app\nsubject=/CN=x\n")
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY",
		Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1, 2, 3}})

	tests := []struct {
		name     string
		certPEM  []byte
		keyPEM   []byte
		wantLeaf *x509.Certificate
		wantLen  int // certificates in the chain, leaf first
		wantErr  error
	}{
		{"ec pkcs8", a.ClientCertPEM, a.ClientKeyPEM, a.ClientX509, 1, nil},
		{"ec sec1", a.ClientCertPEM, ecSEC1, a.ClientX509, 1, nil},
		{"rsa pkcs1", r.certPEM, rsaPKCS1, r.cert, 1, nil},
		{"rsa pkcs8", r.certPEM, rsaPKCS8, r.cert, 1, nil},
		{"mislabelled key", a.ClientCertPEM, pemOf("RSA PRIVATE KEY", pemBody(a.ClientKeyPEM)), a.ClientX509, 1, nil},
		{"combined file", concat(bagAttrs, a.ClientCertPEM, bagAttrs, a.ClientKeyPEM), nil, a.ClientX509, 1, nil},
		{"combined file key first", concat(a.ClientKeyPEM, a.ClientCertPEM), nil, a.ClientX509, 1, nil},
		{"chain, CA first", concat(a.CAPEM, a.ClientCertPEM), a.ClientKeyPEM, a.ClientX509, 2, nil},
		{"garbage", []byte("not a certificate"), a.ClientKeyPEM, nil, 0, apns.ErrNoCertificate},
		{"empty", nil, nil, nil, 0, apns.ErrNoCertificate},
		{"key only", a.ClientKeyPEM, nil, nil, 0, apns.ErrNoCertificate},
		{"no key", a.ClientCertPEM, nil, nil, 0, apns.ErrNoPrivateKey},
		{"key file is a certificate", a.ClientCertPEM, a.CAPEM, nil, 0, apns.ErrNoPrivateKey},
		{"encrypted key", a.ClientCertPEM, encrypted, nil, 0, apns.ErrNoPrivateKey},
		{"corrupt key", a.ClientCertPEM, pemOf("PRIVATE KEY", []byte{0x30, 1, 2}), nil, 0, apns.ErrNoPrivateKey},
		{"corrupt certificate", pemOf("CERTIFICATE", []byte{0x30, 1, 2}), a.ClientKeyPEM, nil, 0, apns.ErrCertificate},
		{"key of another certificate", a.ClientCertPEM, b.ClientKeyPEM, nil, 0, apns.ErrKeyMismatch},
		{"rsa key, ec certificate", a.ClientCertPEM, rsaPKCS1, nil, 0, apns.ErrKeyMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := apns.ParsePEMCertificate(tt.certPEM, tt.keyPEM)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				require.ErrorIs(t, err, apns.ErrCertificate)
				t.Log(err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.wantLeaf.Raw, got.Leaf.Raw)
			require.Len(t, got.Certificate, tt.wantLen)
			require.Equal(t, tt.wantLeaf.Raw, got.Certificate[0])
			require.NotNil(t, got.PrivateKey)
		})
	}
}

func pemBody(b []byte) []byte {
	blk, _ := pem.Decode(b)
	return blk.Bytes
}

func TestParseP12Certificate(t *testing.T) {
	t.Parallel()
	a, b, r := pkiA(), pkiB(), rsaM()
	ca, err := x509.ParseCertificate(pemBody(a.CAPEM))
	require.NoError(t, err)
	const pw = "s3cret"
	enc := func(e *pkcs12.Encoder, key any, cert *x509.Certificate, chain []*x509.Certificate, pw string) []byte {
		b, err := e.Encode(key, cert, chain, pw)
		require.NoError(t, err)
		return b
	}
	trustOnly, err := pkcs12.Modern.EncodeTrustStore([]*x509.Certificate{a.ClientX509}, pw)
	require.NoError(t, err)

	tests := []struct {
		name     string
		p12      []byte
		password string
		wantLeaf *x509.Certificate
		wantLen  int
		wantErr  error
	}{
		{"modern (AES)", enc(pkcs12.Modern, a.ClientKey, a.ClientX509, nil, pw), pw, a.ClientX509, 1, nil},
		{"modern 2026", enc(pkcs12.Modern2026, a.ClientKey, a.ClientX509, nil, pw), pw, a.ClientX509, 1, nil},
		{"legacy RC2", enc(pkcs12.LegacyRC2, a.ClientKey, a.ClientX509, nil, pw), pw, a.ClientX509, 1, nil},
		{"legacy DES", enc(pkcs12.LegacyDES, a.ClientKey, a.ClientX509, nil, pw), pw, a.ClientX509, 1, nil},
		{"rsa", enc(pkcs12.Modern, r.key, r.cert, nil, pw), pw, r.cert, 1, nil},
		{"with chain", enc(pkcs12.Modern, a.ClientKey, a.ClientX509, []*x509.Certificate{ca}, pw), pw, a.ClientX509, 2, nil},
		{"chain, CA first", enc(pkcs12.Modern, a.ClientKey, ca, []*x509.Certificate{a.ClientX509}, pw), pw, a.ClientX509, 2, nil},
		{"empty password", enc(pkcs12.Modern, a.ClientKey, a.ClientX509, nil, ""), "", a.ClientX509, 1, nil},
		{"passwordless", enc(pkcs12.Passwordless, a.ClientKey, a.ClientX509, nil, ""), "", a.ClientX509, 1, nil},
		{"wrong password", enc(pkcs12.Modern, a.ClientKey, a.ClientX509, nil, pw), "wrong", nil, 0, apns.ErrCertificatePassword},
		{"wrong password legacy", enc(pkcs12.LegacyRC2, a.ClientKey, a.ClientX509, nil, pw), "", nil, 0, apns.ErrCertificatePassword},
		{"key of another certificate", enc(pkcs12.Modern, b.ClientKey, a.ClientX509, nil, pw), pw, nil, 0, apns.ErrKeyMismatch},
		{"certificates only", trustOnly, pw, nil, 0, apns.ErrNoPrivateKey},
		{"garbage", []byte("garbage"), pw, nil, 0, apns.ErrCertificate},
		{"empty", nil, pw, nil, 0, apns.ErrCertificate},
		{"pem", a.ClientCertPEM, pw, nil, 0, apns.ErrCertificate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := apns.ParseP12Certificate(tt.p12, tt.password)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				require.ErrorIs(t, err, apns.ErrCertificate)
				t.Log(err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.wantLeaf.Raw, got.Leaf.Raw)
			require.Equal(t, tt.wantLeaf.Raw, got.Certificate[0])
			require.Len(t, got.Certificate, tt.wantLen)
		})
	}
}

func TestLoadCertificate(t *testing.T) {
	t.Parallel()
	a := pkiA()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o600))
		return p
	}
	p12, err := pkcs12.Modern.Encode(a.ClientKey, a.ClientX509, nil, "pw")
	require.NoError(t, err)
	var (
		p12File     = write("cert.p12", p12)
		p12NoExt    = write("cert", p12)
		combined    = write("combined.pem", concat(a.ClientCertPEM, a.ClientKeyPEM))
		certOnly    = write("cert.pem", a.ClientCertPEM)
		keyFile     = write("key.pem", a.ClientKeyPEM)
		garbage     = write("notes.txt", []byte("hello"))
		emptyPEM    = write("empty.pem", nil)
		missingFile = filepath.Join(dir, "missing.p12")
	)

	tests := []struct {
		name     string
		path     string
		password string
		wantErr  error
	}{
		{"p12", p12File, "pw", nil},
		{"p12 without extension", p12NoExt, "pw", nil},
		{"p12 wrong password", p12File, "nope", apns.ErrCertificatePassword},
		{"combined pem", combined, "", nil},
		{"pem password ignored", combined, "pw", nil},
		{"pem without key", certOnly, "", apns.ErrNoPrivateKey},
		{"garbage", garbage, "", apns.ErrCertificate},
		{"empty pem", emptyPEM, "", apns.ErrNoCertificate},
		{"missing", missingFile, "", fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := apns.LoadCertificate(tt.path, tt.password)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				require.ErrorIs(t, err, apns.ErrCertificate)
				require.ErrorContains(t, err, tt.path)
				return
			}
			require.NoError(t, err)
			require.Equal(t, a.ClientX509.Raw, got.Leaf.Raw)
		})
	}

	t.Run("pem files", func(t *testing.T) {
		t.Parallel()
		got, err := apns.LoadPEMCertificate(certOnly, keyFile)
		require.NoError(t, err)
		require.Equal(t, a.ClientX509.Raw, got.Leaf.Raw)
		got, err = apns.LoadPEMCertificate(combined, "")
		require.NoError(t, err)
		require.Equal(t, a.ClientX509.Raw, got.Leaf.Raw)
		_, err = apns.LoadPEMCertificate(certOnly, missingFile)
		require.ErrorIs(t, err, fs.ErrNotExist)
		_, err = apns.LoadPEMCertificate(certOnly, "")
		require.ErrorIs(t, err, apns.ErrNoPrivateKey)
		require.ErrorContains(t, err, certOnly)
	})
	t.Run("p12 file", func(t *testing.T) {
		t.Parallel()
		got, err := apns.LoadP12Certificate(p12File, "pw")
		require.NoError(t, err)
		require.Equal(t, a.ClientX509.Raw, got.Leaf.Raw)
		_, err = apns.LoadP12Certificate(p12File, "")
		require.ErrorIs(t, err, apns.ErrCertificatePassword)
		require.ErrorContains(t, err, p12File)
	})
}

func TestCheckValidity(t *testing.T) {
	t.Parallel()
	a := pkiA()
	noLeaf := a.ClientCert
	noLeaf.Leaf = nil
	tests := []struct {
		name    string
		cert    tls.Certificate
		now     time.Time
		wantErr error
	}{
		{"fresh", a.ClientCert, time.Now(), nil},
		{"fresh, leaf not parsed", noLeaf, time.Now(), nil},
		{"expired", a.ClientCert, a.ClientX509.NotAfter.Add(time.Second), apns.ErrCertificateExpired},
		{"not yet valid", noLeaf, a.ClientX509.NotBefore.Add(-time.Second), apns.ErrCertificateExpired},
		{"empty", tls.Certificate{}, time.Now(), apns.ErrNoCertificate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := apns.CheckValidity(tt.cert, tt.now)
			require.ErrorIs(t, err, tt.wantErr)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, apns.ErrCertificate)
			}
		})
	}
}

func TestClientTLSConfig(t *testing.T) {
	t.Parallel()
	a := pkiA()
	tests := []struct {
		name       string
		addr       string
		cert       tls.Certificate
		wantServer string
		wantErr    error
	}{
		{"gateway", "gateway.push.apple.com:2195", a.ClientCert, "gateway.push.apple.com", nil},
		{"ipv4", "127.0.0.1:2196", a.ClientCert, "127.0.0.1", nil},
		{"ipv6", "[::1]:2196", a.ClientCert, "::1", nil},
		{"no port", "gateway.push.apple.com", a.ClientCert, "", apns.ErrInvalidOption},
		{"no host", ":2195", a.ClientCert, "", apns.ErrInvalidOption},
		{"empty certificate", "127.0.0.1:2195", tls.Certificate{}, "", apns.ErrNoCertificate},
		{"no key", "127.0.0.1:2195", tls.Certificate{Certificate: a.ClientCert.Certificate}, "", apns.ErrNoPrivateKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := apns.ClientTLSConfig(tt.addr, tt.cert, a.RootCAs)
			require.ErrorIs(t, err, tt.wantErr)
			if tt.wantErr != nil {
				return
			}
			require.Equal(t, tt.wantServer, got.ServerName)
			require.Equal(t, uint16(tls.VersionTLS12), got.MinVersion)
			require.False(t, got.InsecureSkipVerify)
			require.Same(t, a.RootCAs, got.RootCAs)
			require.Len(t, got.Certificates, 1)
		})
	}
}

// TestClientTLSConfigHandshake dials a server that requires a client
// certificate of PKI A, with certificates loaded from PKCS#12, over TLS 1.2
// and 1.3: A's is accepted, B's is refused and CertificateRefused says so.
func TestClientTLSConfigHandshake(t *testing.T) {
	t.Parallel()
	a, b := pkiA(), pkiB()
	load := func(p *apnstest.PKI) tls.Certificate {
		p12, err := pkcs12.Modern.Encode(p.ClientKey, p.ClientX509, nil, "pw")
		require.NoError(t, err)
		c, err := apns.ParseP12Certificate(p12, "pw")
		require.NoError(t, err)
		return c
	}
	certA, certB := load(a), load(b)
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		for _, tt := range []struct {
			name        string
			cert        tls.Certificate
			wantRefused bool
		}{{"accepted", certA, false}, {"refused", certB, true}} {
			t.Run(tls.VersionName(version)+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				srvConf := a.ServerTLS(true)
				srvConf.MaxVersion = version
				ln, err := tls.Listen("tcp", "127.0.0.1:0", srvConf)
				require.NoError(t, err)
				done := make(chan struct{})
				go func() {
					defer close(done)
					c, err := ln.Accept()
					if err != nil {
						return
					}
					defer c.Close()
					if c.(*tls.Conn).Handshake() == nil {
						_, _ = c.Write([]byte("ok"))
					}
				}()
				t.Cleanup(func() { ln.Close(); <-done })

				conf, err := apns.ClientTLSConfig(ln.Addr().String(), tt.cert, a.RootCAs)
				require.NoError(t, err)
				conn, err := tls.Dial("tcp", ln.Addr().String(), conf)
				if err == nil {
					defer conn.Close()
					_, err = io.ReadAll(conn)
					if err == nil && tt.wantRefused {
						t.Fatal("server accepted a foreign client certificate")
					}
				}
				if !tt.wantRefused {
					require.NoError(t, err)
					return
				}
				require.Error(t, err)
				require.True(t, apns.CertificateRefused(err), "%v", err)
			})
		}
	}
}

func TestCertificateRefused(t *testing.T) {
	t.Parallel()
	require.False(t, apns.CertificateRefused(nil))
	require.False(t, apns.CertificateRefused(io.EOF))
	require.False(t, apns.CertificateRefused(&net.OpError{Op: "read", Err: errors.New("x")}))
	require.False(t, apns.CertificateRefused(&net.OpError{Op: "remote error", Err: errors.New("x")}))
}
