package apns_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// TestHTTP2Reasons has one case per status and reason of Apple's table
// (../shared/APNS.md), and unknown ones: the class the table gives it, and
// the outcome a notification gets when the test server answers it.
func TestHTTP2Reasons(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		status   int
		reason   string
		class    string
		badToken bool
	}{
		{"400 BadCollapseId", 400, "BadCollapseId", "rejected", false},
		{"400 BadDeviceToken", 400, "BadDeviceToken", "rejected", true},
		{"400 BadExpirationDate", 400, "BadExpirationDate", "rejected", false},
		{"400 BadMessageId", 400, "BadMessageId", "rejected", false},
		{"400 BadPriority", 400, "BadPriority", "rejected", false},
		{"400 BadTopic", 400, "BadTopic", "rejected", false},
		{"400 DeviceTokenNotForTopic", 400, "DeviceTokenNotForTopic", "rejected", false},
		{"400 DuplicateHeaders", 400, "DuplicateHeaders", "rejected", false},
		{"400 IdleTimeout", 400, "IdleTimeout", "temporary", false},
		{"400 InvalidPushType", 400, "InvalidPushType", "rejected", false},
		{"400 MissingDeviceToken", 400, "MissingDeviceToken", "rejected", false},
		{"400 MissingTopic", 400, "MissingTopic", "rejected", false},
		{"400 PayloadEmpty", 400, "PayloadEmpty", "rejected", false},
		{"400 TopicDisallowed", 400, "TopicDisallowed", "rejected", false},
		{"403 BadCertificate", 403, "BadCertificate", "credentials", false},
		{"403 BadCertificateEnvironment", 403, "BadCertificateEnvironment", "credentials", false},
		{"403 ExpiredProviderToken", 403, "ExpiredProviderToken", "refresh-token", false},
		{"403 Forbidden", 403, "Forbidden", "rejected", false},
		{"403 InvalidProviderToken", 403, "InvalidProviderToken", "credentials", false},
		{"403 MissingProviderToken", 403, "MissingProviderToken", "credentials", false},
		{"403 UnrelatedKeyIdInToken", 403, "UnrelatedKeyIdInToken", "credentials", false},
		{"403 BadEnvironmentKeyIdInToken", 403, "BadEnvironmentKeyIdInToken", "credentials", false},
		{"404 BadPath", 404, "BadPath", "rejected", false},
		{"405 MethodNotAllowed", 405, "MethodNotAllowed", "rejected", false},
		{"410 ExpiredToken", 410, "ExpiredToken", "rejected", true},
		{"410 Unregistered", 410, "Unregistered", "rejected", true},
		{"413 PayloadTooLarge", 413, "PayloadTooLarge", "rejected", false},
		{"429 TooManyProviderTokenUpdates", 429, "TooManyProviderTokenUpdates", "temporary", false},
		{"429 TooManyRequests", 429, "TooManyRequests", "temporary", false},
		{"500 InternalServerError", 500, "InternalServerError", "temporary", false},
		{"503 ServiceUnavailable", 503, "ServiceUnavailable", "temporary", false},
		{"503 Shutdown", 503, "Shutdown", "temporary", false},
		{"unknown 400 reason", 400, "SomethingNew", "rejected", false},
		{"unknown 403 reason", 403, "NotYetInvented", "rejected", false},
		{"unknown 410 reason", 410, "GoneForGood", "rejected", true},
		{"unknown 503 reason", 503, "Overloaded", "temporary", false},
		{"unknown status 418", 418, "Teapot", "fault", false},
		{"5xx Apple does not use", 502, "BadGateway", "fault", false},
		{"known reason on another status", 400, "Unregistered", "fault", false},
		{"200 with a reason", 200, "BadDeviceToken", "delivered", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.class, apns.ClassifyForTest(tt.status, tt.reason))

			clock := newH2Clock()
			tok := h2Token(7)
			opt := apnstest.HTTP2Reason(tok, tt.status, tt.reason)
			if tt.class == "refresh-token" {
				opt = apnstest.HTTP2Inject(1, tt.status, tt.reason) // once: the retry succeeds
			}
			s := newH2Server(t, opt)
			col := newH2Collector(t, 1)
			e := newH2Engine(t, s, apns.WithOutcomeFunc(col.fn), apns.WithMaxRetries(1), apns.WithClock(clock.Now))
			clock.Advance(30 * time.Minute) // a token old enough to be replaced
			require.NoError(t, e.Send(context.Background(), &apns.Notification{Token: tok, Payload: h2Payload}, 1))
			o := col.wait(1)[0]

			switch tt.class {
			case "rejected":
				rej, ok := o.Rejection()
				require.True(t, ok, "%v", o.Err)
				require.Equal(t, tt.status, rej.HTTPStatus)
				require.Equal(t, tt.reason, rej.Reason)
				require.Equal(t, tt.badToken, rej.BadToken())
				require.Equal(t, tt.badToken, errors.Is(o.Err, apns.ErrBadDeviceToken))
				if tt.status == 410 {
					require.WithinDuration(t, time.Now(), rej.Timestamp, time.Minute, "Apple's timestamp, in ms")
				} else {
					require.True(t, rej.Timestamp.IsZero())
				}
				require.Equal(t, 1, o.Attempts)
			case "credentials":
				require.ErrorIs(t, o.Err, apns.ErrCredentials)
				require.ErrorContains(t, o.Err, tt.reason)
				require.Equal(t, 1, o.Attempts)
				require.ErrorIs(t, e.Stats().CredentialsErr, apns.ErrCredentials)
			case "refresh-token":
				require.NoError(t, o.Err)
				require.Equal(t, 2, o.Attempts)
				require.Equal(t, 2, s.Mints(), "one new token")
			case "delivered":
				require.NoError(t, o.Err)
			case "temporary", "fault":
				require.Equal(t, tt.class == "fault", errors.Is(o.Err, apns.ErrNotAPNs))
				_, rejected := o.Rejection()
				require.False(t, rejected)
				require.ErrorIs(t, o.Err, apns.ErrRetriesExhausted)
				var se *apns.StatusError
				require.ErrorAs(t, o.Err, &se)
				require.Equal(t, tt.status, se.HTTPStatus)
				require.Equal(t, tt.reason, se.Reason)
				require.Equal(t, 2, o.Attempts)
				require.Equal(t, 1, s.Mints(), "never a new token for a temporary failure")
			}
		})
	}
}

