package apns

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/jetpush/apns-worker/apns/internal/h2conn"
)

// outcomeClass is what the HTTP/2 engine does with one APNs answer.
type outcomeClass uint8

const (
	// classDelivered: APNs took the notification.
	classDelivered outcomeClass = iota + 1
	// classRejected: refused for good; the outcome is a *RejectionError.
	classRejected
	// classCredentials: the provider's certificate or token is refused; the
	// engine stops intake and fails the notification with ErrCredentials.
	classCredentials
	// classRefreshToken: the provider token expired; mint a new one (at most
	// once) and send again.
	classRefreshToken
	// classTemporary: send again after a back-off, up to the retry limit.
	classTemporary
	// classFault: the answer is not Apple's verdict (no JSON reason, or a
	// status Apple does not use for it: a proxy, a captive portal, a wrong
	// URL): an engine fault, sent again after a back-off like
	// classTemporary, never a rejection.
	classFault
)

func (c outcomeClass) String() string {
	switch c {
	case classDelivered:
		return "delivered"
	case classRejected:
		return "rejected"
	case classCredentials:
		return "credentials"
	case classRefreshToken:
		return "refresh-token"
	case classTemporary:
		return "temporary"
	case classFault:
		return "fault"
	}
	return fmt.Sprintf("outcomeClass(%d)", uint8(c))
}

type statusReason struct {
	status int
	reason string
}

// reasonClasses is the one table mapping every status and reason of Apple's
// "Handling notification responses from APNs" (../shared/APNS.md) to what
// the engine does. Stream and connection events (GOAWAY, REFUSED_STREAM,
// transport errors, timeouts) are temporary; see HTTP2Engine.
var reasonClasses = map[statusReason]outcomeClass{
	{200, ""}: classDelivered,

	{400, ReasonBadCollapseID}:          classRejected,
	{400, ReasonBadDeviceToken}:         classRejected, // bad token
	{400, ReasonBadExpirationDate}:      classRejected,
	{400, ReasonBadMessageID}:           classRejected,
	{400, ReasonBadPriority}:            classRejected,
	{400, ReasonBadTopic}:               classRejected,
	{400, ReasonDeviceTokenNotForTopic}: classRejected,
	{400, ReasonDuplicateHeaders}:       classRejected,
	{400, ReasonIdleTimeout}:            classTemporary,
	{400, ReasonInvalidPushType}:        classRejected,
	{400, ReasonMissingDeviceToken}:     classRejected,
	{400, ReasonMissingTopic}:           classRejected,
	{400, ReasonPayloadEmpty}:           classRejected,
	{400, ReasonTopicDisallowed}:        classRejected,

	{403, ReasonBadCertificate}:             classCredentials,
	{403, ReasonBadCertificateEnvironment}:  classCredentials,
	{403, ReasonExpiredProviderToken}:       classRefreshToken,
	{403, ReasonForbidden}:                  classRejected,
	{403, ReasonInvalidProviderToken}:       classCredentials,
	{403, ReasonMissingProviderToken}:       classCredentials,
	{403, ReasonUnrelatedKeyIDInToken}:      classCredentials,
	{403, ReasonBadEnvironmentKeyIDInToken}: classCredentials,

	{404, ReasonBadPath}: classRejected,

	{405, ReasonMethodNotAllowed}: classRejected,

	{410, ReasonExpiredToken}: classRejected, // bad token
	{410, ReasonUnregistered}: classRejected, // bad token

	{413, ReasonPayloadTooLarge}: classRejected,

	{429, ReasonTooManyProviderTokenUpdates}: classTemporary, // and do not mint again
	{429, ReasonTooManyRequests}:             classTemporary,

	{500, ReasonInternalServerError}: classTemporary,

	{503, ReasonServiceUnavailable}: classTemporary,
	{503, ReasonShutdown}:           classTemporary,
}

// appleStatuses are the error statuses of Apple's table; knownReasons its
// reasons.
var appleStatuses, knownReasons = func() (map[int]bool, map[string]bool) {
	st, rs := map[int]bool{}, map[string]bool{}
	for k := range reasonClasses {
		if k.status != 200 {
			st[k.status], rs[k.reason] = true, true
		}
	}
	return st, rs
}()

// verdict classifies one HTTP/2 answer: the one place that decides what an
// answer means. A 200 is delivered, unless it has a body that is not JSON.
// Anything else is Apple's verdict only when its body is Apple's JSON with
// a non-empty string reason (classify); otherwise it is an engine fault.
func verdict(status int, body []byte) (c outcomeClass, reason string, ts time.Time) {
	if status == 200 {
		// APNs' 200 has no body. One with a body that is not even JSON
		// (a captive portal's login page) did not come from APNs.
		if len(body) > 0 && !json.Valid(body) {
			return classFault, "", time.Time{}
		}
		return classDelivered, "", time.Time{}
	}
	reason, ts, ok := parseResponse(body)
	if !ok {
		return classFault, "", time.Time{}
	}
	return classify(status, reason), reason, ts
}

