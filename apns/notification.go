package apns

import (
	"encoding/hex"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/jetpush/apns-worker/apns/jsonscan"
)

// Token is a device token's raw bytes.
type Token []byte

// MaxTokenLen is the longest device token Apple allows, in bytes.
const MaxTokenLen = 100

// ParseToken decodes a hex device token (any even length, 1 to 100 bytes).
// Length rules of a particular protocol are checked by Validate.
func ParseToken(s string) (Token, error) {
	if len(s) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrInvalidToken)
	}
	if len(s)%2 != 0 || len(s) > 2*MaxTokenLen {
		if err := notHex(s); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %d hex digits, want an even number from 2 to %d", ErrInvalidToken, len(s), 2*MaxTokenLen)
	}
	t := make(Token, len(s)/2)
	if _, err := hex.Decode(t, []byte(s)); err != nil {
		if err := notHex(s); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	return t, nil
}

// notHex names the first byte of s that is not a hex digit, if any: a
// token with a space or a dash is not hex, whatever its length.
func notHex(s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return fmt.Errorf("%w: %q at offset %d is not a hex digit", ErrInvalidToken, c, i)
		}
	}
	return nil
}

// String returns the token in lowercase hex.
func (t Token) String() string { return hex.EncodeToString(t) }

// LogValue redacts the token to its first 4 bytes, so logs can correlate
// without holding whole device tokens.
func (t Token) LogValue() slog.Value {
	if len(t) <= 4 {
		return slog.StringValue(hex.EncodeToString(t))
	}
	return slog.StringValue(hex.EncodeToString(t[:4]) + "…")
}

// Priority is the APNs delivery priority.
type Priority uint8

// Priorities. The zero Priority means "not set": APNs applies 10.
const (
	PriorityImmediate Priority = 10 // deliver now
	PriorityConserve  Priority = 5  // power-conserving; required for background
	PriorityLow       Priority = 1  // HTTP/2 only: lowest, may be dropped
)

// PushType is the HTTP/2 apns-push-type header.
type PushType string

// Push types Apple defines for the apns-push-type header.
const (
	PushTypeAlert        PushType = "alert"
	PushTypeBackground   PushType = "background"
	PushTypeComplication PushType = "complication"
	PushTypeControls     PushType = "controls"
	PushTypeFileProvider PushType = "fileprovider"
	PushTypeLiveActivity PushType = "liveactivity"
	PushTypeLocation     PushType = "location"
	PushTypeMDM          PushType = "mdm"
	PushTypePushToTalk   PushType = "pushtotalk"
	PushTypeVoIP         PushType = "voip"
	PushTypeWidgets      PushType = "widgets"
)

// Valid reports whether p is empty (not set) or one of Apple's push types.
func (p PushType) Valid() bool {
	switch p {
	case "", PushTypeAlert, PushTypeBackground, PushTypeComplication, PushTypeControls,
		PushTypeFileProvider, PushTypeLiveActivity, PushTypeLocation, PushTypeMDM,
		PushTypePushToTalk, PushTypeVoIP, PushTypeWidgets:
		return true
	}
	return false
}

// ExpireNow is the Expiration that tells APNs to try once and not store the
// notification (sent as 0 on the wire).
var ExpireNow = time.Unix(0, 0)

// Notification is one push to one device.
type Notification struct {
	Token   Token
	Payload []byte // a JSON object with an "aps" member (mdm: an "mdm" one)
	// Expiration: the zero time sends none (APNs' default storage);
	// ExpireNow sends 0 (try once, do not store). Otherwise it must be
	// from 1970 to 2106-02-07T06:28:15Z: APNs reads 32-bit UNIX seconds.
	Expiration time.Time
	Priority   Priority // 0: not set (APNs applies 10)

	// HTTP/2 only; the binary engine ignores them.
	Topic      string   // apns-topic; empty: the engine's default topic
	PushType   PushType // apns-push-type; empty: the engine's default
	CollapseID string   // apns-collapse-id, at most 64 bytes
	ID         string   // apns-id, a lowercase UUID; empty: APNs makes one
}

// Limits are the per-protocol checks Validate applies.
type Limits struct {
	TokenLen       int  // exact token length in bytes; 0: any length 1..100
	MaxPayload     int  // bytes
	MaxPayloadVoIP int  // bytes for push type voip; 0: MaxPayload
	AllowLowPrio   bool // priority 1 allowed (HTTP/2)
	// Binary refuses what only HTTP/2 can send: push type liveactivity
	// (ErrUnsupportedByProtocol).
	Binary bool
}

// Limits of the two protocols.
var (
	BinaryLimits = Limits{TokenLen: 32, MaxPayload: 2048, Binary: true}
	HTTP2Limits  = Limits{MaxPayload: 4096, MaxPayloadVoIP: 5120, AllowLowPrio: true}
)

