package apns

import "time"

// SetBinaryGateProbeForTest sets how often a Send probes refused
// credentials (0: every Send).
func SetBinaryGateProbeForTest(e *BinaryEngine, d time.Duration) { e.c.gate.setInterval(d) }