// classify maps an answer with Apple's JSON reason to an outcome class.
// The exact (status, reason) pairs of Apple's table are verdicts. A known
// reason on a status Apple does not use for it, or any reason on a status
// outside the table, is a fault. A reason the table does not know, on one
// of its error statuses, is classed by the status: 429 and 5xx temporary,
// the others (400, 403, 404, 405, 410, 413) rejected.
func classify(status int, reason string) outcomeClass {
	if status == 200 {
		return classDelivered
	}
	if c, ok := reasonClasses[statusReason{status, reason}]; ok {
		return c
	}
	switch {
	case reason == "" || knownReasons[reason] || !appleStatuses[status]:
		return classFault
	case status == 429 || status >= 500:
		return classTemporary
	}
	return classRejected
}

// StatusError is the cause of a temporary HTTP/2 failure: APNs answered
// but the notification may succeed later (429, 500, 503, IdleTimeout), or
// the answer was not APNs' verdict at all (NotAPNs: a proxy's 502, an HTML
// 404, a 400 without Apple's JSON; errors.Is(err, ErrNotAPNs)). It is
// wrapped, with ErrRetriesExhausted, by the outcome once retries run out.
// It is never a rejection: errors.As(err, new(*RejectionError)) is false.
type StatusError struct {
	HTTPStatus int
	Reason     string // Apple's reason, if the body had one
	// NotAPNs marks an answer that is not Apple's verdict; Body holds its
	// first bytes (at most 128, control and non-ASCII bytes as '?').
	NotAPNs bool
	Body    string
}

func (e *StatusError) Error() string {
	if e.NotAPNs {
		return fmt.Sprintf("apns: answer is not an APNs verdict: %d %q", e.HTTPStatus, e.Body)
	}
	return fmt.Sprintf("apns: temporary failure: %d %s", e.HTTPStatus, e.Reason)
}

// Unwrap makes errors.Is(err, ErrNotAPNs) true for a non-APNs answer.
func (e *StatusError) Unwrap() error {
	if e.NotAPNs {
		return ErrNotAPNs
	}
	return nil
}

// ErrNotAPNs is the cause, through a *StatusError, of failures whose
// answer was not APNs' verdict: a status or body Apple does not send (a
// proxy, a captive portal, a wrong base URL). They are retried, counted in
// Stats.Faults by status, and never a rejection.
var ErrNotAPNs = errors.New("apns: answer is not an APNs verdict")

// Errors of the HTTP/2 engine's transport, causes of temporary failures.
var (
	// ErrRequestTimeout: APNs did not answer within the request timeout.
	ErrRequestTimeout = errors.New("apns: request timed out")
	// ErrStreamRefused: APNs refused the stream (RST_STREAM REFUSED_STREAM
	// or above a GOAWAY's last stream id); the notification was not seen.
	ErrStreamRefused = errors.New("apns: stream refused")
	// ErrConnLost: the connection failed with the notification in flight.
	ErrConnLost = errors.New("apns: connection lost")
)

// responseBody is APNs' JSON error body.
type responseBody struct {
	Reason    string `json:"reason"`
	Timestamp *int64 `json:"timestamp"` // 410: milliseconds since the epoch
}

// parseResponse extracts the reason and, for 410, the time from an error
// body; ok is false unless the body is a JSON object with a non-empty
// string reason (Apple's shape).
func parseResponse(body []byte) (reason string, ts time.Time, ok bool) {
	var rb responseBody
	if err := json.Unmarshal(body, &rb); err != nil || rb.Reason == "" {
		return "", time.Time{}, false
	}
	if rb.Timestamp != nil {
		ts = time.UnixMilli(*rb.Timestamp)
	}
	return rb.Reason, ts, true
}

// bodyPrefix returns up to 128 bytes of b as printable ASCII.
func bodyPrefix(b []byte) string { return h2conn.Printable(b, 128) }

// faultCounts counts answers that were not APNs' verdicts, by HTTP status.
type faultCounts struct {
	mu sync.Mutex
	n  map[int]uint64
}

func (f *faultCounts) add(status int) {
	f.mu.Lock()
	if f.n == nil {
		f.n = make(map[int]uint64)
	}
	f.n[status]++
	f.mu.Unlock()
}

// snapshot copies the counts; nil if there are none.
func (f *faultCounts) snapshot() map[int]uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.n) == 0 {
		return nil
	}
	return maps.Clone(f.n)
}
