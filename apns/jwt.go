package apns

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Provider-token timing (Apple: refresh no more than once every 20 minutes
// and no less than once every 60).
const (
	// TokenRefreshAfter is the age at which the engine mints a new token.
	TokenRefreshAfter = 50 * time.Minute
	// TokenMinInterval is the least time between two mints.
	TokenMinInterval = 20 * time.Minute
)

// Auth is how an HTTP/2 engine proves itself to APNs: a provider token
// (TokenAuth) or a client certificate (CertificateAuth).
type Auth struct {
	key    *ecdsa.PrivateKey
	keyID  string
	teamID string
	cert   *tls.Certificate
}

// TokenAuth authenticates with ES256 JWTs signed by the .p8 key, whose
// key id and team id are the 10-character identifiers from Apple's
// developer account. See ParseP8.
func TokenAuth(key *ecdsa.PrivateKey, keyID, teamID string) Auth {
	return Auth{key: key, keyID: keyID, teamID: teamID}
}

// CertificateAuth authenticates with a provider client certificate, e.g.
// from LoadCertificate or ParsePEMCertificate.
func CertificateAuth(cert tls.Certificate) Auth {
	return Auth{cert: &cert}
}

// validate reports a missing or malformed credential.
func (a Auth) validate() error {
	switch {
	case a.cert != nil:
		if len(a.cert.Certificate) == 0 {
			return fmt.Errorf("%w: certificate auth without a certificate", ErrInvalidOption)
		}
		return nil
	case a.key == nil:
		return fmt.Errorf("%w: no credentials: use TokenAuth or CertificateAuth", ErrInvalidOption)
	case a.key.Curve != elliptic.P256():
		return fmt.Errorf("%w: token key is not a P-256 key", ErrInvalidOption)
	case !printable(a.keyID) || !printable(a.teamID):
		return fmt.Errorf("%w: token auth needs a key id and a team id", ErrInvalidOption)
	}
	return nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return s != ""
}

// ParseP8 decodes the PEM of a .p8 key file from Apple for TokenAuth: an
// ECDSA P-256 key in a PKCS#8 "PRIVATE KEY" block (what Apple issues) or a
// SEC 1 "EC PRIVATE KEY" block (what some tools write). It is the one .p8
// parser: the config check and the engine both use it. Any other key (RSA,
// P-384, Ed25519) is refused with an error that says what it is.
func ParseP8(pemBytes []byte) (*ecdsa.PrivateKey, error) {
	var block *pem.Block
	for rest := pemBytes; ; {
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("apns: .p8 key: no PEM PRIVATE KEY block (want the .p8 file from Apple)")
		}
		if strings.HasSuffix(block.Type, "PRIVATE KEY") {
			break
		}
	}
	var k any
	var err error
	if block.Type == "EC PRIVATE KEY" {
		k, err = x509.ParseECPrivateKey(block.Bytes)
	} else if k, err = x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		// A SEC 1 key under a "PRIVATE KEY" header.
		if ek, err2 := x509.ParseECPrivateKey(block.Bytes); err2 == nil {
			k, err = ek, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("apns: .p8 key: %s block: %w", block.Type, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	switch {
	case !ok:
		return nil, fmt.Errorf("apns: .p8 key: a %T, want an EC P-256 key (ES256)", k)
	case ek.Curve != elliptic.P256():
		return nil, fmt.Errorf("apns: .p8 key: an EC %s key, want an EC P-256 key (ES256)", ek.Curve.Params().Name)
	}
	return ek, nil
}

// providerToken is one minted JWT, shared by every connection.
type providerToken struct {
	bearer string    // "bearer <jwt>", the authorization header value
	iat    time.Time // the iat claim (the engine's clock, to the second)
}

// tokenSource mints the engine's provider token once and shares it across
// all connections; it refreshes it after TokenRefreshAfter and never mints
// twice within TokenMinInterval.
type tokenSource struct {
	key    *ecdsa.PrivateKey
	keyID  string
	teamID string
	now    func() time.Time

	mu    sync.Mutex // serialises minting
	cur   atomic.Pointer[providerToken]
	mints atomic.Uint64
}

func newTokenSource(a Auth, now func() time.Time) *tokenSource {
	return &tokenSource{key: a.key, keyID: a.keyID, teamID: a.teamID, now: now}
}

// token returns the current token, minting the first one or a refresh
// once the current is TokenRefreshAfter old.
func (s *tokenSource) token() (*providerToken, error) {
	if t := s.cur.Load(); t != nil && s.now().Sub(t.iat) < TokenRefreshAfter {
		return t, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.cur.Load()
	if t != nil && s.now().Sub(t.iat) < TokenRefreshAfter {
		return t, nil
	}
	return s.mintLocked()
}

// expired handles 403 ExpiredProviderToken for a request sent with t. It
// mints a new token once, if t is still current and old enough to be
// replaced; a retry is then worth it. A token that APNs calls expired less
// than TokenMinInterval after minting means the clock is wrong: that is a
// credentials error, and minting again would only earn 429
// TooManyProviderTokenUpdates.
func (s *tokenSource) expired(t *providerToken) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.Load()
	if cur != t {
		return nil // already replaced: send again with the new one
	}
	if age := s.now().Sub(cur.iat); age < TokenMinInterval {
		return fmt.Errorf("%w: 403 ExpiredProviderToken for a token minted %s ago (iat %d): check the system clock",
			ErrCredentials, age.Round(time.Second), cur.iat.Unix())
	}
	_, err := s.mintLocked()
	return err
}

func (s *tokenSource) mintLocked() (*providerToken, error) {
	if prev := s.cur.Load(); prev != nil && s.now().Sub(prev.iat) < TokenMinInterval {
		return prev, nil // never more often than every 20 minutes
	}
	iat := s.now().Truncate(time.Second)
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": s.teamID, "iat": iat.Unix()})
	tok.Header = map[string]any{"alg": "ES256", "kid": s.keyID}
	signed, err := tok.SignedString(s.key)
	if err != nil {
		return nil, fmt.Errorf("apns: sign provider token: %w", err)
	}
	t := &providerToken{bearer: "bearer " + signed, iat: iat}
	s.cur.Store(t)
	s.mints.Add(1)
	return t, nil
}
