package apns

// binaryOptions are the binary engine's own settings.
type binaryOptions struct{}
