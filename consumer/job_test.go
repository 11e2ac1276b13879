package consumer

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
)

const tok32 = "5a2b7f0c9d1e3a4b6c8d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d"

func TestDecodeJob(t *testing.T) {
	exp := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		in      string
		want    Job
		wantErr error
	}{
		{"minimal", `{"token":"` + tok32 + `","payload":{"aps":{}}}`,
			Job{Token: tok32, Payload: json.RawMessage(`{"aps":{}}`)}, nil},
		{"all fields, RFC 3339", `{"id":"a","token":"` + tok32 + `","payload":{"aps":{"alert":"x"}},"topic":"com.x","push_type":"alert","priority":5,"expiration":"2026-12-01T00:00:00Z","collapse_id":"c"}`,
			Job{ID: "a", Token: tok32, Payload: json.RawMessage(`{"aps":{"alert":"x"}}`), Topic: "com.x", PushType: "alert", Priority: 5, Expiration: Expiration(exp), CollapseID: "c"}, nil},
		{"expiration seconds", `{"token":"ab","payload":{},"expiration":1796083200}`,
			Job{Token: "ab", Payload: json.RawMessage(`{}`), Expiration: Expiration(time.Unix(1796083200, 0))}, nil},
		{"expiration 0 is try once", `{"token":"ab","payload":{},"expiration":0}`,
			Job{Token: "ab", Payload: json.RawMessage(`{}`), Expiration: Expiration(apns.ExpireNow)}, nil},
		{"expiration null", `{"token":"ab","payload":{},"expiration":null}`,
			Job{Token: "ab", Payload: json.RawMessage(`{}`)}, nil},
		{"payload kept byte for byte", `{"token":"ab","payload":{ "aps" : {"a":1.50} , "z":"\u00e9"}}`,
			Job{Token: "ab", Payload: json.RawMessage(`{ "aps" : {"a":1.50} , "z":"\u00e9"}`)}, nil},
		{"unknown fields ignored", `{"token":"ab","payload":{},"sound":"x","extra":{"a":[1]}}`,
			Job{Token: "ab", Payload: json.RawMessage(`{}`)}, nil},
		{"broken json", `{"token":"ab"`, Job{}, ErrMalformedJob},
		{"not an object", `[1,2]`, Job{}, ErrMalformedJob},
		{"null", ` null`, Job{}, ErrMalformedJob},
		{"empty", ``, Job{}, ErrMalformedJob},
		{"token is a number", `{"token":12,"payload":{}}`, Job{}, ErrMalformedJob},
		{"priority is a string", `{"token":"ab","payload":{},"priority":"10"}`, Job{}, ErrMalformedJob},
		{"priority is fractional", `{"token":"ab","payload":{},"priority":10.5}`, Job{}, ErrMalformedJob},
		{"expiration fractional", `{"token":"ab","payload":{},"expiration":1.5}`, Job{}, ErrMalformedJob},
		{"expiration negative", `{"token":"ab","payload":{},"expiration":-1}`, Job{}, ErrMalformedJob},
		{"expiration not RFC 3339", `{"token":"ab","payload":{},"expiration":"tomorrow"}`, Job{}, apns.ErrInvalidExpiration},
		{"expiration before 1970", `{"token":"ab","payload":{},"expiration":"1969-12-31T23:59:59Z"}`, Job{}, apns.ErrInvalidExpiration},
		{"expiration 1970 is try once", `{"token":"ab","payload":{},"expiration":"1970-01-01T00:00:00Z"}`,
			Job{Token: "ab", Payload: json.RawMessage(`{}`), Expiration: Expiration(apns.ExpireNow)}, nil},
		{"expiration a bool", `{"token":"ab","payload":{},"expiration":true}`, Job{}, ErrMalformedJob},
		{"id is a number", `{"id":1,"token":"ab","payload":{}}`, Job{}, ErrMalformedJob},
		// The I-JSON rules and the hostile producer's jobs.
		{"two tokens", `{"token":"ab","payload":{},"token":"cd"}`, Job{}, apns.ErrDuplicateKey},
		{"two payloads", `{"token":"ab","payload":{"aps":{}},"payload":{}}`, Job{}, apns.ErrDuplicateKey},
		{"escaped repeat", `{"token":"ab","payload":{},"\u0074oken":"cd"}`, Job{}, apns.ErrDuplicateKey},
		{"unknown member twice", `{"token":"ab","payload":{},"x":1,"x":1}`, Job{}, apns.ErrDuplicateKey},
		{"names are case-sensitive", `{"Token":"cd","token":"ab","PAYLOAD":1,"payload":{}}`,
			Job{Token: "ab", Payload: json.RawMessage(`{}`)}, nil},
		{"escaped name", `{"\u0074oken":"ab","payload":{}}`, Job{Token: "ab", Payload: json.RawMessage(`{}`)}, nil},
		{"escaped value", `{"token":"a\u0062","payload":{},"topic":"com.\u00e9"}`,
			Job{Token: "ab", Payload: json.RawMessage(`{}`), Topic: "com.é"}, nil},
		{"nulls", `{"id":null,"token":null,"payload":null,"topic":null,"push_type":null,"priority":null,"expiration":null,"collapse_id":null}`,
			Job{Payload: json.RawMessage(`null`)}, nil},
		{"invalid UTF-8", "{\"token\":\"ab\",\"payload\":{},\"topic\":\"\xff\"}", Job{}, apns.ErrInvalidUTF8},
		{"lone surrogate", `{"token":"ab","payload":{},"topic":"\ud800"}`, Job{}, apns.ErrInvalidUTF8},
		{"BOM", "\xef\xbb\xbf{\"token\":\"ab\",\"payload\":{}}", Job{}, ErrMalformedJob},
		{"trailing garbage", `{"token":"ab","payload":{}}x`, Job{}, ErrMalformedJob},
		{"two objects", `{"token":"ab","payload":{}}{}`, Job{}, ErrMalformedJob},
		{"invalid escape", `{"token":"a\x","payload":{}}`, Job{}, ErrMalformedJob},
		{"NaN", `{"token":"ab","payload":{},"priority":NaN}`, Job{}, ErrMalformedJob},
		{"deep nesting", `{"token":"ab","payload":{},"x":` + strings.Repeat("[", 1100) + strings.Repeat("]", 1100) + `}`, Job{}, ErrMalformedJob},
		{"priority with exponent", `{"token":"ab","payload":{},"priority":1e1}`, Job{}, apns.ErrInvalidPriority},
		{"priority 10.0", `{"token":"ab","payload":{},"priority":10.0}`, Job{}, apns.ErrInvalidPriority},
		{"priority negative", `{"token":"ab","payload":{},"priority":-10}`, Job{}, apns.ErrInvalidPriority},
		{"priority huge", `{"token":"ab","payload":{},"priority":18446744073709551626}`, Job{}, apns.ErrInvalidPriority},
		{"expiration huge", `{"token":"ab","payload":{},"expiration":4294967296}`, Job{}, apns.ErrInvalidExpiration},
		{"expiration exponent", `{"token":"ab","payload":{},"expiration":1e9}`, Job{}, apns.ErrInvalidExpiration},
		{"expiration negative string", `{"token":"ab","payload":{},"expiration":"-1"}`, Job{}, apns.ErrInvalidExpiration},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := DecodeJob([]byte(tt.in))
			require.ErrorIs(t, err, tt.wantErr)
			if err != nil {
				require.ErrorIs(t, err, ErrMalformedJob)
			}
			require.Equal(t, tt.want, got)
		})
	}
}

