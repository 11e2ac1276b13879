// Package h2conn is one HTTP/2 client connection on x/net's Framer and
// hpack, for an owner that sends many small requests and reads small
// answers. It knows nothing of what the requests mean.
//
// Each Conn runs two goroutines: a writer (Serve's) that pulls requests
// from the owner's queue while it may open a stream and writes every ready
// frame in one write, and a reader that decodes the peer's frames. There
// is no goroutine, timer or channel per request: the owner embeds a Stream
// in each of its requests, encodes its own header fields through a
// HeaderEncoder, and is told each request's end through Owner.Done, called
// from the connection's goroutines.
//
// The connection follows RFC 9113: every SETTINGS value is validated
// before it is applied (an invalid one is a connection error answered with
// GOAWAY and the code: MAX_FRAME_SIZE outside 16384..16777215 and
// ENABLE_PUSH other than 0 are PROTOCOL_ERROR, INITIAL_WINDOW_SIZE above
// 2^31-1 or a window pushed past it is FLOW_CONTROL_ERROR); it advertises
// SETTINGS_MAX_HEADER_LIST_SIZE and fails only the one stream whose
// response header block exceeds it (RST_STREAM, hpack kept in sync);
// it keeps response bodies up to Config.MaxBody and discards the rest while
// granting flow-control window back; its own protocol errors (frames out of
// order, DATA or HEADERS on a stream it never opened, PUSH_PROMISE) end the
// connection with GOAWAY. It sends PING when idle and after a request timed
// out, and drains after the peer's GOAWAY: streams above the peer's last
// stream id are handed back with ErrRefused.
package h2conn
