package apns

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// ErrCertificate is wrapped by every error loading or checking a provider
// client certificate. The specific errors below wrap it; the message names
// the source (file or "PEM"/"PKCS#12") and what is wrong.
var ErrCertificate = errors.New("apns: bad client certificate")

// Client-certificate errors, each wrapping ErrCertificate.
var (
	// ErrNoCertificate: no certificate found (e.g. not PEM, or only a key).
	ErrNoCertificate = fmt.Errorf("%w: no certificate", ErrCertificate)
	// ErrNoPrivateKey: no private key found, or an unsupported key.
	ErrNoPrivateKey = fmt.Errorf("%w: no private key", ErrCertificate)
	// ErrKeyMismatch: the private key does not belong to the certificate.
	ErrKeyMismatch = fmt.Errorf("%w: private key does not match the certificate", ErrCertificate)
	// ErrCertificatePassword: the PKCS#12 password is wrong.
	ErrCertificatePassword = fmt.Errorf("%w: wrong PKCS#12 password", ErrCertificate)
	// ErrCertificateExpired: CheckValidity found the certificate outside its
	// validity period (expired, or not yet valid).
	ErrCertificateExpired = fmt.Errorf("%w: certificate expired or not yet valid", ErrCertificate)
)

// ParsePEMCertificate builds a client certificate from PEM data, as
// converted from a Keychain export with
// `openssl pkcs12 -in cert.p12 -out cert.pem -nodes`.
//
// certPEM holds the certificate, optionally followed by its chain, in any
// order (the certificate matching the key becomes the leaf). keyPEM holds
// the private key: PKCS#1 ("RSA PRIVATE KEY"), PKCS#8 ("PRIVATE KEY") or SEC 1
// ("EC PRIVATE KEY"); if keyPEM is empty the key is looked for in certPEM, so
// a combined file works too. Text around the PEM blocks (openssl's "Bag
// Attributes") is ignored. Encrypted keys are not supported: decrypt them
// first.
//
// Errors wrap ErrNoCertificate, ErrNoPrivateKey or ErrKeyMismatch (all
// ErrCertificate). Validity dates are not checked: see CheckValidity.
func ParsePEMCertificate(certPEM, keyPEM []byte) (tls.Certificate, error) {
	return parsePEM("PEM", certPEM, keyPEM)
}

