package config

import (
	"errors"
	"log/slog"
)

// Error reports one bad variable. Var is the name the user sets, prefix
// included (APNS_WORKER_NATS_URL); Err never holds a secret.
type Error struct {
	Var string
	Err error
}

func (e *Error) Error() string { return e.Var + ": " + e.Err.Error() }

func (e *Error) Unwrap() error { return e.Err }

// Errors returns every *Error in err, which Load builds with errors.Join.
func Errors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		var e *Error
		switch x := err.(type) {
		case nil:
		case interface{ Unwrap() []error }:
			for _, err := range x.Unwrap() {
				walk(err)
			}
		default:
			if errors.As(err, &e) {
				out = append(out, e)
			}
		}
	}
	walk(err)
	return out
}

// Secret is a string kept out of logs and errors: String, GoString,
// MarshalText and LogValue show "[redacted]" (or "" when empty). Reveal
// returns the value.
type Secret string

const redacted = "[redacted]"

// Reveal returns the secret's value, for the code that uses it.
func (s Secret) Reveal() string { return string(s) }

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString redacts %#v.
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// MarshalText redacts the secret in JSON and other encodings.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }
