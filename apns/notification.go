package apns

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
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
	if len(s) == 0 || len(s)%2 != 0 || len(s) > 2*MaxTokenLen {
		return nil, fmt.Errorf("%w: %d hex digits, want an even number from 2 to %d", ErrInvalidToken, len(s), 2*MaxTokenLen)
	}
	t := make(Token, len(s)/2)
	if _, err := hex.Decode(t, []byte(s)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	return t, nil
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
	Payload []byte // a JSON object with an "aps" member
	// Expiration: the zero time sends none (APNs' default storage);
	// ExpireNow sends 0 (try once, do not store).
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
}

// Limits of the two protocols.
var (
	BinaryLimits = Limits{TokenLen: 32, MaxPayload: 2048}
	HTTP2Limits  = Limits{MaxPayload: 4096, MaxPayloadVoIP: 5120, AllowLowPrio: true}
)

// Validate checks n against l. Every error wraps ErrInvalidNotification and
// one of the specific validation errors.
func (n *Notification) Validate(l Limits) error {
	switch {
	case len(n.Token) == 0 || len(n.Token) > MaxTokenLen:
		return fmt.Errorf("%w: %d bytes", ErrInvalidToken, len(n.Token))
	case l.TokenLen != 0 && len(n.Token) != l.TokenLen:
		return fmt.Errorf("%w: %d bytes, want %d", ErrInvalidToken, len(n.Token), l.TokenLen)
	}
	max := l.MaxPayload
	if n.PushType == PushTypeVoIP && l.MaxPayloadVoIP != 0 {
		max = l.MaxPayloadVoIP
	}
	if len(n.Payload) > max {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrPayloadTooLarge, len(n.Payload), max)
	}
	if err := checkPayload(n.Payload); err != nil {
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
	if !n.PushType.Valid() {
		return fmt.Errorf("%w: %q", ErrInvalidPushType, n.PushType)
	}
	if n.PushType == PushTypeBackground && n.Priority == PriorityImmediate {
		return fmt.Errorf("%w: background pushes must use priority 5", ErrInvalidPriority)
	}
	if len(n.CollapseID) > 64 {
		return fmt.Errorf("%w: %d bytes", ErrInvalidCollapseID, len(n.CollapseID))
	}
	if n.ID != "" && !IsUUID(n.ID) {
		return fmt.Errorf("%w: %q", ErrInvalidID, n.ID)
	}
	for i := 0; i < len(n.Topic); i++ {
		if c := n.Topic[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("%w: %q", ErrInvalidTopic, n.Topic)
		}
	}
	return nil
}

// IsUUID reports whether s is a UUID in canonical lowercase form
// (8-4-4-4-12 hex digits), as APNs wants in apns-id.
func IsUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// checkPayload reports whether p is a JSON object with a top-level "aps"
// member, without allocating.
func checkPayload(p []byte) error {
	if !jsonscan.Valid(p) && !json.Valid(p) { // json.Valid decides what jsonscan refuses
		return ErrInvalidPayload
	}
	i := jsonscan.SkipSpace(p, 0)
	if i >= len(p) || p[i] != '{' {
		return ErrInvalidPayload
	}
	i++
	for {
		i = jsonscan.SkipSpace(p, i)
		if i >= len(p) || p[i] == '}' {
			return ErrNoAPS
		}
		if p[i] == ',' {
			i = jsonscan.SkipSpace(p, i+1)
		}
		// p[i] is the opening quote of a key (p is valid JSON).
		end := jsonscan.SkipString(p, i)
		if key := p[i:end]; string(key) == `"aps"` || bytes.IndexByte(key, '\\') >= 0 && unquote(key) == "aps" {
			return nil
		}
		i = jsonscan.SkipSpace(p, end)
		i = jsonscan.SkipValue(p, jsonscan.SkipSpace(p, i+1)) // past ':' and the value
	}
}

// unquote decodes an escaped JSON key (rare: the fast path compares bytes).
func unquote(key []byte) string {
	var s string
	_ = json.Unmarshal(key, &s)
	return s
}
