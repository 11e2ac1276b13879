package consumer

import (
	"errors"
	"math"
	"time"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/jsonscan"
)

// The check every job passes before it is queued for the engine, and the
// event of a job that fails it.

// checkJob decodes a job message and checks it against the contract
// (README, "Job format") and the limits of the engine's protocol. With an
// error it returns what it could read of the job (its id, its token).
func (w *Worker) checkJob(data []byte) (Job, *apns.Notification, error) {
	job, err := decodeJob(data)
	if err != nil {
		if job.ID == "" {
			job.ID = malformedJobID(data)
		}
		return job, nil, err
	}
	n, err := job.Notification()
	if err == nil {
		err = w.validate(n)
	}
	if err != nil {
		return job, nil, err
	}
	return job, n, nil
}

// validate checks n against the contract and the limits of the engine's
// protocol, before it is queued for the engine: a job the engine would
// refuse never takes a place in its queue. A job without a topic is checked
// against Options.DefaultTopic, if set, for its push type's suffix.
func (w *Worker) validate(n *apns.Notification) error {
	if err := n.Validate(w.limits); err != nil {
		return err
	}
	if n.Topic == "" && w.opts.DefaultTopic != "" {
		return apns.CheckTopic(n.PushType, w.opts.DefaultTopic)
	}
	return nil
}

// protocolLimits are the checks validate applies for Options.Protocol,
// with maxPayload (Options.MaxPayload, 0: the protocol's) as the payload
// limit. Without one, binary jobs are checked against the most a frame
// can carry and the binary engine checks its own limit. A limit below
// HTTP/2's caps VoIP too; at or above it, VoIP keeps at least its 5120.
func protocolLimits(protocol string, maxPayload int) apns.Limits {
	l := apns.HTTP2Limits
	if protocol == ProtocolBinary || protocol == ProtocolMock {
		l = apns.BinaryLimits
		l.MaxPayload = math.MaxUint16
	}
	if maxPayload > 0 {
		if l.MaxPayloadVoIP != 0 {
			l.MaxPayloadVoIP = maxPayload
			if maxPayload >= apns.HTTP2Limits.MaxPayload {
				l.MaxPayloadVoIP = max(maxPayload, apns.HTTP2Limits.MaxPayloadVoIP)
			}
		}
		l.MaxPayload = maxPayload
	}
	return l
}

// malformedJobID returns the first string "id" member of a job that did not
// decode (a later member had a wrong type, say), so that its rejection
// event still names it; "" if it has none or data is not a JSON object.
func malformedJobID(data []byte) string {
	valid, unicode := jsonscan.ValidI(data)
	if !valid {
		return ""
	}
	i := jsonscan.SkipSpace(data, 0)
	if data[i] != '{' || !unicode {
		return ""
	}
	var id string
	jsonscan.Members(data, i, func(name, val []byte) bool {
		if string(jsonscan.Unquote(name)) == "id" && val[0] == '"' {
			id = string(jsonscan.Unquote(val))
			return false
		}
		return true
	})
	return id
}

// malformedReason names why a job was refused before it reached APNs.
func malformedReason(err error) string {
	if r := apns.ReasonOf(err); r != "" {
		return r
	}
	if errors.Is(err, ErrMalformedJob) {
		return ReasonMalformedJob
	}
	return ReasonInvalidNotification
}

// malformedEvent is the rejection event of a job refused before it
// reached APNs, carrying the job's bytes.
func malformedEvent(id string, seq uint64, token, protocol string, cause error, data []byte) RejectionEvent {
	if len(token) > 2*apns.MaxTokenLen {
		token = "" // not a token: the job's bytes hold it
	}
	ev := RejectionEvent{
		JobID: id, Seq: seq, Token: token, Protocol: protocol, Reason: malformedReason(cause),
		Time: time.Now().UTC(), Error: clip(cause.Error(), maxEventError), Malformed: true,
	}
	ev.EventJob = eventJob(data, MaxEventJob)
	return ev
}

// MaxEventJobID is how many bytes of a job's id events and logs carry: a
// longer id (a hostile one) is cut, so that an event always fits the
// server's max_payload. Its events' Nats-Msg-Ids stay distinct: they carry
// the job's stream sequence.
const MaxEventJobID = 256

// maxEventError bounds an event's error text.
const maxEventError = 1024

// clip cuts s to at most n bytes.
func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
