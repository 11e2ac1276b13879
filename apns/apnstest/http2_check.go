package apnstest

import (
	"crypto/rand"
	"strconv"
	"strings"
	"time"

	"github.com/jetpush/apns-worker/apns"
)

// The HTTP2Server's request checks, in Apple's order, and the answers'
// identifiers.

// check validates a request like APNs; it returns status 0 for a valid one.
func (c *h2conn) check(st *h2stream) (int, string) {
	const prefix = "/3/device/"
	if !strings.HasPrefix(st.path, prefix) {
		return 404, "BadPath"
	}
	if st.method != "POST" {
		return 405, "MethodNotAllowed"
	}
	tok := st.path[len(prefix):]
	if tok == "" {
		return 400, "MissingDeviceToken"
	}
	if !h2IsHexToken(tok) {
		return 400, "BadDeviceToken"
	}
	st.token = strings.ToLower(tok)
	if st.dup {
		return 400, "DuplicateHeaders"
	}
	if status, reason := c.checkAuth(st); status != 0 {
		return status, reason
	}
	pt, hasPT := st.get(h2hPushType)
	if hasPT && !apns.PushType(pt).Valid() || hasPT && pt == "" {
		return 400, "InvalidPushType"
	}
	topic, hasTopic := st.get(h2hTopic)
	switch {
	case !hasTopic && !c.certOK:
		return 400, "MissingTopic"
	case hasTopic && !h2ValidTopic(topic):
		return 400, "BadTopic"
	case hasTopic && c.s.topics != nil && !c.s.topics[topic]:
		return 400, "TopicDisallowed"
	}
	if want, ok := c.s.tokenTopics[st.token]; ok && want != topic {
		return 400, "DeviceTokenNotForTopic"
	}
	prio, hasPrio := st.get(h2hPriority)
	if hasPrio && prio != "10" && prio != "5" && prio != "1" {
		return 400, "BadPriority"
	}
	if pt == string(apns.PushTypeBackground) && prio != "5" {
		return 400, "BadPriority" // an absent priority means 10
	}
	if exp, ok := st.get(h2hExpiration); ok && !h2IsDigits(exp) {
		return 400, "BadExpirationDate"
	}
	if cid, ok := st.get(h2hCollapseID); ok && len(cid) > 64 {
		return 400, "BadCollapseId"
	}
	if id, ok := st.get(h2hID); ok && !apns.IsUUID(id) {
		return 400, "BadMessageId"
	}
	if st.bodyLen == 0 {
		return 400, "PayloadEmpty"
	}
	max := apns.HTTP2Limits.MaxPayload
	if pt == string(apns.PushTypeVoIP) {
		max = apns.HTTP2Limits.MaxPayloadVoIP
	}
	if st.bodyLen > max {
		return 413, "PayloadTooLarge"
	}
	return 0, ""
}

// checkAuth verifies the connection's certificate or the request's JWT.
// A connection keeps its last verified token, so the steady state costs a
// string comparison.
func (c *h2conn) checkAuth(st *h2stream) (int, string) {
	if c.certOK {
		return 0, ""
	}
	auth, ok := st.get(h2hAuth)
	if !ok || auth == "" {
		return 403, "MissingProviderToken"
	}
	tok, ok := strings.CutPrefix(auth, "bearer ")
	if !ok {
		tok, ok = strings.CutPrefix(auth, "Bearer ")
	}
	if !ok || tok == "" {
		return 403, "InvalidProviderToken"
	}
	now := c.s.now()
	if tok == c.jwt {
		if now.Sub(c.jwtIat) > time.Hour {
			return 403, "ExpiredProviderToken"
		}
		return 0, ""
	}
	iat, reason := c.s.verifyJWT(tok)
	if reason != "" {
		return 403, reason
	}
	c.s.noteMint(tok)
	if now.Sub(iat) > time.Hour {
		return 403, "ExpiredProviderToken"
	}
	if c.jwt != "" && iat.Sub(c.jwtIat).Abs() < 20*time.Minute {
		return 429, "TooManyProviderTokenUpdates"
	}
	c.jwt, c.jwtIat = tok, iat
	return 0, ""
}

func h2IsHexToken(s string) bool {
	if len(s)%2 != 0 || len(s) > 2*apns.MaxTokenLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func h2IsDigits(s string) bool {
	if s == "" || len(s) > 19 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func h2ValidTopic(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

func h2StatusText(code int) string {
	switch code {
	case 200:
		return "200"
	case 400:
		return "400"
	case 403:
		return "403"
	case 404:
		return "404"
	case 405:
		return "405"
	case 410:
		return "410"
	case 413:
		return "413"
	case 429:
		return "429"
	case 500:
		return "500"
	case 503:
		return "503"
	}
	return strconv.Itoa(code)
}

// newUUID makes a random (version 4) lowercase UUID for apns-id.
func (c *h2conn) newUUID() string {
	const hexd = "0123456789abcdef"
	var u [16]byte
	a, b := c.rnd.Uint64(), c.rnd.Uint64()
	for i := 0; i < 8; i++ {
		u[i], u[8+i] = byte(a>>(8*i)), byte(b>>(8*i))
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	var out [36]byte
	j := 0
	for i, x := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out[j] = '-'
			j++
		}
		out[j], out[j+1] = hexd[x>>4], hexd[x&0xf]
		j += 2
	}
	return string(out[:])
}

// h2RandID makes a 10-character id like Apple's key and team ids.
func h2RandID() string {
	const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	var b [10]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = alnum[int(b[i])%len(alnum)]
	}
	return string(b[:])
}
