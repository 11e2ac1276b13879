package apns

import (
	"bytes"
	"encoding/hex"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/require"
)

// seqToken is the token 00 01 02 … 1f.
func seqToken() Token {
	t := make(Token, 32)
	for i := range t {
		t[i] = byte(i)
	}
	return t
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.NewReplacer(" ", "", "|", "").Replace(s))
	require.NoError(t, err)
	return b
}

const (
	seqTokenHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	apsHex      = "7b22617073223a7b7d7d" // {"aps":{}}
)

func TestAppendFrame(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		id   uint32
		n    Notification
		want string
	}{
		{
			name: "defaults: no expiration, priority 10",
			id:   1,
			n:    Notification{Token: seqToken(), Payload: []byte(`{"aps":{}}`)},
			want: "02 0000003b | 01 0020 " + seqTokenHex + " | 02 000a " + apsHex +
				" | 03 0004 00000001 | 05 0001 0a",
		},
		{
			name: "expiration and priority 5",
			id:   0xdeadbeef,
			n: Notification{Token: seqToken(), Payload: []byte(`{"aps":{}}`),
				Expiration: time.Unix(1700000000, 0), Priority: PriorityConserve},
			want: "02 00000042 | 01 0020 " + seqTokenHex + " | 02 000a " + apsHex +
				" | 03 0004 deadbeef | 04 0004 6553f100 | 05 0001 05",
		},
		{
			name: "ExpireNow encodes 0",
			id:   7,
			n: Notification{Token: seqToken(), Payload: []byte(`{"aps":{}}`),
				Expiration: ExpireNow, Priority: PriorityImmediate},
			want: "02 00000042 | 01 0020 " + seqTokenHex + " | 02 000a " + apsHex +
				" | 03 0004 00000007 | 04 0004 00000000 | 05 0001 0a",
		},
		{
			name: "expiration before 1970 encodes 0",
			id:   8,
			n: Notification{Token: seqToken(), Payload: []byte(`{"aps":{}}`),
				Expiration: time.Unix(-5, 0)},
			want: "02 00000042 | 01 0020 " + seqTokenHex + " | 02 000a " + apsHex +
				" | 03 0004 00000008 | 04 0004 00000000 | 05 0001 0a",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want := unhex(t, tt.want)
			got := AppendFrame(nil, tt.id, &tt.n)
			require.Equal(t, want, got)
			require.Len(t, got, FrameLen(&tt.n))
			// Appends, leaving dst's bytes alone.
			require.Equal(t, append([]byte("xy"), want...), AppendFrame([]byte("xy"), tt.id, &tt.n))
			// And decodes back.
			f, err := ReadFrame(bytes.NewReader(got))
			require.NoError(t, err)
			require.Equal(t, tt.id, f.ID)
			require.Equal(t, []byte(tt.n.Token), f.Token)
			require.Equal(t, tt.n.Payload, f.Payload)
			require.Equal(t, !tt.n.Expiration.IsZero(), f.HasExpiration)
		})
	}
}

func TestAppendFrameAllocs(t *testing.T) {
	n := &Notification{Token: seqToken(), Payload: []byte(`{"aps":{"alert":"hi"}}`), Expiration: time.Unix(1e9, 0)}
	buf := make([]byte, 0, 512)
	allocs := testing.AllocsPerRun(100, func() { buf = AppendFrame(buf[:0], 1, n) })
	require.Zero(t, allocs)
}

func TestReadErrorResponse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      []byte
		want    ErrorResponse
		wantErr error
	}{
		{"invalid token", []byte{8, 8, 0, 0, 0, 42}, ErrorResponse{StatusInvalidToken, 42}, nil},
		{"shutdown", []byte{8, 10, 0xde, 0xad, 0xbe, 0xef}, ErrorResponse{StatusShutdown, 0xdeadbeef}, nil},
		{"processing error", []byte{8, 1, 0, 0, 1, 0}, ErrorResponse{StatusProcessingError, 256}, nil},
		{"protocol error", []byte{8, 128, 0, 0, 0, 0}, ErrorResponse{StatusProtocolError, 0}, nil},
		{"unknown", []byte{8, 255, 0, 0, 0, 9}, ErrorResponse{StatusUnknown, 9}, nil},
		{"undefined code kept", []byte{8, 9, 0, 0, 0, 1}, ErrorResponse{Status(9), 1}, nil},
		{"trailing bytes ignored", []byte{8, 7, 0, 0, 0, 3, 99}, ErrorResponse{StatusInvalidPayloadSize, 3}, nil},
		{"empty", nil, ErrorResponse{}, io.EOF},
		{"short", []byte{8, 8, 0}, ErrorResponse{}, io.ErrUnexpectedEOF},
		{"bad command", []byte{9, 8, 0, 0, 0, 1}, ErrorResponse{}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ReadErrorResponse(iotest.OneByteReader(bytes.NewReader(tt.in)))
			require.ErrorIs(t, err, tt.wantErr)
			require.Equal(t, tt.want, got)
			if tt.wantErr == nil {
				require.Equal(t, tt.in[:ErrorResponseLen], AppendErrorResponse(nil, got))
			}
		})
	}
}

