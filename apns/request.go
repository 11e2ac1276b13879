package apns

import (
	"encoding/hex"
	"strconv"
)

// headerWriter takes one HTTP/2 request's header fields, pseudo-headers
// first: h2conn's HeaderEncoder for HTTP2Engine, a net/http request for
// StdEngine. Unique marks values of one request only (sent never-indexed).
type headerWriter interface {
	Field(name, value string)
	Unique(name, value string)
	UniqueBytes(name string, value []byte)
}

// Priorities and their header values, precomputed.
var priorityValues = [11]string{1: "1", 5: "5", 10: "10"}

// describe writes the request of a device push, the one description both
// HTTP/2 engines send: POST /3/device/<token> with the apns-* headers.
// Values unique to one notification (path, apns-id, expiration, collapse
// id) are marked so: indexed, they would only evict the shared ones
// (authorization, topic, push type) from the hpack table. scratch is
// reused for the values it builds, and returned.
func describe(d *delivery, o *http2Options, authority string, w headerWriter, scratch []byte) []byte {
	n := d.n
	w.Field(":method", "POST")
	w.Field(":scheme", "https")
	w.Field(":authority", authority)
	scratch = hex.AppendEncode(append(scratch[:0], "/3/device/"...), n.Token)
	w.UniqueBytes(":path", scratch)
	if d.tok != nil {
		w.Field("authorization", d.tok.bearer)
	}
	if t := n.Topic; t != "" {
		w.Field("apns-topic", t)
	} else if t := o.topic; t != "" {
		w.Field("apns-topic", t)
	}
	if p := n.PushType; p != "" {
		w.Field("apns-push-type", string(p))
	} else if p := o.pushType; p != "" {
		w.Field("apns-push-type", string(p))
	}
	if n.Priority != 0 {
		w.Field("apns-priority", priorityValues[n.Priority])
	}
	if !n.Expiration.IsZero() {
		scratch = strconv.AppendInt(scratch[:0], max(n.Expiration.Unix(), 0), 10)
		w.UniqueBytes("apns-expiration", scratch)
	}
	if n.ID != "" {
		w.Unique("apns-id", n.ID)
	}
	if n.CollapseID != "" {
		w.Unique("apns-collapse-id", n.CollapseID)
	}
	return scratch
}
