package worker

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestWarnIfExposed: the embedded server's listen address gets the loud
// no-authentication warning whenever it is not loopback only (the image's
// 0.0.0.0:4222, all interfaces, a LAN address), and no warning on
// loopback (the default).
func TestWarnIfExposed(t *testing.T) {
	for _, tt := range []struct {
		listen string
		warn   bool
	}{
		{"0.0.0.0:4222", true},
		{":4222", true},
		{"[::]:4222", true},
		{"192.168.1.10:4222", true},
		{"nats.internal:4222", true},
		{"127.0.0.1:4222", false},
		{"127.0.0.2:4222", false},
		{"[::1]:4222", false},
		{"localhost:4222", false},
	} {
		var b bytes.Buffer
		warnIfExposed(slog.New(slog.NewJSONHandler(&b, nil)), tt.listen)
		if !tt.warn {
			require.Empty(t, b.String(), tt.listen)
			continue
		}
		require.Contains(t, b.String(), `"level":"WARN"`, tt.listen)
		require.Contains(t, b.String(), "EMBEDDED NATS LISTENS BEYOND THIS HOST WITHOUT AUTHENTICATION OR TLS", tt.listen)
		require.Contains(t, b.String(), `"var":"APNS_WORKER_EMBEDDED_LISTEN","value":"`+tt.listen+`"`, tt.listen)
	}
}