func TestStatusStringAndTemporary(t *testing.T) {
	t.Parallel()
	names := map[Status]string{0: "NoErrors", 1: "ProcessingError", 2: "MissingDeviceToken",
		3: "MissingTopic", 4: "MissingPayload", 5: "InvalidTokenSize", 6: "InvalidTopicSize",
		7: "InvalidPayloadSize", 8: "InvalidToken", 10: "Shutdown", 128: "ProtocolError",
		255: "Unknown", 9: "Status(9)"}
	for st, name := range names {
		require.Equal(t, name, st.String())
		require.Equal(t, st == 1 || st == 10 || st == 255, st.Temporary(), name)
	}
}

// frameBytes builds a frame from raw items, for malformed-frame vectors.
func frameBytes(cmd byte, items ...[]byte) []byte {
	body := bytes.Join(items, nil)
	b := []byte{cmd, 0, 0, 0, 0}
	b[1], b[2], b[3], b[4] = byte(len(body)>>24), byte(len(body)>>16), byte(len(body)>>8), byte(len(body))
	return append(b, body...)
}

func rawItem(typ byte, v []byte) []byte {
	return append([]byte{typ, byte(len(v) >> 8), byte(len(v))}, v...)
}

func TestReadFrameStrict(t *testing.T) {
	t.Parallel()
	tok := rawItem(1, seqToken())
	pay := rawItem(2, []byte(`{"aps":{}}`))
	id := rawItem(3, []byte{0, 0, 0, 9})
	tests := []struct {
		name       string
		in         []byte
		wantStatus Status // 0: no FrameError
		wantID     uint32
		wantErr    error
	}{
		{"minimal", frameBytes(2, tok, pay, id), 0, 9, nil},
		{"items in any order", frameBytes(2, id, rawItem(5, []byte{5}), pay, tok), 0, 9, nil},
		{"empty input", nil, 0, 0, io.EOF},
		{"short header", []byte{2, 0, 0}, 0, 0, io.ErrUnexpectedEOF},
		{"short body", frameBytes(2, tok, pay, id)[:40], 0, 0, io.ErrUnexpectedEOF},
		{"command 1", frameBytes(1, tok, pay, id), StatusProtocolError, 0, nil},
		{"huge length", []byte{2, 0xff, 0xff, 0xff, 0xff}, StatusProtocolError, 0, nil},
		{"no token", frameBytes(2, pay, id), StatusMissingDeviceToken, 9, nil},
		{"empty token", frameBytes(2, rawItem(1, nil), pay, id), StatusMissingDeviceToken, 9, nil},
		{"short token", frameBytes(2, rawItem(1, seqToken()[:31]), pay, id), StatusInvalidTokenSize, 9, nil},
		{"no payload", frameBytes(2, tok, id), StatusMissingPayload, 9, nil},
		{"payload too large", frameBytes(2, tok, rawItem(2, bytes.Repeat([]byte{'x'}, 2049)), id), StatusInvalidPayloadSize, 9, nil},
		{"no identifier", frameBytes(2, tok, pay), StatusProtocolError, 0, nil},
		{"identifier of 3 bytes", frameBytes(2, tok, pay, rawItem(3, []byte{0, 0, 9})), StatusProtocolError, 0, nil},
		{"expiration of 2 bytes", frameBytes(2, tok, pay, id, rawItem(4, []byte{0, 1})), StatusProtocolError, 0, nil},
		{"priority 7", frameBytes(2, tok, pay, id, rawItem(5, []byte{7})), StatusProtocolError, 9, nil},
		{"priority of 2 bytes", frameBytes(2, tok, pay, id, rawItem(5, []byte{0, 10})), StatusProtocolError, 0, nil},
		{"unknown item", frameBytes(2, tok, pay, id, rawItem(6, []byte{1})), StatusProtocolError, 0, nil},
		{"repeated item", frameBytes(2, tok, pay, id, pay), StatusProtocolError, 0, nil},
		{"item overruns frame", frameBytes(2, tok, pay, id, []byte{5, 0, 9, 10}), StatusProtocolError, 0, nil},
		{"truncated item header", frameBytes(2, tok, pay, id, []byte{5, 0}), StatusProtocolError, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, err := ReadFrame(iotest.OneByteReader(bytes.NewReader(tt.in)))
			if tt.wantStatus != 0 {
				var fe *FrameError
				require.ErrorAs(t, err, &fe)
				require.ErrorIs(t, err, ErrMalformed)
				require.Equal(t, tt.wantStatus, fe.Status, fe.Error())
				require.Equal(t, tt.wantID, fe.ID)
				return
			}
			require.ErrorIs(t, err, tt.wantErr)
			if tt.wantErr == nil {
				require.Equal(t, tt.wantID, f.ID)
			}
		})
	}
}