// TestDecodeJobTypeErrors: a member of the wrong JSON type is named in the
// error with its type, in words a producer reads in the rejection event.
func TestDecodeJobTypeErrors(t *testing.T) {
	for in, want := range map[string]string{
		`{"id":5}`:                  `member "id": a number, want a string`,
		`{"token":["ab"]}`:          `member "token": an array, want a string`,
		`{"push_type":{}}`:          `member "push_type": an object, want a string`,
		`{"topic":true}`:            `member "topic": a boolean, want a string`,
		`{"priority":"10"}`:         `member "priority": a string, want an integer`,
		`{"priority":[10]}`:         `member "priority": an array, want an integer`,
		`{"expiration":{"s":1}}`:    `member "expiration": an object, want an RFC 3339 string or UNIX seconds`,
		`{"expiration":false}`:      `member "expiration": a boolean, want an RFC 3339 string or UNIX seconds`,
		`{"collapse_id":[{"a":1}]}`: `member "collapse_id": an array, want a string`,
	} {
		_, err := DecodeJob([]byte(in))
		require.ErrorIs(t, err, ErrMalformedJob, in)
		require.Equal(t, "consumer: malformed job: "+want, err.Error(), in)
	}
}

// TestDecodeJobNotJSONErrors: a job that is not JSON says where it breaks;
// one nested too deep says so.
func TestDecodeJobNotJSONErrors(t *testing.T) {
	for in, want := range map[string]string{
		"not json":       "not JSON: invalid character 'o' in literal null (expecting 'u'), at byte 2",
		" \n":            "not JSON: unexpected end of JSON input, at byte 2",
		`{"token":"ab"`:  "not JSON: unexpected end of JSON input, at byte 13",
		`{"a":1} {}`:     "not JSON: invalid character '{' after top-level value, at byte 9",
		"\xef\xbb\xbf{}": "not JSON: invalid character 'ï' looking for beginning of value, at byte 1",
		`{"x":` + strings.Repeat("[", 1001) + strings.Repeat("]", 1001) + `}`:       "nested deeper than 1000",
		"[" + strings.Repeat(`{"a":`, 1001) + "1" + strings.Repeat("}", 1001) + "]": "nested deeper than 1000",
		`{"x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`:     "nested deeper than 1000",
	} {
		_, err := DecodeJob([]byte(in))
		require.ErrorIs(t, err, ErrMalformedJob, in)
		require.Equal(t, "consumer: malformed job: "+want, err.Error(), "%.40q", in)
	}
}

