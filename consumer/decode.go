package consumer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/jetpush/apns-worker/apns/jsonscan"
)

// jobFields are Job's JSON members, for the fast decoder.
var jobFields = []string{"id", "token", "payload", "topic", "push_type", "priority", "expiration", "collapse_id"}

// decodeFast decodes the usual job (a valid JSON object whose member names
// are exactly Job's, or plainly unrelated) into j without reflection. It
// reports ok=false when the input needs encoding/json's rules (invalid
// JSON, escaped or case-folded member names, escaped strings), and then
// DecodeJob falls back to json.Unmarshal, so both give the same result
// (FuzzDecodeJob checks it).
func decodeFast(data []byte, j *Job) (ok bool, err error) {
	if !jsonscan.Valid(data) {
		return false, nil // invalid, or too deep for jsonscan: encoding/json says which
	}
	i := jsonscan.SkipSpace(data, 0)
	if data[i] != '{' {
		return false, nil
	}
	i++
	var firstErr error
	for {
		i = jsonscan.SkipSpace(data, i)
		if data[i] == '}' {
			return true, firstErr
		}
		if data[i] == ',' {
			i = jsonscan.SkipSpace(data, i+1)
		}
		kEnd := jsonscan.SkipString(data, i)
		key := data[i+1 : kEnd-1]
		i = jsonscan.SkipSpace(data, kEnd)
		i = jsonscan.SkipSpace(data, i+1) // ':'
		vEnd := jsonscan.SkipValue(data, i)
		val := data[i:vEnd]
		i = vEnd
		if bytes.IndexByte(key, '\\') >= 0 {
			return false, nil
		}
		var err error
		switch string(key) {
		case "id":
			err = fastString(val, &j.ID)
		case "token":
			err = fastString(val, &j.Token)
		case "topic":
			err = fastString(val, &j.Topic)
		case "push_type":
			err = fastString(val, &j.PushType)
		case "collapse_id":
			err = fastString(val, &j.CollapseID)
		case "payload":
			j.Payload = append(json.RawMessage(nil), val...)
		case "priority":
			err = fastInt(val, &j.Priority)
		case "expiration":
			if err = j.Expiration.UnmarshalJSON(val); err != nil {
				return true, err // encoding/json stops at an Unmarshaler's error
			}
		default:
			for _, f := range jobFields {
				if bytes.EqualFold(key, []byte(f)) {
					return false, nil // encoding/json matches names without case
				}
			}
			if !ascii(key) {
				return false, nil // and folds some non-ASCII letters (K, ſ)
			}
		}
		if err == errSlow {
			return false, nil
		}
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("member %q: %w", key, err)
		}
	}
}

// errSlow asks for the encoding/json fallback.
var errSlow = fmt.Errorf("consumer: needs encoding/json")

func fastString(val []byte, dst *string) error {
	switch val[0] {
	case '"':
		s := val[1 : len(val)-1]
		if bytes.IndexByte(s, '\\') >= 0 || !utf8.Valid(s) {
			return errSlow
		}
		*dst = string(s)
		return nil
	case 'n': // null: no change
		return nil
	}
	return fmt.Errorf("json: cannot unmarshal %s into a string", kind(val))
}

func fastInt(val []byte, dst *int) error {
	switch val[0] {
	case 'n':
		return nil
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		n, err := strconv.ParseInt(string(val), 10, 64)
		if err != nil {
			return fmt.Errorf("json: cannot unmarshal number %s into an integer", val)
		}
		*dst = int(n)
		return nil
	}
	return fmt.Errorf("json: cannot unmarshal %s into an integer", kind(val))
}

func kind(val []byte) string {
	switch val[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "bool"
	}
	return "number"
}

func ascii(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
