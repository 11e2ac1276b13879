package apns

import "time"

// ClassifyForTest exposes the reason table's verdict ("delivered",
// "rejected", "credentials", "refresh-token", "temporary", "fault") for an
// answer carrying Apple's JSON reason to the external tests.
func ClassifyForTest(status int, reason string) string { return classify(status, reason).String() }

// VerdictForTest classifies a whole answer, status and body, and returns
// the class and Apple's reason.
func VerdictForTest(status int, body []byte) (class, reason string) {
	c, reason, _ := verdict(status, body)
	return c.String(), reason
}

// SetCredentialsProbeForTest sets how often refused credentials are probed.
func SetCredentialsProbeForTest(e *HTTP2Engine, d time.Duration) { e.c.gate.setInterval(d) }

// SetStdCredentialsProbeForTest sets how often refused credentials are probed.
func SetStdCredentialsProbeForTest(e *StdEngine, d time.Duration) { e.c.gate.setInterval(d) }