func TestFrameReaderStream(t *testing.T) {
	t.Parallel()
	var stream []byte
	n := &Notification{Token: seqToken(), Payload: []byte(`{"aps":{"badge":1}}`)}
	for id := uint32(1); id <= 100; id++ {
		stream = AppendFrame(stream, id, n)
	}
	fr := NewFrameReader(bytes.NewReader(stream), 0)
	for id := uint32(1); id <= 100; id++ {
		f, err := fr.ReadFrame()
		require.NoError(t, err)
		require.Equal(t, id, f.ID)
		require.Equal(t, PriorityImmediate, f.Priority)
	}
	_, err := fr.ReadFrame()
	require.ErrorIs(t, err, io.EOF)

	// A larger payload limit for compatible gateways.
	big := &Notification{Token: seqToken(), Payload: bytes.Repeat([]byte{'x'}, 4000)}
	_, err = NewFrameReader(bytes.NewReader(AppendFrame(nil, 1, big)), 0).ReadFrame()
	require.ErrorIs(t, err, ErrMalformed)
	f, err := NewFrameReader(bytes.NewReader(AppendFrame(nil, 1, big)), 4096).ReadFrame()
	require.NoError(t, err)
	require.Len(t, f.Payload, 4000)
}

func FuzzReadErrorResponse(f *testing.F) {
	f.Add([]byte{8, 8, 0, 0, 0, 42})
	f.Add([]byte{8, 10, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{8, 8, 0})
	f.Add([]byte{9, 8, 0, 0, 0, 1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ReadErrorResponse(iotest.OneByteReader(bytes.NewReader(b)))
		if err != nil {
			require.Equal(t, ErrorResponse{}, r)
			return // errors are fine; panics and hangs are not
		}
		require.Equal(t, b[:ErrorResponseLen], AppendErrorResponse(nil, r))
	})
}

func FuzzReadFrame(f *testing.F) {
	tok := rawItem(1, seqToken())
	pay := rawItem(2, []byte(`{"aps":{}}`))
	id := rawItem(3, []byte{0, 0, 0, 9})
	f.Add(AppendFrame(nil, 1, &Notification{Token: seqToken(), Payload: []byte(`{"aps":{}}`)}))
	f.Add(AppendFrame(nil, 2, &Notification{Token: seqToken(), Payload: []byte(`{"aps":{}}`), Expiration: ExpireNow, Priority: 5}))
	f.Add(frameBytes(2, id, pay, tok))
	f.Add(frameBytes(2, tok, pay))
	f.Add(frameBytes(2, tok, pay, id, pay))
	f.Add(frameBytes(2, tok, pay, id, []byte{5, 0, 9, 10}))
	f.Add([]byte{2, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{2, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := ReadFrame(iotest.OneByteReader(bytes.NewReader(b)))
		if err != nil {
			return // errors are fine; panics and hangs are not
		}
		// A frame we accept re-encodes (items in canonical order) to a
		// frame of the same length that decodes to the same values.
		items := [][]byte{rawItem(1, fr.Token), rawItem(2, fr.Payload), rawItem(3, be32(fr.ID))}
		if fr.HasExpiration {
			items = append(items, rawItem(4, be32(fr.Expiration)))
		}
		if fr.Priority != 0 {
			items = append(items, rawItem(5, []byte{byte(fr.Priority)}))
		}
		enc := frameBytes(2, items...)
		require.Len(t, enc, FrameHeaderLen+int(uint32(b[1])<<24|uint32(b[2])<<16|uint32(b[3])<<8|uint32(b[4])))
		again, err := ReadFrame(bytes.NewReader(enc))
		require.NoError(t, err)
		require.Equal(t, fr, again)
	})
}

func be32(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }
