package consumer

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/jsonscan"
)

// Event kinds; each has its own subject below Options.EventsSubject and is
// part of the event's Nats-Msg-Id.
const (
	KindRejected   = "rejected"   // APNs refused the job, or the job is malformed
	KindBadToken   = "badtokens"  // a device token to remove
	KindDeadLetter = "deadletter" // the job failed MaxDeliver times, or expired
	KindDelivered  = "delivered"  // receipt (Options.Receipts)
)

// Sources of a BadTokenEvent.
const (
	SourceRejection = "rejection"
	SourceFeedback  = "feedback"
)

// Reasons of rejection events for malformed jobs; apns/reason.go lists
// every reason (APNs rejections carry APNs' own, e.g. "BadDeviceToken").
const (
	ReasonMalformedJob        = apns.ReasonMalformedJob        // not a job: bad JSON or a wrong type
	ReasonInvalidNotification = apns.ReasonInvalidNotification // a job the engine refused before sending
)

// RejectionEvent is published on <events>.rejected when APNs refuses a job
// for good or the job is malformed. The job was then acked (rejected) or
// terminated (malformed): it will not be retried.
type RejectionEvent struct {
	JobID      string    `json:"job_id,omitempty"`
	Seq        uint64    `json:"seq"`                   // jobs stream sequence
	Token      string    `json:"token,omitempty"`       // hex, if the job had a readable one
	Protocol   string    `json:"protocol"`              // Options.Protocol: "http2", "binary" or "mock"
	Status     int       `json:"status,omitempty"`      // binary status code
	Reason     string    `json:"reason"`                // one of apns/reason.go's
	HTTPStatus int       `json:"http_status,omitempty"` // HTTP/2 status
	Timestamp  time.Time `json:"timestamp,omitzero"`    // HTTP/2 410: token invalid since
	Time       time.Time `json:"time"`                  // when the worker saw the outcome
	Error      string    `json:"error"`
	Malformed  bool      `json:"malformed,omitempty"`
	EventJob
}

// BadTokenEvent is published on <events>.badtokens for each dead device
// token: from a rejection (binary status 8; HTTP/2 BadDeviceToken,
// Unregistered, ExpiredToken) or from the feedback service.
type BadTokenEvent struct {
	Token  string    `json:"token"` // hex
	Time   time.Time `json:"time"`  // when the token was known bad (APNs timestamp, or now)
	Source string    `json:"source"`
	Reason string    `json:"reason,omitempty"`
	JobID  string    `json:"job_id,omitempty"`
	Seq    uint64    `json:"seq,omitempty"`
}

// Reasons of dead-letter events.
const (
	ReasonMaxDeliver = "MaxDeliver" // the job failed MaxDeliver times
	ReasonExpired    = "Expired"    // the job's expiration passed before it could be sent
)

// DeadLetterEvent is published on <events>.deadletter when a job failed
// MaxDeliver times, or at once when its expiration passed before it could
// be sent (apns.ErrExpired: no retry can help); the job is then terminated.
type DeadLetterEvent struct {
	JobID      string    `json:"job_id,omitempty"`
	Seq        uint64    `json:"seq"`
	Reason     string    `json:"reason"` // ReasonMaxDeliver or ReasonExpired
	Error      string    `json:"error"`
	Deliveries uint64    `json:"deliveries"`
	Time       time.Time `json:"time"`
	EventJob
}

// ReceiptEvent is published on <events>.delivered for each delivered job
// when Options.Receipts is on.
type ReceiptEvent struct {
	JobID  string    `json:"job_id,omitempty"`
	Seq    uint64    `json:"seq"`
	APNsID string    `json:"apns_id,omitempty"`
	Token  string    `json:"token"`
	Time   time.Time `json:"time"`
}

// MaxEventJob is how many bytes of a job an event embeds at most; a longer
// job is cut (see EventJob) so that its event always fits the server's
// max_payload.
const MaxEventJob = 64 << 10

// EventJob is the job a rejection or dead-letter event carries. Job is the
// job message as received, when it is valid JSON of at most MaxEventJob
// bytes; otherwise JobRaw holds its bytes (base64 in JSON).
//
// A job longer than MaxEventJob is cut: Job is left out, JobRaw holds its
// first MaxEventJob bytes, JobTruncated is true, and JobSize and JobSHA256
// (hex) describe the whole job. An event that still cannot be stored for
// good (over the server's max_payload or the stream's maximum message
// size) is published once more without any job bytes (JobRaw empty,
// JobTruncated true), and the job is then terminated. A transient failure
// is retried with the job's back-off, whatever its attempts.
type EventJob struct {
	Job          json.RawMessage `json:"job,omitempty"`
	JobRaw       []byte          `json:"job_raw,omitempty"`
	JobSize      int             `json:"job_size,omitempty"`   // when truncated: the job's length in bytes
	JobSHA256    string          `json:"job_sha256,omitempty"` // when truncated: the job's SHA-256, hex
	JobTruncated bool            `json:"job_truncated,omitempty"`
}