// LoadPEMCertificate is ParsePEMCertificate on the contents of two files;
// keyFile may be "" or the same as certFile for a combined file. Errors
// name the file.
func LoadPEMCertificate(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := readFile(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	var keyPEM []byte
	src := certFile
	if keyFile != "" && keyFile != certFile {
		if keyPEM, err = readFile(keyFile); err != nil {
			return tls.Certificate{}, err
		}
		src = certFile + ", " + keyFile
	}
	return parsePEM(src, certPEM, keyPEM)
}

// ParseP12Certificate builds a client certificate from a PKCS#12 (.p12,
// .pfx) file's bytes, as exported from Keychain Access with a password.
// Modern (AES, PBES2) and legacy (RC2, 3DES) encryptions are read; an empty
// password also opens password-less files. CA certificates in the file
// become the chain.
//
// Errors wrap ErrCertificatePassword, ErrNoPrivateKey, ErrNoCertificate,
// ErrKeyMismatch or, for data that is not PKCS#12, ErrCertificate.
// Validity dates are not checked: see CheckValidity.
func ParseP12Certificate(p12 []byte, password string) (tls.Certificate, error) {
	return parseP12("PKCS#12", p12, password)
}

// LoadP12Certificate is ParseP12Certificate on a file's contents; errors
// name the file.
func LoadP12Certificate(path, password string) (tls.Certificate, error) {
	b, err := readFile(path)
	if err != nil {
		return tls.Certificate{}, err
	}
	return parseP12(path, b, password)
}

// LoadCertificate loads a client certificate from one file, PEM or
// PKCS#12, picked by content: a file with a "-----BEGIN" line is PEM and
// must hold both the certificate and its key (password is ignored); any
// other file is read as PKCS#12 with password. A certificate and key in two
// PEM files need LoadPEMCertificate.
func LoadCertificate(path, password string) (tls.Certificate, error) {
	b, err := readFile(path)
	if err != nil {
		return tls.Certificate{}, err
	}
	if bytes.Contains(b, []byte("-----BEGIN ")) {
		return parsePEM(path, b, nil)
	}
	switch ext := strings.ToLower(filepath.Ext(path)); {
	case ext == ".pem" || ext == ".crt" || ext == ".cer" || ext == ".key":
		return tls.Certificate{}, fmt.Errorf("%w: %s: no PEM data", ErrNoCertificate, path)
	case len(b) == 0 || b[0] != 0x30: // PKCS#12 is a DER SEQUENCE
		return tls.Certificate{}, fmt.Errorf("%w: %s: neither PEM nor PKCS#12", ErrCertificate, path)
	}
	return parseP12(path, b, password)
}

// CheckValidity reports, wrapping ErrCertificateExpired, whether the leaf
// certificate of c is outside its validity period at now. It is separate
// from loading so that callers choose: fail at start-up, or warn and let
// APNs decide. It fails with ErrNoCertificate if c holds no certificate.
func CheckValidity(c tls.Certificate, now time.Time) error {
	leaf, err := leafOf(c)
	if err != nil {
		return err
	}
	switch {
	case now.After(leaf.NotAfter):
		return fmt.Errorf("%w: %q expired at %s", ErrCertificateExpired,
			leaf.Subject.CommonName, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("%w: %q is valid only from %s", ErrCertificateExpired,
			leaf.Subject.CommonName, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// ClientTLSConfig returns the TLS configuration a client of APNs (binary
// gateway, feedback service, HTTP/2 API) uses to reach addr ("host:port"):
// cert as the client certificate, roots to verify the server (nil: the
// system roots), TLS 1.2 or later, and ServerName set to addr's host, so the
// server certificate is checked against the host dialled (an IP address
// such as 127.0.0.1 is checked against the certificate's IP addresses).
// Certificate checks are always on.
//
// It fails, wrapping ErrInvalidOption, if addr has no port, and with
// ErrNoCertificate or ErrNoPrivateKey if cert is empty. The result is a new
// Config each call; callers may set NextProtos and the like.
func ClientTLSConfig(addr string, cert tls.Certificate, roots *x509.CertPool) (*tls.Config, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: address %q: %v", ErrInvalidOption, addr, err)
	}
	if host == "" || port == "" {
		return nil, fmt.Errorf("%w: address %q: want host:port", ErrInvalidOption, addr)
	}
	if len(cert.Certificate) == 0 {
		return nil, fmt.Errorf("%w: empty tls.Certificate", ErrNoCertificate)
	}
	if cert.PrivateKey == nil {
		return nil, fmt.Errorf("%w: tls.Certificate has no PrivateKey", ErrNoPrivateKey)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      roots,
		ServerName:   host,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// CertificateRefused reports whether err is a TLS alert by which the
// server refused our client certificate (bad, unknown CA, expired, revoked,
// required but missing). With TLS 1.3 the alert arrives on the first read
// after the handshake, not from the handshake itself. Engines wrap such
// errors with ErrCredentials.
func CertificateRefused(err error) bool {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return false
	}
	// crypto/tls reports a received alert as net.OpError{Op: "remote
	// error", Err: alert(code)}, with alert an unexported uint8 type.
	v := reflect.ValueOf(op.Err)
	if v.Kind() != reflect.Uint8 {
		return false
	}
	switch v.Uint() {
	case 42, // bad_certificate
		43,  // unsupported_certificate
		44,  // certificate_revoked
		45,  // certificate_expired
		46,  // certificate_unknown
		48,  // unknown_ca
		49,  // access_denied
		116: // certificate_required
		return true
	}
	return false
}

func readFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCertificate, err)
	}
	return b, nil
}

func leafOf(c tls.Certificate) (*x509.Certificate, error) {
	if c.Leaf != nil {
		return c.Leaf, nil
	}
	if len(c.Certificate) == 0 {
		return nil, fmt.Errorf("%w: empty tls.Certificate", ErrNoCertificate)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCertificate, err)
	}
	return leaf, nil
}

func parsePEM(src string, certPEM, keyPEM []byte) (tls.Certificate, error) {
	var (
		certs     []*x509.Certificate
		key       crypto.PrivateKey
		keyErr    error
		sawBlocks bool
	)
	if len(keyPEM) == 0 {
		keyPEM = certPEM
	}
	for rest := certPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		sawBlocks = true
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("%w: %s: certificate %d: %v", ErrCertificate, src, len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		if !sawBlocks {
			return tls.Certificate{}, fmt.Errorf("%w: %s: no PEM data", ErrNoCertificate, src)
		}
		return tls.Certificate{}, fmt.Errorf("%w: %s: no CERTIFICATE block", ErrNoCertificate, src)
	}
	for rest := keyPEM; key == nil; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if !strings.HasSuffix(b.Type, "PRIVATE KEY") {
			continue
		}
		if b.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED") {
			keyErr = fmt.Errorf("%w: %s: the private key is encrypted; decrypt it first (openssl pkey)", ErrNoPrivateKey, src)
			continue
		}
		if key, keyErr = parseKey(b.Bytes); keyErr != nil {
			keyErr = fmt.Errorf("%w: %s: %s block: %v", ErrNoPrivateKey, src, b.Type, keyErr)
		}
	}
	if key == nil {
		if keyErr != nil {
			return tls.Certificate{}, keyErr
		}
		return tls.Certificate{}, fmt.Errorf("%w: %s: no PRIVATE KEY block", ErrNoPrivateKey, src)
	}
	return assemble(src, key, certs)
}

