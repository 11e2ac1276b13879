// Package apnstest runs in-process APNs servers for tests, like
// net/http/httptest: a binary gateway, a feedback service and an HTTP/2
// provider API, each on 127.0.0.1 with real TLS.
package apnstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// PKI is a throwaway certificate authority with a server certificate for
// 127.0.0.1, ::1 and localhost, and a client certificate for a provider.
type PKI struct {
	RootCAs    *x509.CertPool  // trusts ServerCert; give it to the client
	ClientCAs  *x509.CertPool  // trusts ClientCert; servers verify with it
	ServerCert tls.Certificate // for 127.0.0.1, ::1, localhost
	ClientCert tls.Certificate // the provider's certificate

	CAPEM         []byte // the CA certificate, PEM
	ClientCertPEM []byte // ClientCert's certificate, PEM
	ClientKeyPEM  []byte // ClientCert's private key, PKCS#8 PEM
	ClientKey     *ecdsa.PrivateKey
	ClientX509    *x509.Certificate
}

// NewPKI makes a new CA and certificates; each call's CA is distinct, so a
// client certificate from one PKI is refused by servers of another.
func NewPKI() (*PKI, error) { return NewPKIFor() }

// NewPKIFor is NewPKI with a server certificate valid for hosts too (names
// or IP addresses), e.g. a container's service name.
func NewPKIFor(hosts ...string) (*PKI, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "apnstest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	p := &PKI{RootCAs: x509.NewCertPool(), ClientCAs: x509.NewCertPool()}
	p.RootCAs.AddCert(ca)
	p.ClientCAs.AddCert(ca)
	p.CAPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})

	server := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			server.IPAddresses = append(server.IPAddresses, ip)
		} else {
			server.DNSNames = append(server.DNSNames, h)
		}
	}
	if p.ServerCert, _, _, err = issue(server, ca, caKey); err != nil {
		return nil, err
	}
	client := &x509.Certificate{
		SerialNumber: big.NewInt(3),
		Subject:      pkix.Name{CommonName: "Apple Push Services: com.example.app", OrganizationalUnit: []string{"TEAM123456"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	var certDER []byte
	if p.ClientCert, certDER, p.ClientKey, err = issue(client, ca, caKey); err != nil {
		return nil, err
	}
	p.ClientX509 = p.ClientCert.Leaf
	p.ClientCertPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})
	keyDER, err := x509.MarshalPKCS8PrivateKey(p.ClientKey)
	if err != nil {
		return nil, err
	}
	p.ClientKeyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return p, nil
}

// MustPKI is NewPKI for tests and examples; it panics on error, which only a
// broken crypto/rand can cause.
func MustPKI() *PKI {
	p, err := NewPKI()
	if err != nil {
		panic(fmt.Sprintf("apnstest: %v", err))
	}
	return p
}

// ServerTLS returns a server config presenting ServerCert; with
// requireClient it demands a client certificate issued by this PKI.
func (p *PKI) ServerTLS(requireClient bool) *tls.Config {
	c := &tls.Config{Certificates: []tls.Certificate{p.ServerCert}, MinVersion: tls.VersionTLS12}
	if requireClient {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = p.ClientCAs
	}
	return c
}

func issue(tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (tls.Certificate, []byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, der, key, nil
}