// emptyJob reports whether ej is an empty message's: no bytes, not cut.
func (ej *EventJob) emptyJob() bool {
	return ej.Job == nil && ej.JobRaw == nil && !ej.JobTruncated
}

// MarshalJSON writes the event; an empty job message says so with
// "job_raw":"" and "job_size":0.
func (e RejectionEvent) MarshalJSON() ([]byte, error) {
	type plain RejectionEvent
	b, err := json.Marshal(plain(e))
	return withEmptyJob(b, err, &e.EventJob)
}

// MarshalJSON writes the event; an empty job message says so with
// "job_raw":"" and "job_size":0.
func (e DeadLetterEvent) MarshalJSON() ([]byte, error) {
	type plain DeadLetterEvent
	b, err := json.Marshal(plain(e))
	return withEmptyJob(b, err, &e.EventJob)
}

// withEmptyJob adds an empty job's members to the encoded event b.
func withEmptyJob(b []byte, err error, ej *EventJob) ([]byte, error) {
	if err != nil || !ej.emptyJob() {
		return b, err
	}
	return append(b[:len(b)-1], `,"job_raw":"","job_size":0}`...), nil
}

// eventJob embeds a job's bytes, at most limit of them.
func eventJob(data []byte, limit int) EventJob {
	if len(data) == 0 {
		return EventJob{} // written as "job_raw":"","job_size":0
	}
	if len(data) <= limit {
		if valid, unicode := jsonscan.ValidI(data); valid && unicode { // else its bytes, in base64
			return EventJob{Job: json.RawMessage(data)}
		}
		return EventJob{JobRaw: data}
	}
	h := sha256.Sum256(data)
	ej := EventJob{JobSize: len(data), JobSHA256: hex.EncodeToString(h[:]), JobTruncated: true}
	if limit > 0 {
		ej.JobRaw = data[:limit]
	}
	return ej
}

// withoutJob returns an event body with its job bytes left out.
func withoutJob(body any, data []byte) any {
	switch ev := body.(type) {
	case RejectionEvent:
		ev.EventJob = eventJob(data, 0)
		if len(data) == 0 {
			ev.JobTruncated = true
		}
		return ev
	case DeadLetterEvent:
		ev.EventJob = eventJob(data, 0)
		if len(data) == 0 {
			ev.JobTruncated = true
		}
		return ev
	}
	return body
}

// eventMsgID derives an event's Nats-Msg-Id from the event kind, the job
// id, the job's stream sequence and the time the stream stored it (Unix
// nanoseconds): "<kind>:<job id>:<seq>:<stored>". A redelivered job keeps
// both, so it publishes the same id and the events stream drops the
// repeat; a producer that reuses a job id for a new job (after the jobs
// stream's duplicates window) gets a new sequence, and a job stored after
// the jobs stream was made again (its sequences start again at 1) a new
// time, so their events are not dropped as repeats of an earlier job's.
// Jobs without an id use "<kind>:seq:<seq>:<stored>"; ids that are not
// short printable ASCII are hashed ("<kind>:h:<hash>:<seq>:<stored>").
func eventMsgID(kind, jobID string, seq uint64, stored int64) string {
	s := strconv.FormatUint(seq, 10) + ":" + strconv.FormatInt(stored, 10)
	if jobID == "" {
		return kind + ":seq:" + s
	}
	if len(jobID) <= 128 && printable(jobID) {
		return kind + ":" + jobID + ":" + s
	}
	h := sha256.Sum256([]byte(jobID))
	return kind + ":h:" + hex.EncodeToString(h[:16]) + ":" + s
}

// feedbackMsgID de-duplicates a feedback bad token by token and time.
func feedbackMsgID(token []byte, t time.Time) string {
	h := sha256.New()
	h.Write(token)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(t.Unix()))
	h.Write(b[:])
	return KindBadToken + ":fb:" + hex.EncodeToString(h.Sum(nil)[:16])
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// eventMsg encodes an event into a message with its Nats-Msg-Id.
func eventMsg(subject, msgID string, ev any) (*nats.Msg, error) {
	var data []byte
	var err error
	if m, ok := ev.(json.Marshaler); ok {
		// Its own encoding is json.Marshal's, compact: json.Marshal(ev)
		// would only scan it all again (the job's bytes a third time).
		data, err = m.MarshalJSON()
	} else {
		data, err = json.Marshal(ev)
	}
	if err != nil {
		return nil, err
	}
	return &nats.Msg{
		Subject: subject,
		Data:    data,
		Header:  nats.Header{jetstream.MsgIDHeader: []string{msgID}},
	}, nil
}