func TestJobNotification(t *testing.T) {
	tok, err := apns.ParseToken(tok32)
	require.NoError(t, err)
	const uuid = "0b0f4a52-63a4-4c4b-9c1e-2f1d2b8d6a10"
	tests := []struct {
		name    string
		job     Job
		want    *apns.Notification
		wantErr error
	}{
		{"uuid id becomes apns-id", Job{ID: uuid, Token: tok32, Payload: json.RawMessage(`{"aps":{}}`), Priority: 10, Topic: "t", PushType: "alert", CollapseID: "c"},
			&apns.Notification{ID: uuid, Token: tok, Payload: []byte(`{"aps":{}}`), Priority: 10, Topic: "t", PushType: "alert", CollapseID: "c"}, nil},
		{"other id is not sent", Job{ID: "job-1", Token: tok32, Payload: json.RawMessage(` {"aps":{}}`), Expiration: Expiration(apns.ExpireNow)},
			&apns.Notification{Token: tok, Payload: []byte(` {"aps":{}}`), Expiration: apns.ExpireNow}, nil},
		{"uppercase uuid is not sent", Job{ID: strings.ToUpper(uuid), Token: tok32, Payload: json.RawMessage(`{}`)},
			&apns.Notification{Token: tok, Payload: []byte(`{}`)}, nil},
		{"bad hex", Job{Token: "zz", Payload: json.RawMessage(`{}`)}, nil, apns.ErrInvalidToken},
		{"odd hex", Job{Token: "abc", Payload: json.RawMessage(`{}`)}, nil, apns.ErrInvalidToken},
		{"no token", Job{Payload: json.RawMessage(`{}`)}, nil, apns.ErrInvalidToken},
		{"no payload", Job{Token: tok32}, nil, apns.ErrInvalidPayload},
		{"null payload", Job{Token: tok32, Payload: json.RawMessage(`null`)}, nil, apns.ErrInvalidPayload},
		{"array payload", Job{Token: tok32, Payload: json.RawMessage(`[1]`)}, nil, apns.ErrInvalidPayload},
		{"priority 7", Job{Token: tok32, Payload: json.RawMessage(`{}`), Priority: 7}, nil, apns.ErrInvalidPriority},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.job.Notification()
			require.ErrorIs(t, err, tt.wantErr)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, apns.ErrInvalidNotification)
			}
			require.Equal(t, tt.want, got)
		})
	}
}