// parseKey reads a DER private key as PKCS#8, PKCS#1 or SEC 1, whatever
// the PEM block's label says (mislabelled keys are common).
func parseKey(der []byte) (crypto.PrivateKey, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	return nil, errors.New("not a PKCS#8, PKCS#1 or EC private key")
}

func parseP12(src string, p12 []byte, password string) (tls.Certificate, error) {
	key, leaf, chain, err := pkcs12.DecodeChain(p12, password)
	switch {
	case errors.Is(err, pkcs12.ErrIncorrectPassword):
		return tls.Certificate{}, fmt.Errorf("%w: %s", ErrCertificatePassword, src)
	case errors.Is(err, pkcs12.ErrDecryption):
		return tls.Certificate{}, fmt.Errorf("%w: %s: decryption failed (or the file is corrupt)", ErrCertificatePassword, src)
	case err != nil && strings.Contains(err.Error(), "private key missing"):
		// go-pkcs12 has no typed error for this one.
		return tls.Certificate{}, fmt.Errorf("%w: %s: the PKCS#12 file holds no private key; export the certificate together with its key", ErrNoPrivateKey, src)
	case err != nil && strings.Contains(err.Error(), "certificate missing"):
		return tls.Certificate{}, fmt.Errorf("%w: %s: the PKCS#12 file holds no certificate", ErrNoCertificate, src)
	case err != nil && bytes.Contains(p12, []byte("-----BEGIN ")):
		return tls.Certificate{}, fmt.Errorf("%w: %s: PEM data, not PKCS#12", ErrCertificate, src)
	case err != nil && strings.Contains(err.Error(), "error reading P12 data"):
		// The DER structure itself is broken; asn1's detail is noise.
		return tls.Certificate{}, fmt.Errorf("%w: %s: not PKCS#12 data", ErrCertificate, src)
	case err != nil:
		return tls.Certificate{}, fmt.Errorf("%w: %s: unreadable PKCS#12 file: %v", ErrCertificate, src, err)
	}
	return assemble(src, key, append([]*x509.Certificate{leaf}, chain...))
}

// assemble makes a tls.Certificate of key and certs, with the certificate
// whose public key matches key as the leaf and the others as its chain.
func assemble(src string, key crypto.PrivateKey, certs []*x509.Certificate) (tls.Certificate, error) {
	signer, ok := key.(crypto.Signer)
	if !ok {
		return tls.Certificate{}, fmt.Errorf("%w: %s: unsupported key type %T", ErrNoPrivateKey, src, key)
	}
	switch signer.(type) {
	case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
	default:
		return tls.Certificate{}, fmt.Errorf("%w: %s: unsupported key type %T", ErrNoPrivateKey, src, key)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return tls.Certificate{}, fmt.Errorf("%w: %s: unsupported key type %T", ErrNoPrivateKey, src, key)
	}
	leafAt := -1
	for i, c := range certs {
		if pub.Equal(c.PublicKey) {
			leafAt = i
			break
		}
	}
	if leafAt < 0 {
		return tls.Certificate{}, fmt.Errorf("%w: %s: no certificate among %d matches the %s key (subject of the first: %q)",
			ErrKeyMismatch, src, len(certs), keyKind(signer), certs[0].Subject.CommonName)
	}
	out := tls.Certificate{PrivateKey: key, Leaf: certs[leafAt]}
	out.Certificate = append(out.Certificate, certs[leafAt].Raw)
	for i, c := range certs {
		if i != leafAt {
			out.Certificate = append(out.Certificate, c.Raw)
		}
	}
	return out, nil
}

func keyKind(k crypto.Signer) string {
	switch k.(type) {
	case *rsa.PrivateKey:
		return "RSA"
	case *ecdsa.PrivateKey:
		return "ECDSA"
	case ed25519.PrivateKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", k)
}