// Validate checks n against l and the rules Apple enforces (README, "Job
// format"): the payload is a JSON object of valid UTF-8 with an object
// "aps" (push type mdm: a string "mdm", and "aps" if any an object) and no
// member name twice at its top level or in "aps" (RFC 7493), and the push
// type's topic suffix, priority and payload members hold.
// Every error wraps ErrInvalidNotification and one of the specific
// validation errors; ReasonOf names it.
func (n *Notification) Validate(l Limits) error {
	switch {
	case len(n.Token) == 0 || len(n.Token) > MaxTokenLen:
		return fmt.Errorf("%w: %d bytes", ErrInvalidToken, len(n.Token))
	case l.TokenLen != 0 && len(n.Token) != l.TokenLen:
		return fmt.Errorf("%w: %d bytes, want %d", ErrInvalidToken, len(n.Token), l.TokenLen)
	}
	if !n.PushType.Valid() {
		return fmt.Errorf("%w: %.40q", ErrInvalidPushType, n.PushType)
	}
	if l.Binary && n.PushType == PushTypeLiveActivity {
		return fmt.Errorf("%w: push type %s needs HTTP/2", ErrUnsupportedByProtocol, n.PushType)
	}
	max := l.MaxPayload
	if n.PushType == PushTypeVoIP && l.MaxPayloadVoIP != 0 {
		max = l.MaxPayloadVoIP
	}
	if len(n.Payload) > max {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrPayloadTooLarge, len(n.Payload), max)
	}
	var pl payload
	if err := pl.scan(n.Payload); err != nil && (err != ErrNoAPS || n.PushType != PushTypeMDM) {
		return err
	}
	switch n.Priority {
	case 0, PriorityImmediate, PriorityConserve:
	case PriorityLow:
		if !l.AllowLowPrio {
			return fmt.Errorf("%w: 1 is HTTP/2 only", ErrInvalidPriority)
		}
	default:
		return fmt.Errorf("%w: %d, want 10, 5 or 1", ErrInvalidPriority, n.Priority)
	}
	if len(n.CollapseID) > 64 {
		return fmt.Errorf("%w: %d bytes, at most 64", ErrInvalidCollapseID, len(n.CollapseID))
	}
	if i := controlByte(n.CollapseID); i >= 0 {
		return fmt.Errorf("%w: control character %q at byte %d", ErrInvalidCollapseID, n.CollapseID[i], i)
	}
	if paddedValue(n.CollapseID) {
		return fmt.Errorf("%w: %q starts or ends with a space", ErrInvalidCollapseID, n.CollapseID)
	}
	if !n.Expiration.IsZero() {
		if s := n.Expiration.Unix(); s < 0 || s > math.MaxUint32 {
			return fmt.Errorf("%w: %s is outside 1970 to 2106-02-07T06:28:15Z (32-bit UNIX seconds)", ErrInvalidExpiration, n.Expiration.UTC().Format(time.RFC3339))
		}
	}
	if n.ID != "" && !IsUUID(n.ID) {
		return fmt.Errorf("%w: %.40q", ErrInvalidID, n.ID)
	}
	for i := 0; i < len(n.Topic); i++ {
		if c := n.Topic[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("%w: %.64q", ErrInvalidTopic, n.Topic)
		}
	}
	if n.Topic != "" {
		if err := CheckTopic(n.PushType, n.Topic); err != nil {
			return err
		}
	}
	return checkPushType(n, &pl)
}

// TopicSuffix returns the suffix Apple requires of the topic of push type
// p ("" if none).
func TopicSuffix(p PushType) string {
	switch p {
	case PushTypeVoIP:
		return ".voip"
	case PushTypeComplication:
		return ".complication"
	case PushTypeFileProvider:
		return ".pushkit.fileprovider"
	case PushTypeLiveActivity:
		return ".push-type.liveactivity"
	case PushTypeLocation:
		return ".location-query"
	case PushTypePushToTalk:
		return ".voip-ptt"
	case PushTypeWidgets:
		return ".push-type.widgets"
	case PushTypeControls:
		return ".push-type.controls"
	}
	return ""
}

// CheckTopic checks that topic, the one a notification of push type p is
// sent with (its own or the engine's default), has the suffix p needs
// (ErrTopicDisallowed), and that it is not the suffix alone.
func CheckTopic(p PushType, topic string) error {
	suffix := TopicSuffix(p)
	if suffix == "" {
		return nil
	}
	if len(topic) <= len(suffix) || topic[len(topic)-len(suffix):] != suffix {
		return fmt.Errorf("%w: push type %s needs a topic ending in %s, not %.64q", ErrTopicDisallowed, p, suffix, topic)
	}
	return nil
}

