package consumer

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpush/apns-worker/apns"
)

// ErrMalformedJob is wrapped by every error DecodeJob returns: the message
// is not a job, and retrying it will not help.
var ErrMalformedJob = errors.New("consumer: malformed job")

// Job is one push job as producers publish it on the jobs subject. The JSON
// form is documented in job.schema.json:
//
//	{"id":"0b0f4a52-63a4-4c4b-9c1e-2f1d2b8d6a10","token":"<hex>",
//	 "payload":{"aps":{"alert":"hi"}},"topic":"com.example.app",
//	 "push_type":"alert","priority":10,"expiration":"2030-01-01T00:00:00Z",
//	 "collapse_id":"news"}
//
// Only token and payload are required. Member names are case-sensitive and
// may not repeat; unknown members are ignored; members of the wrong JSON
// type are rejected (README, "The validation contract").
type Job struct {
	// ID identifies the job: it is the jobs stream's Nats-Msg-Id (so a
	// repeated publish is dropped), it names the job in events, and, when it
	// is a lowercase UUID, it is sent as apns-id. A job without one is
	// named in events by its Nats-Msg-Id header, if any, else by its stream
	// sequence.
	ID string `json:"id,omitempty"`
	// Token is the device token in hex.
	Token string `json:"token"`
	// Payload is the notification payload, a JSON object with an "aps"
	// member (push type mdm: an "mdm" one), sent byte for byte as published.
	Payload json.RawMessage `json:"payload"`
	// Topic is apns-topic; empty: the engine's default.
	Topic string `json:"topic,omitempty"`
	// PushType is apns-push-type; empty: the engine's default.
	PushType string `json:"push_type,omitempty"`
	// Priority is 10, 5 or 1; 0: not set (APNs applies 10).
	Priority int `json:"priority,omitempty"`
	// Expiration is an RFC 3339 string or UNIX seconds in JSON; 0 means try
	// once (apns.ExpireNow); absent means APNs' default storage.
	Expiration Expiration `json:"expiration,omitzero"`
	// CollapseID is apns-collapse-id (at most 64 bytes).
	CollapseID string `json:"collapse_id,omitempty"`
}

// Expiration is a job's expiration time. The zero Expiration means none;
// Expiration(apns.ExpireNow) means try once and do not store.
type Expiration time.Time

// IsZero reports whether e is unset.
func (e Expiration) IsZero() bool { return time.Time(e).IsZero() }

// MarshalJSON encodes e as UNIX seconds (0 for apns.ExpireNow).
func (e Expiration) MarshalJSON() ([]byte, error) {
	t := time.Time(e)
	if t.IsZero() {
		return []byte("null"), nil
	}
	if t.Unix() < 0 {
		return nil, fmt.Errorf("consumer: expiration %s before 1970", t)
	}
	return strconv.AppendInt(nil, t.Unix(), 10), nil
}

// UnmarshalJSON accepts an RFC 3339 string, whole UNIX seconds from 0 (try
// once) to 2^32-1, or null (none); the job decoder's rule.
func (e *Expiration) UnmarshalJSON(b []byte) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: empty", apns.ErrInvalidExpiration)
	}
	return e.decode(b)
}

// DecodeJob decodes a job message by the contract in the README ("Job
// format"): one JSON object of valid UTF-8, no member name twice, members
// of the right JSON types. The values are checked by Notification and
// apns.Notification.Validate. Every error wraps ErrMalformedJob, and for
// the rules with their own reason also the apns validation error
// (apns.ReasonOf names it).
func DecodeJob(data []byte) (Job, error) {
	j, err := decodeJob(data)
	if err != nil {
		return Job{}, err
	}
	j.Payload = append(json.RawMessage(nil), j.Payload...) // not an alias of data
	return j, nil
}

// Notification builds the notification j describes. Errors wrap
// apns.ErrInvalidNotification (and the specific apns validation error);
// protocol limits (payload size, token length) are checked by the engine's
// Send.
func (j *Job) Notification() (*apns.Notification, error) {
	tok, err := apns.ParseToken(j.Token)
	if err != nil {
		return nil, err
	}
	if p := bytes.TrimLeft(j.Payload, " \t\r\n"); len(p) == 0 || p[0] != '{' {
		what := "empty"
		if len(p) > 0 {
			what = kind(p)
		}
		return nil, fmt.Errorf("%w: it is %s", apns.ErrInvalidPayload, what)
	}
	switch j.Priority {
	case 0, 1, 5, 10:
	default:
		return nil, fmt.Errorf("%w: %d, want 10, 5 or 1", apns.ErrInvalidPriority, j.Priority)
	}
	n := &apns.Notification{
		Token:      tok,
		Payload:    j.Payload,
		Expiration: time.Time(j.Expiration),
		Priority:   apns.Priority(j.Priority),
		Topic:      j.Topic,
		PushType:   apns.PushType(j.PushType),
		CollapseID: j.CollapseID,
	}
	if apns.IsUUID(j.ID) {
		n.ID = j.ID
	}
	return n, nil
}

// NewJob returns a job for token and payload with a fresh lowercase UUID as
// its ID (so it is de-duplicated by the jobs stream and sent as apns-id).
func NewJob(token apns.Token, payload json.RawMessage) Job {
	return Job{ID: newUUID(), Token: token.String(), Payload: payload}
}

// newUUID returns a random (version 4) UUID in lowercase.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// PublishJob publishes j to subject (the jobs subject or below it) and
// waits for the stream's PubAck. A job with an ID carries it as
// Nats-Msg-Id, so publishing it again within the stream's duplicates window
// is a no-op (PubAck.Duplicate). Producers that need throughput publish the
// same JSON with js.PublishMsgAsync.
func PublishJob(ctx context.Context, js jetstream.JetStream, subject string, j Job) (*jetstream.PubAck, error) {
	data, err := j.encode()
	if err != nil {
		return nil, err
	}
	m := &nats.Msg{Subject: subject, Data: data}
	if j.ID != "" {
		m.Header = nats.Header{jetstream.MsgIDHeader: []string{j.ID}}
	}
	return js.PublishMsg(ctx, m)
}

// encode writes j as JSON without HTML escaping (the payload keeps its
// characters; json.Marshal would turn & < > into \u escapes).
func (j *Job) encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(j); err != nil {
		return nil, fmt.Errorf("consumer: encode job: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
