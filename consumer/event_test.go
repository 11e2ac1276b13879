package consumer

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// rejectionForTest is the rejection event of a typical job.
func rejectionForTest() RejectionEvent {
	job := []byte(`{"id":"3f1e2d4c-5b6a-4978-8a1b-2c3d4e5f6a7b","token":"` + strings.Repeat("ab", 32) +
		`","topic":"com.example.app","payload":{"aps":{"alert":{"title":"Hello","body":"` + strings.Repeat("x", 100) + `"}}}}`)
	return RejectionEvent{
		JobID: "3f1e2d4c-5b6a-4978-8a1b-2c3d4e5f6a7b", Seq: 42, Token: strings.Repeat("ab", 32), Protocol: ProtocolHTTP2,
		Reason: "BadDeviceToken", HTTPStatus: 400, Time: time.Unix(1796083200, 0).UTC(), Error: "apns: rejected: 400 BadDeviceToken",
		EventJob: eventJob(job, MaxEventJob),
	}
}

// TestEventMsgBody: an event's message body is what encoding/json makes of
// the event, byte for byte (eventMsg skips its second pass over a
// MarshalJSON's output, not its content).
func TestEventMsgBody(t *testing.T) {
	for _, ev := range []any{rejectionForTest(), RejectionEvent{Reason: "x"}, DeadLetterEvent{Reason: "Expired"}, BadTokenEvent{Token: "ab"}} {
		want, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		m, err := eventMsg("s", "id", ev)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Data) != string(want) {
			t.Fatalf("%T: body\n%s\nwant\n%s", ev, m.Data, want)
		}
	}
}

// BenchmarkEventMsg measures encoding a rejection event and its message.
func BenchmarkEventMsg(b *testing.B) {
	ev := rejectionForTest()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := eventMsg("apns.events.rejected", "rejected:x:42", ev); err != nil {
			b.Fatal(err)
		}
	}
}