// checkPushType applies the push type's rules on priority and aps members.
func checkPushType(n *Notification, pl *payload) error {
	switch n.PushType {
	case PushTypeBackground:
		if n.Priority != PriorityConserve {
			return fmt.Errorf("%w: background pushes must use priority 5, not %d", ErrInvalidPriority, n.Priority)
		}
		if ca := pl.aps("content-available"); string(ca) != "1" {
			return fmt.Errorf(`%w: aps.content-available is %.20q`, ErrMissingContentAvail, ca)
		}
	case PushTypeLocation, PushTypePushToTalk:
		if n.Priority != 0 && n.Priority != PriorityImmediate {
			return fmt.Errorf("%w: %s pushes must use priority 10, not %d", ErrInvalidPriority, n.PushType, n.Priority)
		}
	case PushTypeMDM:
		// An MDM push wakes a device to check in with its MDM server: its
		// payload is {"mdm":"<PushMagic>"}, with no aps needed.
		if mdm := pl.top("mdm"); len(mdm) < 3 || mdm[0] != '"' { // absent, not a string, or ""
			return fmt.Errorf(`%w: it carries the device's PushMagic`, ErrMissingMDM)
		}
	case PushTypeLiveActivity:
		if n.Priority == PriorityLow {
			return fmt.Errorf("%w: liveactivity pushes use priority 10 or 5, not 1", ErrInvalidPriority)
		}
		return checkLiveActivity(pl)
	}
	return nil
}

// checkLiveActivity applies BROADCAST.md §5-6 to a device Live Activity's aps.
func checkLiveActivity(pl *payload) error {
	var event string
	switch ev := pl.aps("event"); string(ev) {
	case `"start"`, `"update"`, `"end"`:
		event = string(ev[1 : len(ev)-1])
	case "":
		return fmt.Errorf(`%w: no aps.event`, ErrBadLiveActivity)
	default:
		return fmt.Errorf(`%w: aps.event %.40s, want "start", "update" or "end"`, ErrBadLiveActivity, ev)
	}
	if ts := pl.aps("timestamp"); !wholeSeconds(ts) {
		return fmt.Errorf(`%w: aps.timestamp %.40q, want whole UNIX seconds`, ErrBadLiveActivity, ts)
	}
	if cs := pl.aps("content-state"); cs != nil && cs[0] != '{' {
		return fmt.Errorf(`%w: aps.content-state is not an object`, ErrBadLiveActivity)
	}
	if event == "start" {
		switch at, attrs := pl.aps("attributes-type"), pl.aps("attributes"); {
		case at == nil || at[0] != '"':
			return fmt.Errorf(`%w: start without a string aps.attributes-type`, ErrBadLiveActivity)
		case attrs == nil || attrs[0] != '{':
			return fmt.Errorf(`%w: start without an object aps.attributes`, ErrBadLiveActivity)
		case pl.aps("alert") == nil:
			return fmt.Errorf(`%w: start without aps.alert`, ErrBadLiveActivity)
		}
	}
	return nil
}

// wholeSeconds reports whether the JSON number b is a positive integer of
// UNIX seconds (at most 11 digits: larger values look like milliseconds).
func wholeSeconds(b []byte) bool {
	if len(b) == 0 || len(b) > 11 || b[0] == '0' {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// IsUUID reports whether s is a UUID in canonical lowercase form
// (8-4-4-4-12 hex digits), as APNs wants in apns-id.
func IsUUID(s string) bool {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !lowerHex[s[i]] && i != 8 && i != 13 && i != 18 && i != 23 {
			return false
		}
	}
	return true
}

// lowerHex marks the digits of lowercase hex.
var lowerHex = func() (t [256]bool) {
	for _, c := range "0123456789abcdef" {
		t[c] = true
	}
	return t
}()

// payload is a notification's payload, checked by scan, with its outline
// for the push-type rules to read members from.
type payload struct {
	p []byte
	o jsonscan.Outline
}

// scan checks that p is a JSON object of valid UTF-8 with an object "aps",
// and no member name twice at its top level or in "aps". It allocates only
// for escaped or many member names.
func (pl *payload) scan(p []byte) error {
	pl.p = p
	o := &pl.o
	valid, unicode := jsonscan.ValidOutline(p, "aps", o)
	switch {
	case !valid:
		return fmt.Errorf("%w: not valid JSON (or nested deeper than %d)", ErrInvalidPayload, jsonscan.MaxDepth)
	case !unicode:
		return fmt.Errorf("%w: payload", ErrInvalidUTF8)
	}
	if dup := o.Outer.Repeated(p); dup != nil {
		return fmt.Errorf("%w: payload member %.64s", ErrDuplicateKey, dup)
	}
	if dup := o.Inner.Repeated(p); dup != nil {
		return fmt.Errorf("%w: aps member %.64s", ErrDuplicateKey, dup)
	}
	m, ok := o.InnerMember()
	switch {
	case !ok:
		return ErrNoAPS
	case m.Value(p)[0] != '{':
		return fmt.Errorf("%w: it is %.20s", ErrApsNotObject, m.Value(p))
	}
	return nil
}

// top is the value (raw JSON) of the payload's member name, or nil if it
// has none.
func (pl *payload) top(name string) []byte { return member(pl.p, &pl.o.Outer, name) }

// aps is the value (raw JSON) of aps's member name, or nil if it has none.
func (pl *payload) aps(name string) []byte { return member(pl.p, &pl.o.Inner, name) }

// member returns the value of the member of l (members of p) named name,
// or nil if l has none.
func member(p []byte, l *jsonscan.MemberList, name string) []byte {
	for i := range l.Len() {
		if m := l.At(i); jsonscan.NameIs(m.Name(p), l.Escaped(), name) {
			return m.Value(p)
		}
	}
	return nil
}
