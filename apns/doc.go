// Package apns sends notifications to Apple Push Notification service.
//
// Two engines implement one contract, [Engine]: the legacy binary protocol
// ([NewBinaryEngine], command-2 frames over TLS) and Apple's current HTTP/2
// provider API ([NewHTTP2Engine], token or certificate auth).
//
// The contract: Send validates a notification and queues it, blocking while
// the engine is saturated. Every notification that Send accepted gets exactly
// one [Outcome], carrying the caller's ref, through the [OutcomeFunc]:
//
//   - delivered (Err == nil): HTTP/2 answered 200, or the binary gateway stayed
//     silent for the assumed-delivered window after the write, or answered
//     for a later frame on the same connection (a rejection, or a confirm
//     marker: [WithConfirmMarkers]);
//   - rejected (Err is a *[RejectionError]): APNs refused the notification for
//     good; [RejectionError.BadToken] says whether the device token is dead;
//   - failed (any other Err): the engine closed, retries ran out, or the
//     credentials were refused. The notification may be sent again later.
//
// Package apns knows nothing of NATS, jobs or configuration files.
package apns
