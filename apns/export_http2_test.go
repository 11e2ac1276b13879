package apns

import "time"

// ClassifyForTest exposes the reason table's verdict ("delivered",
// "rejected", "credentials", "refresh-token", "temporary") to the external
// tests.
func ClassifyForTest(status int, reason string) string { return classify(status, reason).String() }

// SetCredentialsProbeForTest sets how often refused credentials are probed.
func SetCredentialsProbeForTest(e *HTTP2Engine, d time.Duration) { e.credProbe.Store(int64(d)) }
