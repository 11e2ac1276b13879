package consumer

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/jsonscan"
)

// malformedCase is a job that must never reach APNs, and the reason its
// rejection event gives.
type malformedCase struct {
	name, data, reason string
}

// malformedCases has one job per rule of the contract (README, "Job
// format"), and the hostile producer's jobs nobody listed, for an HTTP/2
// worker whose default topic is "com.example.app".
func malformedCases() []malformedCase {
	tok := tokHex(100)
	job := func(members string) string { return `{"token":"` + tok + `",` + members + `}` }
	pl := func(p string) string { return job(`"payload":` + p) }
	return append([]malformedCase{
		{"empty message", "", apns.ReasonMalformedJob},
		{"white space", " \n", apns.ReasonMalformedJob},
		{"broken json", `{"token":"ab`, apns.ReasonMalformedJob},
		{"not json", "\xff\xfe binary", apns.ReasonMalformedJob},
		{"job an array", `[` + pl(payload) + `]`, apns.ReasonMalformedJob},
		{"job a string", `"job"`, apns.ReasonMalformedJob},
		{"job null", `null`, apns.ReasonMalformedJob},
		{"BOM", "\xef\xbb\xbf" + pl(payload), apns.ReasonMalformedJob},
		{"trailing garbage", pl(payload) + "x", apns.ReasonMalformedJob},
		{"two jobs", pl(payload) + pl(payload), apns.ReasonMalformedJob},
		{"invalid escape", job(`"payload":` + payload + `,"topic":"\q"`), apns.ReasonMalformedJob},
		{"NaN priority", job(`"payload":` + payload + `,"priority":NaN`), apns.ReasonMalformedJob},
		{"deep nesting", job(`"payload":` + payload + `,"x":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000)), apns.ReasonMalformedJob},
		{"token a number", `{"token":123,"payload":` + payload + `}`, apns.ReasonMalformedJob},
		{"priority a string", job(`"payload":` + payload + `,"priority":"10"`), apns.ReasonMalformedJob},
		{"expiration a bool", job(`"payload":` + payload + `,"expiration":true`), apns.ReasonMalformedJob},
		{"id an object", job(`"payload":` + payload + `,"id":{}`), apns.ReasonMalformedJob},
		{"two tokens", job(`"payload":` + payload + `,"token":"` + tokHex(101) + `"`), apns.ReasonDuplicateKey},
		{"two payloads", job(`"payload":` + payload + `,"payload":{"aps":{"alert":"2"}}`), apns.ReasonDuplicateKey},
		{"two ids, one escaped", job(`"payload":` + payload + `,"id":"a","\u0069d":"b"`), apns.ReasonDuplicateKey},
		{"two aps", pl(`{"aps":{"alert":"1"},"aps":{"alert":"2"}}`), apns.ReasonDuplicateKey},
		{"payload member twice", pl(`{"aps":{},"x":1,"x":2}`), apns.ReasonDuplicateKey},
		{"aps member twice", pl(`{"aps":{"alert":"1","alert":"2"}}`), apns.ReasonDuplicateKey},
		{"invalid UTF-8 in the job", job("\"payload\":" + payload + ",\"topic\":\"\xc3\x28\""), apns.ReasonInvalidUTF8},
		{"invalid UTF-8 in the payload", pl("{\"aps\":{\"alert\":\"\xff\"}}"), apns.ReasonInvalidUTF8},
		{"lone surrogate", pl(`{"aps":{"alert":"\ud800"}}`), apns.ReasonInvalidUTF8},
		{"lone low surrogate in a name", pl(`{"aps":{},"\udc01":1}`), apns.ReasonInvalidUTF8},
		{"no token", `{"payload":` + payload + `}`, apns.ReasonInvalidToken},
		{"null token", `{"token":null,"payload":` + payload + `}`, apns.ReasonInvalidToken},
		{"bad token hex", `{"id":"bad-hex","token":"zz","payload":` + payload + `}`, apns.ReasonInvalidToken},
		{"odd token", `{"token":"abc","payload":` + payload + `}`, apns.ReasonInvalidToken},
		{"token 101 bytes", `{"token":"` + strings.Repeat("ab", 101) + `","payload":` + payload + `}`, apns.ReasonInvalidToken},
		{"huge token", `{"token":"` + strings.Repeat("ab", 100000) + `","payload":` + payload + `}`, apns.ReasonInvalidToken},
		{"no payload", job(`"id":"np"`), apns.ReasonInvalidPayload},
		{"null payload", pl(`null`), apns.ReasonInvalidPayload},
		{"payload a string", pl(`"hi"`), apns.ReasonInvalidPayload},
		{"payload an array", pl(`[{"aps":{}}]`), apns.ReasonInvalidPayload},
		{"missing aps", pl(`{"alert":"hi"}`), apns.ReasonMissingAps},
		{"aps a string", pl(`{"aps":"hi"}`), apns.ReasonApsNotObject},
		{"aps a number", pl(`{"aps":1e999}`), apns.ReasonApsNotObject},
		{"aps a bool", pl(`{"aps":false}`), apns.ReasonApsNotObject},
		{"aps an array", pl(`{"aps":[]}`), apns.ReasonApsNotObject},
		{"aps null", pl(`{"aps":null}`), apns.ReasonApsNotObject},
		{"payload 4097", pl(string(sizedPayload(4097))), apns.ReasonPayloadTooLarge},
		{"voip 5121", job(`"push_type":"voip","topic":"com.example.app.voip","payload":` + string(sizedPayload(5121))), apns.ReasonPayloadTooLarge},
		{"1 MB job", pl(`{"aps":{"alert":"` + strings.Repeat("x", 900<<10) + `"}}`), apns.ReasonPayloadTooLarge},
		{"priority 7", job(`"payload":` + payload + `,"priority":7`), apns.ReasonInvalidPriority},
		{"priority 0x0a", job(`"payload":` + payload + `,"priority":10e0`), apns.ReasonInvalidPriority},
		{"priority negative", job(`"payload":` + payload + `,"priority":-5`), apns.ReasonInvalidPriority},
		{"priority huge", job(`"payload":` + payload + `,"priority":1` + strings.Repeat("0", 400)), apns.ReasonInvalidPriority},
		{"expiration negative", job(`"payload":` + payload + `,"expiration":-1`), apns.ReasonBadExpirationDate},
		{"expiration huge", job(`"payload":` + payload + `,"expiration":99999999999999999999`), apns.ReasonBadExpirationDate},
		{"expiration fraction", job(`"payload":` + payload + `,"expiration":1.5`), apns.ReasonBadExpirationDate},
		{"expiration not a date", job(`"payload":` + payload + `,"expiration":"NaN"`), apns.ReasonBadExpirationDate},
		{"expiration before 1970", job(`"payload":` + payload + `,"expiration":"1960-01-01T00:00:00Z"`), apns.ReasonBadExpirationDate},
		{"expiration a zero date", job(`"payload":` + payload + `,"expiration":"0001-01-01T00:00:00Z"`), apns.ReasonBadExpirationDate},
		{"unknown push type", job(`"payload":` + payload + `,"push_type":"spam"`), apns.ReasonInvalidPushType},
		{"collapse id 65 bytes", job(`"payload":` + payload + `,"collapse_id":"` + strings.Repeat("c", 65) + `"`), apns.ReasonInvalidCollapseID},
		{"topic with a space", job(`"payload":` + payload + `,"topic":"com.example app"`), apns.ReasonInvalidTopic},
		{"background at priority 10", job(`"push_type":"background","priority":10,"payload":{"aps":{"content-available":1}}`), apns.ReasonInvalidPriority},
		{"background without content-available", job(`"push_type":"background","priority":5,"payload":{"aps":{}}`), apns.ReasonContentAvailable},
		{"liveactivity default topic", job(`"push_type":"liveactivity","payload":{"aps":{"event":"update","timestamp":1796083200}}`), apns.ReasonTopicDisallowed},
		{"liveactivity bare topic", job(`"push_type":"liveactivity","topic":"com.example.app","payload":{"aps":{"event":"update","timestamp":1796083200}}`), apns.ReasonTopicDisallowed},
		{"liveactivity without event", job(`"push_type":"liveactivity","topic":"com.example.app.push-type.liveactivity","payload":{"aps":{"timestamp":1796083200}}`), apns.ReasonBadLiveActivity},
		{"liveactivity timestamp in ms", job(`"push_type":"liveactivity","topic":"com.example.app.push-type.liveactivity","payload":{"aps":{"event":"end","timestamp":1796083200000}}`), apns.ReasonBadLiveActivity},
		{"voip default topic", job(`"push_type":"voip","payload":` + payload), apns.ReasonTopicDisallowed},
		{"complication bare topic", job(`"push_type":"complication","topic":"com.example.app","payload":` + payload), apns.ReasonTopicDisallowed},
		{"fileprovider bare topic", job(`"push_type":"fileprovider","topic":"com.example.app","payload":` + payload), apns.ReasonTopicDisallowed},
		{"location at priority 5", job(`"push_type":"location","topic":"com.example.app.location-query","priority":5,"payload":` + payload), apns.ReasonInvalidPriority},
		{"huge topic", job(`"push_type":"voip","topic":"` + strings.Repeat("t", 700<<10) + `","payload":` + payload), apns.ReasonTopicDisallowed},
		{"huge push type", job(`"push_type":"` + strings.Repeat("p", 700<<10) + `","payload":` + payload), apns.ReasonInvalidPushType},
		{"huge content-available", job(`"push_type":"background","priority":5,"payload":{"aps":{"content-available":"` + strings.Repeat("c", 3000) + `"}}`), apns.ReasonContentAvailable},
		{"pushtotalk bare topic", job(`"push_type":"pushtotalk","topic":"com.example.app","payload":` + payload), apns.ReasonTopicDisallowed},
		{"mdm without mdm", job(`"push_type":"mdm","payload":{}`), apns.ReasonMissingMDM},
		{"mdm with aps only", job(`"push_type":"mdm","payload":` + payload), apns.ReasonMissingMDM},
		{"mdm not a string", job(`"push_type":"mdm","payload":{"mdm":1}`), apns.ReasonMissingMDM},
		{"mdm empty", job(`"push_type":"mdm","payload":{"mdm":""}`), apns.ReasonMissingMDM},
		{"mdm in aps", job(`"push_type":"mdm","payload":{"aps":{"mdm":"m"}}`), apns.ReasonMissingMDM},
		{"mdm twice", job(`"push_type":"mdm","payload":{"mdm":"a","\u006ddm":"b"}`), apns.ReasonDuplicateKey},
		{"mdm with a string aps", job(`"push_type":"mdm","payload":{"mdm":"m","aps":"x"}`), apns.ReasonApsNotObject},
		{"mdm member without the push type", job(`"payload":{"mdm":"m"}`), apns.ReasonMissingAps},
	}, auditCases()...)
}

// sizedPayload returns a payload of exactly n bytes.
func sizedPayload(n int) []byte {
	const head, tail = `{"aps":{},"x":"`, `"}`
	return []byte(head + strings.Repeat("x", n-len(head)-len(tail)) + tail)
}

// goodJobs are accepted jobs of the kinds the contract allows.
func goodJobs() []string {
	tok := tokHex(200)
	return append([]string{
		`{"token":"` + tok + `","payload":` + payload + `}`,
		`{"id":"g","token":"` + tok + `","payload":{ "aps" : {"alert":"\u00e9\ud83d\ude00"} , "x":[1,{"x":2,"x":3}]},"Token":"x","unknown":null}`,
		`{"token":"` + tok + `","push_type":"background","priority":5,"payload":{"aps":{"content-available":1}}}`,
		`{"token":"` + tok + `","push_type":"liveactivity","topic":"com.example.app.push-type.liveactivity","payload":{"aps":{"event":"update","timestamp":1796083200,"content-state":{}}}}`,
		`{"token":"` + tok + `","push_type":"voip","topic":"com.example.app.voip","payload":` + string(sizedPayload(5120)) + `}`,
		`{"token":"` + tok + `","payload":` + string(sizedPayload(4096)) + `,"expiration":0,"priority":1,"collapse_id":"c"}`,
		`{"token":"` + tok + `","push_type":"mdm","topic":"com.apple.mgmt.External.0b0f4a52","payload":{"mdm":"5E4B9C1D-PushMagic"}}`,
		`{"token":"` + tok + `","push_type":"mdm","payload":{"\u006ddm":"m","aps":{}}}`,
	}, auditGoodJobs()...)
}

// hostileWorker is the Worker the table and the fuzz target check jobs
// with: HTTP/2, default topic com.example.app.
func hostileWorker() *Worker {
	return &Worker{limits: protocolLimits(ProtocolHTTP2, 0), opts: Options{DefaultTopic: "com.example.app"}}
}

// TestJobContract: one case per rule; each refused job gets the rule's
// reason, and its event carries its bytes.
func TestJobContract(t *testing.T) {
	w := hostileWorker()
	for _, c := range malformedCases() {
		t.Run(c.name, func(t *testing.T) { checkRefused(t, w, c) })
	}
	for i, data := range goodJobs() {
		t.Run("good "+strconv.Itoa(i), func(t *testing.T) {
			_, n, err := w.checkJob([]byte(data))
			require.NoError(t, err)
			checkAccepted(t, []byte(data), n)
		})
	}
}

// checkMalformedEvent: a refused job's event names a reason and carries
// the job's bytes ("job" when valid JSON, else "job_raw"). Failures are
// reported short: the fuzzer's inputs can be large.
func checkMalformedEvent(t *testing.T, data []byte, cause error) {
	t.Helper()
	ev := malformedEvent("id", 1, "", ProtocolHTTP2, cause, data)
	if ev.Reason == "" {
		t.Fatalf("no reason for %v", cause)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if limit := MaxEventJob*4/3 + 4<<10; len(b) > limit { // job bytes in base64, and the rest
		t.Fatalf("event of %d bytes, more than %d", len(b), limit)
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("event is not JSON: %v", err)
	}
	if string(got["protocol"]) != `"http2"` {
		t.Fatalf("protocol %s", got["protocol"])
	}
	if len(data) > MaxEventJob {
		if string(got["job_size"]) != strconv.Itoa(len(data)) {
			t.Fatalf("job_size %s, want %d", got["job_size"], len(data))
		}
		return
	}
	if raw, ok := got["job"]; ok {
		// The job as JSON: the same value (the encoder compacts it).
		if !jsonscan.ValidUnicode(data) {
			t.Fatalf("job %.100q is not UTF-8 but went in job", data)
		}
		if !reflect.DeepEqual(jsonValue(t, data), jsonValue(t, raw)) {
			t.Fatalf("event job %.200s, want %.200s", raw, data)
		}
		return
	}
	var raw []byte
	if err := json.Unmarshal(got["job_raw"], &raw); err != nil || !bytes.Equal(data, raw) {
		t.Fatalf("job_raw %.200s, want %.200q (%v)", got["job_raw"], data, err)
	}
	if len(data) == 0 && string(got["job_size"]) != "0" {
		t.Fatalf("empty job: job_size %s", got["job_size"])
	}
}

// checkAccepted: an accepted job is sent with the payload it carried, byte
// for byte, its aps is an object (or, for an mdm push, absent beside a
// string mdm member), and no name repeats in the job, the payload or aps
// (as encoding/json reads them); its other values are sent as written
// (checkSentAsWritten).
func checkAccepted(t *testing.T, data []byte, n *apns.Notification) {
	t.Helper()
	if n == nil {
		t.Fatal("accepted without a notification")
	}
	checkSentAsWritten(t, n)
	job, err := uniqueMembers(data)
	if err != nil {
		t.Fatalf("accepted job %.200q: %v", data, err)
	}
	if !bytes.Equal(job["payload"], n.Payload) {
		t.Fatalf("sent payload %.200q, the job carried %.200q", n.Payload, job["payload"])
	}
	pl, err := uniqueMembers(n.Payload)
	if err != nil {
		t.Fatalf("accepted payload %.200q: %v", n.Payload, err)
	}
	aps, ok := pl["aps"]
	if mdm := pl["mdm"]; !ok && n.PushType == apns.PushTypeMDM && len(mdm) > 0 && mdm[0] == '"' {
		aps = []byte(`{}`) // an mdm push needs its string mdm member, not aps
	}
	if len(aps) == 0 || aps[0] != '{' {
		t.Fatalf("accepted aps %.100q is not an object", aps)
	}
	if _, err := uniqueMembers(aps); err != nil {
		t.Fatalf("accepted aps %.200q: %v", aps, err)
	}
	if !utf8.Valid(data) || !jsonscan.ValidUnicode(data) {
		t.Fatalf("accepted job %.200q is not UTF-8", data)
	}
}

// uniqueMembers reads a JSON object's members through encoding/json and
// fails on a name that repeats.
func uniqueMembers(b []byte) (map[string]json.RawMessage, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return nil, errNotObject
	}
	m := map[string]json.RawMessage{}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return nil, err
		}
		k := tok.(string)
		if _, dup := m[k]; dup {
			return nil, apns.ErrDuplicateKey
		}
		m[k] = v
	}
	return m, nil
}

var errNotObject = apns.ErrInvalidPayload

// FuzzJob: whatever the decoder and validation accept is sent with the
// job's payload byte for byte, has an object aps (but for mdm) and no
// repeated name;
// whatever they refuse gets exactly one rejection event, with a reason
// and the job's bytes.
func FuzzJob(f *testing.F) {
	for _, c := range malformedCases() {
		if len(c.data) <= 8<<10 {
			f.Add([]byte(c.data))
		}
	}
	for _, g := range goodJobs() {
		f.Add([]byte(g))
	}
	w := hostileWorker()
	f.Fuzz(func(t *testing.T, data []byte) {
		_, n, err := w.checkJob(data)
		if err != nil {
			if n != nil || !errors.Is(err, ErrMalformedJob) && !errors.Is(err, apns.ErrInvalidNotification) {
				t.Fatalf("a refusal is a malformed job or an invalid notification: %.300v", err)
			}
			checkMalformedEvent(t, data, err)
			return
		}
		checkAccepted(t, data, n)
	})
}

// TestWriteFuzzSeeds writes the seed corpus of FuzzJob from the table
// (APNS_WRITE_SEEDS=1); the corpus is committed under testdata/fuzz.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("APNS_WRITE_SEEDS") == "" {
		t.Skip("set APNS_WRITE_SEEDS=1 to write testdata/fuzz/FuzzJob")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzJob")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	write := func(name, data string) {
		body := "go test fuzz v1\n[]byte(" + strconv.Quote(data) + ")\n"
		require.NoError(t, os.WriteFile(filepath.Join(dir, "seed-"+strings.ReplaceAll(name, " ", "-")), []byte(body), 0o644))
	}
	for _, c := range malformedCases() {
		if len(c.data) <= 8<<10 {
			write(c.name, c.data)
		}
	}
	for i, g := range goodJobs() {
		write("good-"+strconv.Itoa(i), g)
	}
}

// jsonValue decodes b, numbers kept as written.
func jsonValue(t *testing.T, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("%.100q: %v", b, err)
	}
	return v
}
