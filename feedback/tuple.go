package feedback

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jetpush/apns-worker/apns"
)

// BadToken is one entry of the feedback service: APNs found the app gone
// from the device with Token at Time. A token registered again after Time
// is alive: compare before deleting it.
type BadToken struct {
	Token apns.Token
	Time  time.Time // UTC, whole seconds
}

// headerLen is the fixed part of a tuple: timestamp (4) and token length (2).
const headerLen = 6

// readTuple reads one tuple from r, whose token must be tokenLen bytes
// (0: any length from 1 to apns.MaxTokenLen). At a clean end of input, before
// the tuple's first byte, it returns io.EOF. A tuple cut short returns an
// error wrapping ErrMalformed and io.ErrUnexpectedEOF; a bad token length
// wraps ErrMalformed; read errors are returned as they are.
func readTuple(r io.Reader, tokenLen int) (BadToken, error) {
	var h [headerLen]byte
	n, err := io.ReadFull(r, h[:])
	switch {
	case err == io.EOF:
		return BadToken{}, io.EOF
	case err == io.ErrUnexpectedEOF:
		return BadToken{}, fmt.Errorf("%w: connection closed after %d of the tuple's %d header bytes: %w",
			ErrMalformed, n, headerLen, io.ErrUnexpectedEOF)
	case err != nil:
		return BadToken{}, err
	}
	l := int(binary.BigEndian.Uint16(h[4:]))
	if l == 0 || l > apns.MaxTokenLen {
		return BadToken{}, fmt.Errorf("%w: token length %d, want 1 to %d", ErrMalformed, l, apns.MaxTokenLen)
	}
	tok := make(apns.Token, l)
	if n, err := io.ReadFull(r, tok); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return BadToken{}, fmt.Errorf("%w: connection closed after %d of the token's %d bytes: %w",
				ErrMalformed, n, l, io.ErrUnexpectedEOF)
		}
		return BadToken{}, err
	}
	if tokenLen != 0 && l != tokenLen {
		// Read whole: the next tuple starts right after it.
		return BadToken{}, fmt.Errorf("%w: token length %d, want %d", errOtherLength, l, tokenLen)
	}
	return BadToken{Token: tok, Time: time.Unix(int64(binary.BigEndian.Uint32(h[:4])), 0).UTC()}, nil
}

// errOtherLength is a whole tuple whose token is not of the length asked
// for: readAll skips it and reads on.
var errOtherLength = fmt.Errorf("%w: a token of another length", ErrMalformed)

// readAll reads tuples until a clean end of input, at most max of them
// (0: no limit). It returns the tuples read before any error; the error
// says which tuple failed. Tuples whose token is of another length than
// tokenLen are skipped, the rest read; they are then counted in an error
// wrapping ErrMalformed.
func readAll(r io.Reader, tokenLen, max int) (out []BadToken, err error) {
	skipped := 0
	var first error
	defer func() {
		if skipped > 0 {
			err = errors.Join(fmt.Errorf("%d tuples skipped, the first: %w", skipped, first), err)
		}
	}()
	for {
		if max > 0 && len(out) == max {
			var b [1]byte
			switch _, err := io.ReadFull(r, b[:]); err {
			case io.EOF:
				return out, nil
			case nil:
				return out, fmt.Errorf("%w: more than %d tuples", ErrTooMany, max)
			default:
				return out, fmt.Errorf("%w (after %d tuples)", err, len(out))
			}
		}
		t, err := readTuple(r, tokenLen)
		if err == io.EOF {
			return out, nil
		}
		if errors.Is(err, errOtherLength) {
			if skipped++; skipped == 1 {
				first = fmt.Errorf("%w (tuple %d)", err, len(out)+skipped)
			}
			continue
		}
		switch {
		case errors.Is(err, ErrMalformed):
			return out, fmt.Errorf("%w (tuple %d)", err, len(out)+1)
		case err != nil && len(out) > 0:
			return out, fmt.Errorf("%w (after %d tuples)", err, len(out))
		case err != nil:
			return out, err
		}
		out = append(out, t)
	}
}
