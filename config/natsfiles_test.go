package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Throwaway NATS credentials made for these tests (an account that exists
// nowhere signed the user JWT); the account seed is not a user seed.
const (
	testJWT         = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJqdGkiOiJDUUw3RlRTUVJKR1ZZR0dQRTY3R1JXMkpPTE5MRzZRM1gzWVNSQ1BPVEE1MjVRNkFHT1FRIiwiaWF0IjoxNzk2NjEyMDk1LCJpc3MiOiJBQ080TTVWSFlNNE9LWDRTR01SUE8zU1RQMldCR1ZCU0ZUMkRXNVo3TlBYQU9UMjI3TVE3QkpVSCIsIm5hbWUiOiJhcG5zLXdvcmtlciB0ZXN0Iiwic3ViIjoiVUE2QjMzUk1WUUZRTTVWR1dVSlpTQTNYSDc2WTRRNzJYR1Q0RE9DNFg0RlJQNVdTU0ZHT1hKTEEiLCJuYXRzIjp7InB1YiI6e30sInN1YiI6e30sInN1YnMiOi0xLCJkYXRhIjotMSwicGF5bG9hZCI6LTEsImlzc3Vlcl9hY2NvdW50IjoiQUNPNE01VkhZTTRPS1g0U0dNUlBPM1NUUDJXQkdWQlNGVDJEVzVaN05QWEFPVDIyN01RN0JKVUgiLCJ0eXBlIjoidXNlciIsInZlcnNpb24iOjJ9fQ.xf5OSPrRownNT94qm_y88Z7MI_KH4dzQzv5KvTy00h7GtlU9HS5RNhi6kW1Ug2GWHba96eB6fkcdwnaXKHcQAQ"
	testUserSeed    = "SUAHQUBEJ5MC75KGGVTXZVDLZSDFCZM772GUBOC5HOZW4K7U3HJONIKSHQ"
	testAccountSeed = "SAAPXGWL3DV42AQ3BLXMZEIEQIIOQDQEK345QJYAQCLLU4L7U6CARLQOVQ"
	testJWTBlock    = "-----BEGIN NATS USER JWT-----\n" + testJWT + "\n------END NATS USER JWT------\n"
	testSeedBlock   = "-----BEGIN USER NKEY SEED-----\n" + testUserSeed + "\n------END USER NKEY SEED------\n"
	testCreds       = testJWTBlock + "\n" + testSeedBlock
)

// TestNATSKeyFiles: the NATS credentials, NKey and TLS client key files are
// read with nats.go's own loaders at start-up, so a file the connection
// would fail on is a bad variable (exit 2, named), not a NATS server that
// seems unreachable for APNS_WORKER_NATS_CONNECT_TIMEOUT.
func TestNATSKeyFiles(t *testing.T) {
	f := newFiles(t)
	write := func(name, content string) string {
		p := filepath.Join(t.TempDir(), name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	junk := write("junk", "not a seed, not a key\n")
	other := newFiles(t) // another certificate and key
	remote := map[string]string{"NATS_URL": "nats://127.0.0.1:4222"}

	for _, tt := range []struct {
		name string
		env  map[string]string
		want map[string]string // variable (no prefix) → in its error; none: valid
	}{
		{"creds", map[string]string{"NATS_CREDS": f.creds}, nil},
		{"nkey", map[string]string{"NATS_NKEY": f.nkey}, nil},
		{"nkey in a creds file", map[string]string{"NATS_NKEY": f.creds}, nil}, // nats.go finds the seed
		{"tls pair", map[string]string{"NATS_TLS_CERT": f.certPEM, "NATS_TLS_KEY": f.keyPEM}, nil},
		{"tls combined file and its key", map[string]string{"NATS_TLS_CERT": f.combined, "NATS_TLS_KEY": f.keyPEM}, nil},

		{"nkey without a seed", map[string]string{"NATS_NKEY": junk}, map[string]string{"NATS_NKEY": "no NKey user seed: nkeys: no nkey seed found"}},
		{"nkey an account seed", map[string]string{"NATS_NKEY": write("account.nk", testAccountSeed+"\n")},
			map[string]string{"NATS_NKEY": "Not a valid nkey user seed"}},
		{"creds without anything", map[string]string{"NATS_CREDS": junk}, map[string]string{"NATS_CREDS": "no user JWT"}},
		{"creds a bare seed", map[string]string{"NATS_CREDS": f.nkey}, map[string]string{"NATS_CREDS": "a file with only a seed goes in APNS_WORKER_NATS_NKEY"}},
		{"creds without a seed", map[string]string{"NATS_CREDS": write("jwt-only.creds", testJWTBlock)},
			map[string]string{"NATS_CREDS": "no NKey seed that signs: nkeys: no nkey seed found"}},
		{"tls key of another certificate", map[string]string{"NATS_TLS_CERT": f.certPEM, "NATS_TLS_KEY": other.keyPEM},
			map[string]string{"NATS_TLS_KEY": "is not the key of " + f.certPEM + " (APNS_WORKER_NATS_TLS_CERT): tls: private key does not match public key"}},
		{"every bad file at once", map[string]string{"NATS_CREDS": junk, "NATS_TLS_CERT": f.certPEM, "NATS_TLS_KEY": other.keyPEM},
			map[string]string{"NATS_CREDS": "no user JWT", "NATS_TLS_KEY": "private key does not match public key"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			setEnv(t, merge(remote, tt.env))
			c, err := Load()
			if tt.want == nil {
				require.NoError(t, err)
				require.NotNil(t, c)
				return
			}
			require.Nil(t, c)
			got := map[string]string{}
			for _, e := range Errors(err) {
				got[strings.TrimPrefix(e.Var, Prefix+"_")] = e.Err.Error()
			}
			require.Len(t, got, len(tt.want), "errors: %v", err)
			for v, msg := range tt.want {
				require.Contains(t, got[v], msg, "errors: %v", err)
			}
			require.NotContains(t, err.Error(), testUserSeed)
		})
	}
}
