package apns

import (
	"errors"
	"fmt"
)

// Reasons say, in one machine-readable word, why a notification was
// refused. They are the one list behind every rejection: Apple's HTTP/2
// reasons, the binary protocol's status names (Status.String), and the
// worker's own for what it refuses before anything reaches Apple. Where
// Apple has a word for a rule (PayloadTooLarge, InvalidPushType,
// TopicDisallowed, BadExpirationDate) the worker's check uses it too.
const (
	// Apple's HTTP/2 reasons ("Handling notification responses from
	// APNs"); the HTTP status is in the comment.
	ReasonBadCollapseID               = "BadCollapseId"               // 400
	ReasonBadDeviceToken              = "BadDeviceToken"              // 400; the token is dead
	ReasonBadExpirationDate           = "BadExpirationDate"           // 400; also ours: expiration not 0..2^32-1 seconds or RFC 3339
	ReasonBadMessageID                = "BadMessageId"                // 400
	ReasonBadPriority                 = "BadPriority"                 // 400
	ReasonBadTopic                    = "BadTopic"                    // 400
	ReasonDeviceTokenNotForTopic      = "DeviceTokenNotForTopic"      // 400
	ReasonDuplicateHeaders            = "DuplicateHeaders"            // 400
	ReasonIdleTimeout                 = "IdleTimeout"                 // 400, temporary
	ReasonInvalidPushType             = "InvalidPushType"             // 400; also ours: push_type not one of Apple's
	ReasonMissingDeviceToken          = "MissingDeviceToken"          // 400; binary status 2
	ReasonMissingTopic                = "MissingTopic"                // 400; binary status 3
	ReasonPayloadEmpty                = "PayloadEmpty"                // 400
	ReasonTopicDisallowed             = "TopicDisallowed"             // 400; also ours: topic without the push type's suffix
	ReasonBadCertificate              = "BadCertificate"              // 403, credentials
	ReasonBadCertificateEnvironment   = "BadCertificateEnvironment"   // 403, credentials
	ReasonExpiredProviderToken        = "ExpiredProviderToken"        // 403, token refreshed
	ReasonForbidden                   = "Forbidden"                   // 403
	ReasonInvalidProviderToken        = "InvalidProviderToken"        // 403, credentials
	ReasonMissingProviderToken        = "MissingProviderToken"        // 403, credentials
	ReasonUnrelatedKeyIDInToken       = "UnrelatedKeyIdInToken"       // 403, credentials
	ReasonBadEnvironmentKeyIDInToken  = "BadEnvironmentKeyIdInToken"  // 403, credentials
	ReasonBadPath                     = "BadPath"                     // 404
	ReasonMethodNotAllowed            = "MethodNotAllowed"            // 405
	ReasonExpiredToken                = "ExpiredToken"                // 410; the token is dead
	ReasonUnregistered                = "Unregistered"                // 410; the token is dead
	ReasonPayloadTooLarge             = "PayloadTooLarge"             // 413; also ours: over the push type's limit
	ReasonTooManyProviderTokenUpdates = "TooManyProviderTokenUpdates" // 429, temporary
	ReasonTooManyRequests             = "TooManyRequests"             // 429, temporary
	ReasonInternalServerError         = "InternalServerError"         // 500, temporary
	ReasonServiceUnavailable          = "ServiceUnavailable"          // 503, temporary
	ReasonShutdown                    = "Shutdown"                    // 503, temporary; binary status 10

	// The binary protocol's status names not listed above (Status.String).
	ReasonNoErrors           = "NoErrors"           // 0
	ReasonProcessingError    = "ProcessingError"    // 1, temporary
	ReasonMissingPayload     = "MissingPayload"     // 4
	ReasonInvalidTokenSize   = "InvalidTokenSize"   // 5
	ReasonInvalidTopicSize   = "InvalidTopicSize"   // 6
	ReasonInvalidPayloadSize = "InvalidPayloadSize" // 7
	ReasonInvalidToken       = "InvalidToken"       // 8, the token is dead; also ours: token not hex of an allowed length
	ReasonProtocolError      = "ProtocolError"      // 128
	ReasonUnknown            = "Unknown"            // 255, temporary

	// The worker's own: a job refused before it reached Apple.
	ReasonMalformedJob        = "MalformedJob"      // not a JSON object, or a member of the wrong type
	ReasonDuplicateKey        = "DuplicateKey"      // a member name twice in the job, the payload or aps (RFC 7493)
	ReasonInvalidUTF8         = "InvalidUTF8"       // bytes that are not UTF-8, or an escaped lone surrogate (RFC 7493)
	ReasonInvalidPayload      = "InvalidPayload"    // payload missing or not a JSON object
	ReasonMissingAps          = "MissingAps"        // payload without an "aps" member
	ReasonApsNotObject        = "ApsNotObject"      // "aps" is not a JSON object
	ReasonInvalidPriority     = "InvalidPriority"   // priority not 10, 5 or 1, or not the push type's
	ReasonInvalidCollapseID   = "InvalidCollapseId" // collapse_id over 64 bytes, with a control character or a space at an end
	ReasonInvalidID           = "InvalidId"         // apns-id not a lowercase UUID
	ReasonInvalidTopic        = "InvalidTopic"      // topic with spaces, controls or non-ASCII
	ReasonContentAvailable    = "MissingContentAvailable"
	ReasonBadLiveActivity     = "BadLiveActivityPayload" // aps.event / aps.timestamp / content-state of a liveactivity push
	ReasonMissingMDM          = "MissingMdm"             // an mdm push without a string "mdm" member
	ReasonUnsupportedProtocol = "UnsupportedByProtocol"  // the engine's protocol cannot send it (liveactivity over binary)
	ReasonInvalidNotification = "InvalidNotification"    // refused by the engine for a cause not listed above
)

