package apns_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// sendOne sends one notification and waits for its outcome.
func sendOne(t *testing.T, e *apns.HTTP2Engine, col *h2Collector, i int) apns.Outcome {
	t.Helper()
	require.NoError(t, e.Send(context.Background(), &apns.Notification{Token: h2Token(i), Payload: h2Payload}, i))
	return col.wait(1)[0]
}

// TestJWTMintedOnceSharedAndRefreshed: one token for all connections,
// refreshed after 50 minutes, never twice within 20.
func TestJWTMintedOnceSharedAndRefreshed(t *testing.T) {
	t.Parallel()
	clock := newH2Clock()
	s := newH2Server(t, apnstest.HTTP2Clock(clock.Now), apnstest.HTTP2Record(true))
	col := newH2Collector(t, 64)
	e := newH2Engine(t, s, apns.WithOutcomeFunc(col.fn), apns.WithClock(clock.Now), apns.WithConns(4))
	ctx := context.Background()
	burst := func(from int) {
		for i := from; i < from+40; i++ {
			require.NoError(t, e.Send(ctx, &apns.Notification{Token: h2Token(i), Payload: h2Payload}, i))
		}
		for _, o := range col.wait(40) {
			require.NoError(t, o.Err)
		}
	}

	steps := []struct {
		name      string
		advance   time.Duration
		wantMints int
	}{
		{"first token, all connections", 0, 1},
		{"19 minutes: same token", 19 * time.Minute, 1},
		{"49 minutes: same token", 30 * time.Minute, 1},
		{"51 minutes: refreshed", 2 * time.Minute, 2},
		{"20 minutes later: too early again", 20 * time.Minute, 2},
		{"51 minutes after the refresh", 31 * time.Minute, 3},
	}
	for i, st := range steps {
		clock.Advance(st.advance)
		burst(i * 100)
		require.Equal(t, st.wantMints, s.Mints(), st.name)
	}
	require.Greater(t, s.Conns(), 1, "several connections shared the token")

	// The token itself: header {alg ES256, kid}, claims {iss, iat}.
	reqs := s.Requests()
	bearer := reqs[len(reqs)-1].Header["authorization"]
	raw, ok := strings.CutPrefix(bearer, "bearer ")
	require.True(t, ok)
	key, err := apns.ParseP8(s.P8())
	require.NoError(t, err)
	claims := jwt.MapClaims{}
	tok, err := jwt.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return &key.PublicKey, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithoutClaimsValidation())
	require.NoError(t, err)
	require.Equal(t, map[string]any{"alg": "ES256", "kid": s.KeyID}, tok.Header)
	require.Len(t, claims, 2)
	require.Equal(t, s.TeamID, claims["iss"])
	iat, err := claims.GetIssuedAt()
	require.NoError(t, err)
	require.Equal(t, clock.Now().Unix(), iat.Unix(), "the third token, minted just now")
}

func TestJWTExpiredProviderToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		engineAge  time.Duration // the engine's token age when APNs calls it expired
		wantErr    error
		wantMints  int
		wantTries  int
		wantInText string
	}{
		{"old enough: mint once and retry", 30 * time.Minute, nil, 2, 2, ""},
		{"fresh token: the clock is wrong", time.Minute, apns.ErrCredentials, 1, 1, "check the system clock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := newH2Clock()
			s := newH2Server(t, apnstest.HTTP2Inject(1, 403, "ExpiredProviderToken"))
			col := newH2Collector(t, 1)
			e := newH2Engine(t, s, apns.WithOutcomeFunc(col.fn), apns.WithClock(clock.Now))
			clock.Advance(tt.engineAge)
			o := sendOne(t, e, col, 1)
			require.ErrorIs(t, o.Err, tt.wantErr)
			require.Equal(t, tt.wantTries, o.Attempts)
			require.Equal(t, tt.wantMints, s.Mints())
			if tt.wantInText != "" {
				require.ErrorContains(t, o.Err, tt.wantInText)
				require.ErrorIs(t, e.Stats().CredentialsErr, apns.ErrCredentials)
			}
		})
	}
}

func TestJWTTooManyProviderTokenUpdatesDoesNotMint(t *testing.T) {
	t.Parallel()
	clock := newH2Clock()
	s := newH2Server(t, apnstest.HTTP2Inject(2, 429, "TooManyProviderTokenUpdates"))
	col := newH2Collector(t, 1)
	e := newH2Engine(t, s, apns.WithOutcomeFunc(col.fn), apns.WithClock(clock.Now))
	clock.Advance(45 * time.Minute)
	o := sendOne(t, e, col, 1)
	require.NoError(t, o.Err)
	require.Equal(t, 3, o.Attempts)
	require.Equal(t, 1, s.Mints())
}

func TestParseP8(t *testing.T) {
	t.Parallel()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	pkcs8, err := x509.MarshalPKCS8PrivateKey(ec)
	require.NoError(t, err)
	sec1, err := x509.MarshalECPrivateKey(ec)
	require.NoError(t, err)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	p384der, err := x509.MarshalPKCS8PrivateKey(p384)
	require.NoError(t, err)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	rsader, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	require.NoError(t, err)
	pemOfKey := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }

	tests := []struct {
		name    string
		in      []byte
		wantErr string // "" for a key that parses
	}{
		{"apple .p8 (PKCS#8)", pemOfKey("PRIVATE KEY", pkcs8), ""},
		{"SEC 1", pemOfKey("EC PRIVATE KEY", sec1), ""},
		{"SEC 1 under a PKCS#8 header", pemOfKey("PRIVATE KEY", sec1), ""},
		{"SEC 1 after a certificate", append(pemOfKey("CERTIFICATE", []byte{1}), pemOfKey("EC PRIVATE KEY", sec1)...), ""},
		{"P-384", pemOfKey("PRIVATE KEY", p384der), "an EC P-384 key, want an EC P-256 key"},
		{"RSA", pemOfKey("PRIVATE KEY", rsader), "*rsa.PrivateKey, want an EC P-256 key"},
		{"not PEM", []byte("MIGTAgEAMBMGByqGSM49AgEG"), "no PEM PRIVATE KEY block"},
		{"garbage DER", pemOfKey("PRIVATE KEY", []byte{1, 2, 3}), "PRIVATE KEY block"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			k, err := apns.ParseP8(tt.in)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.True(t, k.Equal(ec))
		})
	}
}
