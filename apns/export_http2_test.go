package apns

// ClassifyForTest exposes the reason table's verdict ("delivered",
// "rejected", "credentials", "refresh-token", "temporary") to the external
// tests.
func ClassifyForTest(status int, reason string) string { return classify(status, reason).String() }
