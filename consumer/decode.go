package consumer

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/jsonscan"
)

// decodeJob decodes a job message by the contract in the README ("Job
// format"), without reflection: the message is one JSON object (RFC 8259,
// nesting at most jsonscan.MaxDepth, nothing after it) of valid UTF-8 with
// no escaped lone surrogate and no member name twice (RFC 7493); member
// names match Job's exactly (case-sensitive); unknown members are ignored.
// On error it returns the members it read so far (ID, Token) for the
// rejection event. Every error wraps ErrMalformedJob, and, for the rules
// with their own reason, the apns validation error (apns.ReasonOf).
func decodeJob(data []byte) (Job, error) {
	var j Job
	if len(data) == 0 {
		return j, fmt.Errorf("%w: empty message", ErrMalformedJob)
	}
	// One pass validates the job and decodes its members, up to the first
	// member in error or named twice; those count only if the whole is
	// valid I-JSON.
	var (
		names jsonscan.Names
		dup   []byte
		err   error
	)
	valid, unicode := jsonscan.ValidObject(data, func(name, val []byte) {
		switch {
		case dup != nil || err != nil:
		case names.Seen(name):
			dup = name
		default:
			err = j.member(jsonscan.Unquote(name), val)
		}
	})
	switch {
	case !valid && jsonscan.Valid(data):
		return Job{}, fmt.Errorf("%w: not a JSON object", ErrMalformedJob)
	case !valid:
		return Job{}, fmt.Errorf("%w: %s", ErrMalformedJob, whyNotJSON(data))
	case !unicode:
		return Job{}, fmt.Errorf("%w: %w", ErrMalformedJob, apns.ErrInvalidUTF8)
	case dup != nil:
		return j, fmt.Errorf("%w: %w: member %.64s", ErrMalformedJob, apns.ErrDuplicateKey, dup)
	}
	return j, err
}

// whyNotJSON says why data, which jsonscan.Valid refused, is not a job:
// nested too deep, or where its JSON breaks (encoding/json's error and
// offset). It runs only for refused jobs.
func whyNotJSON(data []byte) string {
	if json.Valid(data) {
		return fmt.Sprintf("nested deeper than %d", jsonscan.MaxDepth)
	}
	var se *json.SyntaxError
	if err := json.Unmarshal(data, new(json.RawMessage)); errors.As(err, &se) {
		if strings.HasSuffix(se.Error(), "exceeded max depth") {
			return fmt.Sprintf("nested deeper than %d", jsonscan.MaxDepth)
		}
		return fmt.Sprintf("not JSON: %s, at byte %d", se, se.Offset)
	}
	return "not JSON"
}

// member decodes one member of a job.
func (j *Job) member(name, val []byte) error {
	var err error
	switch string(name) {
	case "id":
		err = str(val, &j.ID)
	case "token":
		err = str(val, &j.Token)
	case "topic":
		err = str(val, &j.Topic)
	case "push_type":
		err = str(val, &j.PushType)
	case "collapse_id":
		err = str(val, &j.CollapseID)
	case "payload":
		j.Payload = val // a subslice of the message: sent byte for byte
	case "priority":
		err = priority(val, &j.Priority)
	case "expiration":
		err = j.Expiration.decode(val)
	default:
		return nil // unknown members are ignored
	}
	if err != nil {
		return fmt.Errorf("%w: member %q: %w", ErrMalformedJob, name, err)
	}
	return nil
}

// str decodes a string member; null leaves it empty.
func str(val []byte, dst *string) error {
	switch val[0] {
	case '"':
		*dst = string(jsonscan.Unquote(val))
		return nil
	case 'n':
		return nil
	}
	return fmt.Errorf("%s, want a string", kind(val))
}