// Validation errors of the rules added to the contract; each wraps
// ErrInvalidNotification (the older ones are in errors.go).
var (
	ErrDuplicateKey          = fmt.Errorf("%w: duplicate member name", ErrInvalidNotification)
	ErrInvalidUTF8           = fmt.Errorf("%w: not valid UTF-8", ErrInvalidNotification)
	ErrApsNotObject          = fmt.Errorf(`%w: "aps" is not a JSON object`, ErrInvalidNotification)
	ErrTopicDisallowed       = fmt.Errorf("%w: topic lacks the push type's suffix", ErrInvalidNotification)
	ErrMissingContentAvail   = fmt.Errorf(`%w: background push without "content-available": 1`, ErrInvalidNotification)
	ErrBadLiveActivity       = fmt.Errorf("%w: bad live activity payload", ErrInvalidNotification)
	ErrMissingMDM            = fmt.Errorf(`%w: mdm push without a string "mdm" member`, ErrInvalidNotification)
	ErrUnsupportedByProtocol = fmt.Errorf("%w: not supported by the engine's protocol", ErrInvalidNotification)
	ErrInvalidExpiration     = fmt.Errorf("%w: bad expiration", ErrInvalidNotification)
)

// reasonOfError maps each validation error to its reason, most specific
// first.
var reasonOfError = []struct {
	err    error
	reason string
}{
	{ErrDuplicateKey, ReasonDuplicateKey},
	{ErrInvalidUTF8, ReasonInvalidUTF8},
	{ErrApsNotObject, ReasonApsNotObject},
	{ErrTopicDisallowed, ReasonTopicDisallowed},
	{ErrMissingContentAvail, ReasonContentAvailable},
	{ErrBadLiveActivity, ReasonBadLiveActivity},
	{ErrMissingMDM, ReasonMissingMDM},
	{ErrUnsupportedByProtocol, ReasonUnsupportedProtocol},
	{ErrInvalidExpiration, ReasonBadExpirationDate},
	{ErrInvalidToken, ReasonInvalidToken},
	{ErrNoAPS, ReasonMissingAps},
	{ErrInvalidPayload, ReasonInvalidPayload},
	{ErrPayloadTooLarge, ReasonPayloadTooLarge},
	{ErrInvalidPriority, ReasonInvalidPriority},
	{ErrInvalidPushType, ReasonInvalidPushType},
	{ErrInvalidCollapseID, ReasonInvalidCollapseID},
	{ErrInvalidID, ReasonInvalidID},
	{ErrInvalidTopic, ReasonInvalidTopic},
}

// ReasonOf returns the reason of a validation error (one wrapping
// ErrInvalidNotification): the rule's own, or ReasonInvalidNotification.
// It returns "" for any other error.
func ReasonOf(err error) string {
	if !errors.Is(err, ErrInvalidNotification) {
		return ""
	}
	for _, r := range reasonOfError {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return ReasonInvalidNotification
}
