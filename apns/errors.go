package apns

import (
	"errors"
	"fmt"
	"time"
)

// ErrInvalidNotification is wrapped by every validation error: a notification
// that fails it will never be accepted, however often it is retried.
var ErrInvalidNotification = errors.New("apns: invalid notification")

// Validation errors, each wrapping ErrInvalidNotification; Send and
// Notification.Validate wrap them again with detail.
var (
	ErrInvalidToken      = fmt.Errorf("%w: bad device token", ErrInvalidNotification)
	ErrInvalidPayload    = fmt.Errorf("%w: payload is not a JSON object", ErrInvalidNotification)
	ErrNoAPS             = fmt.Errorf("%w: payload has no \"aps\" member", ErrInvalidNotification)
	ErrPayloadTooLarge   = fmt.Errorf("%w: payload too large", ErrInvalidNotification)
	ErrInvalidPriority   = fmt.Errorf("%w: bad priority", ErrInvalidNotification)
	ErrInvalidPushType   = fmt.Errorf("%w: bad push type", ErrInvalidNotification)
	ErrInvalidCollapseID = fmt.Errorf("%w: bad collapse id", ErrInvalidNotification)
	ErrInvalidID         = fmt.Errorf("%w: apns-id is not a lowercase UUID", ErrInvalidNotification)
	ErrInvalidTopic      = fmt.Errorf("%w: bad topic", ErrInvalidNotification)
)

// Engine and outcome errors.
var (
	// ErrClosed is returned by Send after Close, and is the cause of
	// outcomes failed because the engine closed before they finished.
	ErrClosed = errors.New("apns: engine closed")
	// ErrInvalidOption reports a bad constructor option.
	ErrInvalidOption = errors.New("apns: invalid option")
	// ErrRetriesExhausted is wrapped, with the last cause, by outcomes that
	// failed after the engine's retries for temporary errors ran out.
	ErrRetriesExhausted = errors.New("apns: retries exhausted")
	// ErrExpired is the cause of outcomes failed because the notification's
	// Expiration passed before the engine could send it (again).
	ErrExpired = errors.New("apns: notification expired before it was sent")
	// ErrCredentials reports that APNs refused the provider's credentials
	// (certificate or token). It is a configuration problem, not the
	// notification's: retrying the notification does not help.
	ErrCredentials = errors.New("apns: credentials refused")
	// ErrBadDeviceToken matches, through errors.Is, a *RejectionError whose
	// device token is dead (binary status 8; HTTP/2 BadDeviceToken,
	// Unregistered, ExpiredToken).
	ErrBadDeviceToken = errors.New("apns: device token rejected")
)

// Status is a binary-protocol error-response status code.
type Status uint8

// Binary-protocol status codes (Apple's "Binary Provider API").
const (
	StatusNoErrors           Status = 0
	StatusProcessingError    Status = 1
	StatusMissingDeviceToken Status = 2
	StatusMissingTopic       Status = 3
	StatusMissingPayload     Status = 4
	StatusInvalidTokenSize   Status = 5
	StatusInvalidTopicSize   Status = 6
	StatusInvalidPayloadSize Status = 7
	StatusInvalidToken       Status = 8
	StatusShutdown           Status = 10
	StatusProtocolError      Status = 128
	StatusUnknown            Status = 255
)

var statusNames = map[Status]string{
	StatusNoErrors:           "NoErrors",
	StatusProcessingError:    "ProcessingError",
	StatusMissingDeviceToken: "MissingDeviceToken",
	StatusMissingTopic:       "MissingTopic",
	StatusMissingPayload:     "MissingPayload",
	StatusInvalidTokenSize:   "InvalidTokenSize",
	StatusInvalidTopicSize:   "InvalidTopicSize",
	StatusInvalidPayloadSize: "InvalidPayloadSize",
	StatusInvalidToken:       "InvalidToken",
	StatusShutdown:           "Shutdown",
	StatusProtocolError:      "ProtocolError",
	StatusUnknown:            "Unknown",
}

// String names the status, e.g. "InvalidToken", or "Status(9)" for a code
// Apple never defined.
func (s Status) String() string {
	if name, ok := statusNames[s]; ok {
		return name
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// Temporary reports whether a notification named by this status may succeed
// when sent again (1 processing error, 10 shutdown, 255 unknown).
func (s Status) Temporary() bool {
	return s == StatusProcessingError || s == StatusShutdown || s == StatusUnknown
}

// RejectionError reports that APNs refused one notification for good.
type RejectionError struct {
	// ID is the binary-protocol notification identifier (0 for HTTP/2).
	ID uint32
	// Status is the binary-protocol status (0 for HTTP/2).
	Status Status
	// HTTPStatus is the HTTP/2 response status (0 for binary).
	HTTPStatus int
	// Reason is the HTTP/2 reason string, or Status.String() for binary.
	Reason string
	// Timestamp is, for HTTP/2 410, when APNs last knew the token invalid.
	Timestamp time.Time
}

func (e *RejectionError) Error() string {
	if e.HTTPStatus != 0 {
		return fmt.Sprintf("apns: notification rejected: %d %s", e.HTTPStatus, e.Reason)
	}
	return fmt.Sprintf("apns: notification %d rejected: %s", e.ID, e.Reason)
}

// BadToken reports whether the rejection means the device token is dead and
// should be removed: binary status 8; HTTP/2 BadDeviceToken, or any 410
// (Unregistered, ExpiredToken, or a reason Apple adds later: 410 is final).
func (e *RejectionError) BadToken() bool {
	if e.HTTPStatus == 0 {
		return e.Status == StatusInvalidToken
	}
	if e.HTTPStatus == 410 {
		return true
	}
	switch e.Reason {
	case ReasonBadDeviceToken, ReasonUnregistered, ReasonExpiredToken:
		return true
	}
	return false
}

// Is makes errors.Is(err, ErrBadDeviceToken) true for bad-token rejections.
func (e *RejectionError) Is(target error) bool {
	return target == ErrBadDeviceToken && e.BadToken()
}
