package apns

// http2Options are the HTTP/2 engine's own settings.
type http2Options struct{}
