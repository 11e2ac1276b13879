package apns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// Binary-protocol wire constants (Apple's "Binary Provider API").
const (
	// CommandNotification is the command byte of a command-2 frame.
	CommandNotification = 2
	// CommandErrorResponse is the command byte of an error response.
	CommandErrorResponse = 8
	// ErrorResponseLen is the size of an error response in bytes.
	ErrorResponseLen = 6
	// FrameHeaderLen is the size of a frame's command and length fields.
	FrameHeaderLen = 5
)

// Item identifiers inside a command-2 frame.
const (
	itemToken      = 1
	itemPayload    = 2
	itemID         = 3
	itemExpiration = 4
	itemPriority   = 5
	itemHeaderLen  = 3 // id (1) + length (2)
)

// ErrMalformed is wrapped by every error about bytes that break the binary
// protocol: a bad error response, or a frame a gateway must refuse.
var ErrMalformed = errors.New("apns: malformed binary protocol data")

// FrameLen returns the encoded size of n's command-2 frame.
func FrameLen(n *Notification) int {
	l := FrameHeaderLen + 3*itemHeaderLen + len(n.Token) + len(n.Payload) + 4 + itemHeaderLen + 1
	if !n.Expiration.IsZero() {
		l += itemHeaderLen + 4
	}
	return l
}

// AppendFrame appends the command-2 frame that sends n with identifier id and
// returns the extended slice. Items are written in order: 1 token, 2 payload,
// 3 identifier, 4 expiration (only when n.Expiration is set; ExpireNow and
// earlier times encode 0), 5 priority (10 when n.Priority is 0). It does not
// validate n and does not allocate when dst has room for FrameLen(n) bytes.
func AppendFrame(dst []byte, id uint32, n *Notification) []byte {
	var exp uint32
	hasExp := !n.Expiration.IsZero()
	if hasExp {
		switch s := n.Expiration.Unix(); {
		case s <= 0:
			exp = 0
		case s >= math.MaxUint32:
			exp = math.MaxUint32
		default:
			exp = uint32(s)
		}
	}
	prio := n.Priority
	if prio == 0 {
		prio = PriorityImmediate
	}
	return appendFrame(dst, id, n.Token, n.Payload, exp, hasExp, uint8(prio))
}

func appendFrame(dst []byte, id uint32, tok, payload []byte, exp uint32, hasExp bool, prio uint8) []byte {
	body := 3*itemHeaderLen + len(tok) + len(payload) + 4 + itemHeaderLen + 1
	if hasExp {
		body += itemHeaderLen + 4
	}
	dst = append(dst, CommandNotification)
	dst = binary.BigEndian.AppendUint32(dst, uint32(body))
	dst = append(dst, itemToken)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(tok)))
	dst = append(dst, tok...)
	dst = append(dst, itemPayload)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(payload)))
	dst = append(dst, payload...)
	dst = append(dst, itemID, 0, 4)
	dst = binary.BigEndian.AppendUint32(dst, id)
	if hasExp {
		dst = append(dst, itemExpiration, 0, 4)
		dst = binary.BigEndian.AppendUint32(dst, exp)
	}
	return append(dst, itemPriority, 0, 1, prio)
}

// ErrorResponse is the 6-byte command-8 packet a binary gateway sends before
// it closes the connection.
type ErrorResponse struct {
	Status Status
	// ID names the bad notification, or for StatusShutdown the last one
	// the gateway processed.
	ID uint32
}

// AppendErrorResponse appends the wire form of r to dst.
func AppendErrorResponse(dst []byte, r ErrorResponse) []byte {
	dst = append(dst, CommandErrorResponse, byte(r.Status))
	return binary.BigEndian.AppendUint32(dst, r.ID)
}

// ReadErrorResponse reads one error response from r. It returns io.EOF if r
// ends before the first byte, io.ErrUnexpectedEOF if it ends inside the
// response, and an error wrapping ErrMalformed if the command is not 8.
// Status codes Apple never defined are returned as they are.
func ReadErrorResponse(r io.Reader) (ErrorResponse, error) {
	var b [ErrorResponseLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return ErrorResponse{}, err
	}
	if b[0] != CommandErrorResponse {
		return ErrorResponse{}, fmt.Errorf("%w: error response command %d, want %d", ErrMalformed, b[0], CommandErrorResponse)
	}
	return ErrorResponse{Status: Status(b[1]), ID: binary.BigEndian.Uint32(b[2:])}, nil
}

// Frame is a command-2 frame as a gateway decodes it.
type Frame struct {
	ID            uint32
	Token         []byte
	Payload       []byte
	Expiration    uint32 // UNIX seconds; valid when HasExpiration
	HasExpiration bool
	Priority      Priority // 0 when the frame had no priority item
}

// FrameError reports a frame that a strict gateway refuses, with the status
// code it answers. It wraps ErrMalformed.
type FrameError struct {
	Status Status
	ID     uint32 // the frame's identifier, 0 if it was not read
	Reason string
}

func (e *FrameError) Error() string {
	return fmt.Sprintf("apns: malformed frame %d (%s): %s", e.ID, e.Status, e.Reason)
}

// Unwrap returns ErrMalformed.
func (e *FrameError) Unwrap() error { return ErrMalformed }

// FrameReader decodes command-2 frames strictly, as Apple's gateway does:
// the command must be 2; items 1 (token, exactly 32 bytes), 2 (payload, 1 to
// MaxPayload bytes) and 3 (identifier, 4 bytes) must be present; items 4
// (expiration, 4 bytes) and 5 (priority, 1 byte: 5 or 10) are optional; no
// item may repeat or overrun the frame, and no other item is allowed. It
// reuses one buffer, so it does not allocate per frame. Give it a buffered
// reader.
type FrameReader struct {
	r          io.Reader
	hdr        [FrameHeaderLen]byte
	buf        []byte
	maxPayload int
}

