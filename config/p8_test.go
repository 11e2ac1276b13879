package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestP8Forms: config checks APNS_WORKER_APNS_P8_FILE with apns.ParseP8,
// the parser the engine uses, so a key the engine takes (PKCS#8 as Apple
// issues it, or SEC 1 as some tools write it) passes, and any other key is
// refused with an error naming the variable and saying what the key is.
func TestP8Forms(t *testing.T) {
	f := newFiles(t)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(t.TempDir(), name)
		require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return p
	}
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	pkcs8, err := x509.MarshalPKCS8PrivateKey(p256)
	require.NoError(t, err)
	sec1, err := x509.MarshalECPrivateKey(p256)
	require.NoError(t, err)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	p384SEC1, err := x509.MarshalECPrivateKey(p384)
	require.NoError(t, err)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	rsaDER, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	require.NoError(t, err)

	tests := []struct {
		name, file, msg string // msg "" for a key that passes
	}{
		{"PKCS#8 P-256", write("pkcs8.p8", "PRIVATE KEY", pkcs8), ""},
		{"SEC 1 P-256", write("sec1.p8", "EC PRIVATE KEY", sec1), ""},
		{"SEC 1 P-384", write("p384.p8", "EC PRIVATE KEY", p384SEC1), "an EC P-384 key, want an EC P-256 key"},
		{"PKCS#8 RSA", write("rsa.p8", "PRIVATE KEY", rsaDER), "*rsa.PrivateKey, want an EC P-256 key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setEnv(t, merge(tokenAuth(f), map[string]string{"APNS_P8_FILE": tt.file}))
			c, err := Load()
			if tt.msg == "" {
				require.NoError(t, err)
				require.Equal(t, tt.file, c.APNs.P8File)
				return
			}
			errs := Errors(err)
			require.Len(t, errs, 1, "errors: %v", err)
			require.Equal(t, "APNS_WORKER_APNS_P8_FILE", errs[0].Var)
			require.Contains(t, err.Error(), tt.file)
			require.Contains(t, err.Error(), tt.msg)
		})
	}
}