func TestJobRoundTrip(t *testing.T) {
	tok, err := apns.ParseToken(tok32)
	require.NoError(t, err)
	j := NewJob(tok, json.RawMessage(`{"aps":{"alert":"hi"}}`))
	require.True(t, apns.IsUUID(j.ID), j.ID)
	require.NotEqual(t, j.ID, NewJob(tok, nil).ID)
	for _, exp := range []Expiration{{}, Expiration(apns.ExpireNow), Expiration(time.Unix(1796083200, 0))} {
		j.Expiration = exp
		b, err := json.Marshal(j)
		require.NoError(t, err)
		got, err := DecodeJob(b)
		require.NoError(t, err, "%s", b)
		require.Equal(t, j, got)
	}
}

// The documented example in job.schema.json must decode into a valid
// notification for both protocols.
func TestSchemaExample(t *testing.T) {
	b, err := os.ReadFile("job.schema.json")
	require.NoError(t, err)
	var schema struct {
		Schema     string            `json:"$schema"`
		Required   []string          `json:"required"`
		Properties map[string]any    `json:"properties"`
		Examples   []json.RawMessage `json:"examples"`
	}
	require.NoError(t, json.Unmarshal(b, &schema))
	require.Equal(t, "https://json-schema.org/draft/2020-12/schema", schema.Schema)
	require.ElementsMatch(t, []string{"token", "payload"}, schema.Required)
	// Every property the schema names is a field of Job, and back.
	var fields map[string]any
	full, err := json.Marshal(Job{ID: "x", Token: "ab", Payload: json.RawMessage(`{}`), Topic: "t", PushType: "alert",
		Priority: 10, Expiration: Expiration(time.Unix(1, 0)), CollapseID: "c"})
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(full, &fields))
	require.Len(t, schema.Properties, len(fields))
	for k := range fields {
		require.Contains(t, schema.Properties, k)
	}

	require.NotEmpty(t, schema.Examples)
	for _, ex := range schema.Examples {
		j, err := DecodeJob(ex)
		require.NoError(t, err)
		n, err := j.Notification()
		require.NoError(t, err)
		require.NoError(t, n.Validate(apns.BinaryLimits))
		require.NoError(t, n.Validate(apns.HTTP2Limits))
		require.Equal(t, j.ID, n.ID)
		require.Equal(t, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), n.Expiration.UTC())
		require.True(t, n.Expiration.After(time.Now()), "the example has expired: a worker would dead-letter it unsent")
	}
}

func BenchmarkDecodeJob(b *testing.B) {
	data := []byte(`{"id":"0b0f4a52-63a4-4c4b-9c1e-2f1d2b8d6a10","token":"` + tok32 + `","payload":{"aps":{"alert":{"title":"Hello","body":"World"},"badge":1}},"topic":"com.example.app","push_type":"alert","priority":10,"expiration":1796083200}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		j, err := DecodeJob(data)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := j.Notification(); err != nil {
			b.Fatal(err)
		}
	}
}

// Every reason job.schema.json names is one of apns/reason.go's.
func TestSchemaReasons(t *testing.T) {
	b, err := os.ReadFile("job.schema.json")
	require.NoError(t, err)
	list, err := os.ReadFile("../apns/reason.go")
	require.NoError(t, err)
	var walk func(v any)
	n := 0
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if r, ok := v["x-reason"].(string); ok {
				require.Contains(t, string(list), `"`+r+`"`, "x-reason %s", r)
				n++
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	var schema any
	require.NoError(t, json.Unmarshal(b, &schema))
	walk(schema)
	require.GreaterOrEqual(t, n, 8)
}

// BenchmarkCheckJob is the whole check a job passes before the engine:
// decode, build, and validate against the contract (HTTP/2 limits).
func BenchmarkCheckJob(b *testing.B) {
	data := []byte(`{"id":"0b0f4a52-63a4-4c4b-9c1e-2f1d2b8d6a10","token":"` + tok32 + `","payload":{"aps":{"alert":{"title":"Hello","body":"World"},"badge":1}},"topic":"com.example.app","push_type":"alert","priority":10,"expiration":1796083200}`)
	w := &Worker{limits: protocolLimits(ProtocolHTTP2, 0), opts: Options{DefaultTopic: "com.example.app"}}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, _, err := w.checkJob(data); err != nil {
			b.Fatal(err)
		}
	}
}