// NewFrameReader returns a FrameReader on r that accepts payloads of up to
// maxPayload bytes (at most 65535; 0 means BinaryLimits.MaxPayload).
func NewFrameReader(r io.Reader, maxPayload int) *FrameReader {
	if maxPayload <= 0 {
		maxPayload = BinaryLimits.MaxPayload
	}
	maxPayload = min(maxPayload, math.MaxUint16)
	return &FrameReader{r: r, maxPayload: maxPayload}
}

// maxBody is the longest frame body a FrameReader accepts: every item once,
// with the longest token Apple allows and the largest payload.
func (fr *FrameReader) maxBody() int {
	return 5*itemHeaderLen + MaxTokenLen + fr.maxPayload + 4 + 4 + 1
}

// ReadFrame reads the next frame. The returned Frame's Token and Payload
// alias the reader's buffer and are valid until the next call. Errors: io.EOF
// when r ends between frames, io.ErrUnexpectedEOF inside one, a *FrameError
// for a frame the gateway must refuse (the caller answers it and closes:
// the stream cannot be resynchronised), or r's error.
func (fr *FrameReader) ReadFrame() (Frame, error) {
	hdr := fr.hdr[:] // in the struct: a local array would escape to the heap
	if _, err := io.ReadFull(fr.r, hdr); err != nil {
		return Frame{}, err
	}
	if hdr[0] != CommandNotification {
		return Frame{}, &FrameError{Status: StatusProtocolError, Reason: fmt.Sprintf("command %d, want %d", hdr[0], CommandNotification)}
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > uint32(fr.maxBody()) {
		return Frame{}, &FrameError{Status: StatusProtocolError, Reason: fmt.Sprintf("frame length %d, limit %d", n, fr.maxBody())}
	}
	if cap(fr.buf) < int(n) {
		fr.buf = make([]byte, fr.maxBody())
	}
	b := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	return parseFrameBody(b, fr.maxPayload)
}

// ReadFrame reads one frame from r with BinaryLimits.MaxPayload; see
// FrameReader.ReadFrame. It allocates the frame's buffer: for a stream of
// frames, use a FrameReader.
func ReadFrame(r io.Reader) (Frame, error) {
	return NewFrameReader(r, 0).ReadFrame()
}

// parseFrameBody decodes the items of a frame body b.
func parseFrameBody(b []byte, maxPayload int) (Frame, error) {
	var (
		f    Frame
		seen [itemPriority + 1]bool
		tokL = -1
		payL = -1
	)
	// Structure first: every item well-formed, so later checks can name
	// the frame's identifier.
	for i := 0; i < len(b); {
		if len(b)-i < itemHeaderLen {
			return Frame{}, &FrameError{Status: StatusProtocolError, Reason: "truncated item header"}
		}
		typ := b[i]
		l := int(binary.BigEndian.Uint16(b[i+1:]))
		i += itemHeaderLen
		if l > len(b)-i {
			return Frame{}, &FrameError{Status: StatusProtocolError, Reason: fmt.Sprintf("item %d overruns the frame", typ)}
		}
		if typ < itemToken || typ > itemPriority {
			return Frame{}, &FrameError{Status: StatusProtocolError, Reason: fmt.Sprintf("unknown item %d", typ)}
		}
		if seen[typ] {
			return Frame{}, &FrameError{Status: StatusProtocolError, Reason: fmt.Sprintf("item %d repeated", typ)}
		}
		seen[typ] = true
		v := b[i : i+l : i+l]
		i += l
		switch typ {
		case itemToken:
			f.Token, tokL = v, l
		case itemPayload:
			f.Payload, payL = v, l
		case itemID:
			if l != 4 {
				return Frame{}, &FrameError{Status: StatusProtocolError, Reason: fmt.Sprintf("identifier length %d, want 4", l)}
			}
			f.ID = binary.BigEndian.Uint32(v)
		case itemExpiration:
			if l != 4 {
				return Frame{}, &FrameError{Status: StatusProtocolError, Reason: fmt.Sprintf("expiration length %d, want 4", l)}
			}
			f.Expiration, f.HasExpiration = binary.BigEndian.Uint32(v), true
		case itemPriority:
			if l != 1 {
				return Frame{}, &FrameError{Status: StatusProtocolError, Reason: fmt.Sprintf("priority length %d, want 1", l)}
			}
			f.Priority = Priority(v[0])
		}
	}
	fail := func(st Status, format string, a ...any) (Frame, error) {
		return Frame{}, &FrameError{Status: st, ID: f.ID, Reason: fmt.Sprintf(format, a...)}
	}
	switch {
	case !seen[itemID]:
		return fail(StatusProtocolError, "no identifier")
	case tokL <= 0:
		return fail(StatusMissingDeviceToken, "no device token")
	case tokL != BinaryLimits.TokenLen:
		return fail(StatusInvalidTokenSize, "device token of %d bytes, want %d", tokL, BinaryLimits.TokenLen)
	case payL <= 0:
		return fail(StatusMissingPayload, "no payload")
	case payL > maxPayload:
		return fail(StatusInvalidPayloadSize, "payload of %d bytes, limit %d", payL, maxPayload)
	case seen[itemPriority] && f.Priority != PriorityImmediate && f.Priority != PriorityConserve:
		return fail(StatusProtocolError, "priority %d, want 10 or 5", f.Priority)
	}
	return f, nil
}