// TestHTTP2Verdicts: a whole answer is Apple's verdict only with Apple's
// JSON reason (or a 200); everything else is a fault.
func TestHTTP2Verdicts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		body   string
		class  string
		reason string
	}{
		{"200 without body", 200, "", "delivered", ""},
		{"200 with HTML: a portal, not APNs", 200, "<html>ok</html>", "fault", ""},
		{"200 with a reason", 200, `{"reason":"BadDeviceToken"}`, "delivered", ""},
		{"400 Apple JSON", 400, `{"reason":"BadDeviceToken"}`, "rejected", "BadDeviceToken"},
		{"400 reason after padding", 400, `{"pad":"` + strings.Repeat("x", 20000) + `","reason":"BadTopic"}`, "rejected", "BadTopic"},
		{"410 with timestamp", 410, `{"reason":"Unregistered","timestamp":1700000000000}`, "rejected", "Unregistered"},
		{"400 not JSON", 400, "Bad Request", "fault", ""},
		{"400 cut JSON", 400, `{"reason":"BadDev`, "fault", ""},
		{"400 empty", 400, "", "fault", ""},
		{"400 JSON array", 400, `["BadDeviceToken"]`, "fault", ""},
		{"400 reason a number", 400, `{"reason":7}`, "fault", ""},
		{"400 reason empty", 400, `{"reason":""}`, "fault", ""},
		{"404 HTML", 404, "<html><h1>404 Not Found</h1></html>", "fault", ""},
		{"404 BadPath", 404, `{"reason":"BadPath"}`, "rejected", "BadPath"},
		{"502 proxy", 502, "Bad Gateway", "fault", ""},
		{"504 JSON reason", 504, `{"reason":"GatewayTimeout"}`, "fault", "GatewayTimeout"},
		{"503 Apple JSON", 503, `{"reason":"ServiceUnavailable"}`, "temporary", "ServiceUnavailable"},
		{"403 JSON reason of a 400", 403, `{"reason":"BadDeviceToken"}`, "fault", "BadDeviceToken"},
		{"403 unknown reason", 403, `{"reason":"NewReason"}`, "rejected", "NewReason"},
		{"201 anything", 201, `{"reason":"Created"}`, "fault", "Created"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			class, reason := apns.VerdictForTest(tt.status, []byte(tt.body))
			require.Equal(t, tt.class, class)
			require.Equal(t, tt.reason, reason)
		})
	}
}