// priority decodes the priority: a plain integer (no fraction, exponent or
// sign) or null. Its value is checked by Notification.
func priority(val []byte, dst *int) error {
	switch c := val[0]; {
	case c == 'n':
		return nil
	case c == '-' || c >= '0' && c <= '9':
		n, err := strconv.ParseUint(string(val), 10, 8)
		if err != nil {
			return fmt.Errorf("%w: %.24s, want 10, 5 or 1", apns.ErrInvalidPriority, val)
		}
		*dst = int(n)
		return nil
	}
	return fmt.Errorf("%s, want an integer", kind(val))
}

// decode reads an expiration: an RFC 3339 string from 1970 (its first
// second is try once) to 2106-02-07T06:28:15Z (2^32-1), whole UNIX seconds
// from 0 (try once) to 2^32-1, or null (none).
func (e *Expiration) decode(val []byte) error {
	switch c := val[0]; {
	case c == 'n':
		*e = Expiration{}
		return nil
	case c == '"':
		s := jsonscan.Unquote(val)
		t, err := time.Parse(time.RFC3339, string(s))
		if err == nil && !rfc3339Form(s) {
			err = errors.New("not RFC 3339's form") // which time.Parse does not check in full
		}
		if err != nil {
			return fmt.Errorf("%w: %.40q is not RFC 3339", apns.ErrInvalidExpiration, s)
		}
		switch {
		case t.Unix() > math.MaxUint32:
			// APNs' expiration is 32-bit UNIX seconds (the binary frame's
			// item 4): a later time cannot be sent as written.
			return fmt.Errorf("%w: %.40q is after 2106-02-07T06:28:15Z (UNIX seconds 4294967295)", apns.ErrInvalidExpiration, s)
		case t.Unix() < 0:
			// A zero or minimum date of the producer's language
			// ("0001-01-01T00:00:00Z") meant as "none", most likely: say
			// so, rather than send it once or drop it as expired.
			return fmt.Errorf("%w: %.40q is before 1970 (omit it or send null for none, 0 to try once)", apns.ErrInvalidExpiration, s)
		case t.Unix() == 0:
			t = apns.ExpireNow
		}
		*e = Expiration(t)
		return nil
	case c == '-' || c >= '0' && c <= '9':
		n, err := strconv.ParseUint(string(val), 10, 32)
		if err != nil {
			return fmt.Errorf("%w: %.24s, want whole UNIX seconds from 0 to 4294967295", apns.ErrInvalidExpiration, val)
		}
		if n == 0 {
			*e = Expiration(apns.ExpireNow)
		} else {
			*e = Expiration(time.Unix(int64(n), 0))
		}
		return nil
	}
	return fmt.Errorf("%s, want an RFC 3339 string or UNIX seconds", kind(val))
}

// rfc3339Form reports whether s has the form of an RFC 3339 §5.6
// date-time (upper-case T and Z), which time.Parse does not check in full:
// it also reads a one-digit hour ("T0:00:00Z"), a comma before the
// fraction, and offsets such as "+24:00" and "+00:60" (hours are 00 to 23,
// minutes 00 to 59). The ranges of the date and the time are time.Parse's.
func rfc3339Form(s []byte) bool {
	const form = "dddd-dd-ddTdd:dd:dd"
	if len(s) <= len(form) {
		return false
	}
	for i := range len(form) {
		if form[i] == 'd' && !isDigit(s[i]) || form[i] != 'd' && s[i] != form[i] {
			return false
		}
	}
	rest := s[len(form):]
	if rest[0] == '.' {
		k := 1
		for k < len(rest) && isDigit(rest[k]) {
			k++
		}
		if k == 1 {
			return false
		}
		rest = rest[k:]
	}
	if string(rest) == "Z" {
		return true
	}
	return len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':' &&
		isDigit(rest[1]) && isDigit(rest[2]) && isDigit(rest[4]) && isDigit(rest[5]) &&
		string(rest[1:3]) <= "23" && string(rest[4:6]) <= "59"
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// kind names the JSON type of val, with its article, for an error.
func kind(val []byte) string {
	switch val[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}
