package apns

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
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

	{400, "BadCollapseId"}:          classRejected,
	{400, "BadDeviceToken"}:         classRejected, // bad token
	{400, "BadExpirationDate"}:      classRejected,
	{400, "BadMessageId"}:           classRejected,
	{400, "BadPriority"}:            classRejected,
	{400, "BadTopic"}:               classRejected,
	{400, "DeviceTokenNotForTopic"}: classRejected,
	{400, "DuplicateHeaders"}:       classRejected,
	{400, "IdleTimeout"}:            classTemporary,
	{400, "InvalidPushType"}:        classRejected,
	{400, "MissingDeviceToken"}:     classRejected,
	{400, "MissingTopic"}:           classRejected,
	{400, "PayloadEmpty"}:           classRejected,
	{400, "TopicDisallowed"}:        classRejected,

	{403, "BadCertificate"}:             classCredentials,
	{403, "BadCertificateEnvironment"}:  classCredentials,
	{403, "ExpiredProviderToken"}:       classRefreshToken,
	{403, "Forbidden"}:                  classRejected,
	{403, "InvalidProviderToken"}:       classCredentials,
	{403, "MissingProviderToken"}:       classCredentials,
	{403, "UnrelatedKeyIdInToken"}:      classCredentials,
	{403, "BadEnvironmentKeyIdInToken"}: classCredentials,

	{404, "BadPath"}: classRejected,

	{405, "MethodNotAllowed"}: classRejected,

	{410, "ExpiredToken"}: classRejected, // bad token
	{410, "Unregistered"}: classRejected, // bad token

	{413, "PayloadTooLarge"}: classRejected,

	{429, "TooManyProviderTokenUpdates"}: classTemporary, // and do not mint again
	{429, "TooManyRequests"}:             classTemporary,

	{500, "InternalServerError"}: classTemporary,

	{503, "ServiceUnavailable"}: classTemporary,
	{503, "Shutdown"}:           classTemporary,
}

// classify maps an APNs answer to an outcome class. A reason the table does
// not know is classed by its status: 2xx delivered, 429 and 5xx temporary,
// any other status rejected (the raw reason and status are kept).
func classify(status int, reason string) outcomeClass {
	if c, ok := reasonClasses[statusReason{status, reason}]; ok {
		return c
	}
	switch {
	case status >= 200 && status < 300:
		return classDelivered
	case status == 429 || status >= 500:
		return classTemporary
	}
	return classRejected
}

// StatusError is the cause of a temporary HTTP/2 failure (429, 500, 503,
// IdleTimeout): APNs answered but the notification may succeed later. It is
// wrapped, with ErrRetriesExhausted, by the outcome once retries run out.
// It is never a rejection: errors.As(err, new(*RejectionError)) is false.
type StatusError struct {
	HTTPStatus int
	Reason     string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("apns: temporary failure: %d %s", e.HTTPStatus, e.Reason)
}

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
// body. A body that is not the expected JSON is kept as the raw reason.
func parseResponse(body []byte) (reason string, ts time.Time) {
	var rb responseBody
	if err := json.Unmarshal(body, &rb); err != nil || rb.Reason == "" {
		return strings.TrimSpace(string(body)), time.Time{}
	}
	if rb.Timestamp != nil {
		ts = time.UnixMilli(*rb.Timestamp)
	}
	return rb.Reason, ts
}
