package feedback

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
)

func encodeTuple(t time.Time, tok []byte) []byte {
	b := make([]byte, headerLen, headerLen+len(tok))
	binary.BigEndian.PutUint32(b, uint32(t.Unix()))
	binary.BigEndian.PutUint16(b[4:], uint16(len(tok)))
	return append(b, tok...)
}

func tok(b byte, n int) apns.Token { return apns.Token(bytes.Repeat([]byte{b}, n)) }

var errRead = errors.New("read failed")

func TestReadTuple(t *testing.T) {
	t1 := time.Unix(1_700_000_000, 0).UTC()
	good := encodeTuple(t1, tok(0xab, 32))
	tests := []struct {
		name     string
		in       io.Reader
		tokenLen int
		want     BadToken
		wantErr  []error // all must match
	}{
		{"tuple", bytes.NewReader(good), 32, BadToken{tok(0xab, 32), t1}, nil},
		{"tuple, one byte reads", iotest.OneByteReader(bytes.NewReader(good)), 32, BadToken{tok(0xab, 32), t1}, nil},
		{"max timestamp", bytes.NewReader(encodeTuple(time.Unix(1<<32-1, 0), tok(1, 32))), 32,
			BadToken{tok(1, 32), time.Unix(1<<32-1, 0).UTC()}, nil},
		{"any length", bytes.NewReader(encodeTuple(t1, tok(2, 8))), 0, BadToken{tok(2, 8), t1}, nil},
		{"any length, 100", bytes.NewReader(encodeTuple(t1, tok(3, 100))), 0, BadToken{tok(3, 100), t1}, nil},
		{"clean end", bytes.NewReader(nil), 32, BadToken{}, []error{io.EOF}},
		{"short header", bytes.NewReader(good[:5]), 32, BadToken{}, []error{ErrMalformed, io.ErrUnexpectedEOF}},
		{"one byte", bytes.NewReader(good[:1]), 32, BadToken{}, []error{ErrMalformed, io.ErrUnexpectedEOF}},
		{"short token", bytes.NewReader(good[:37]), 32, BadToken{}, []error{ErrMalformed, io.ErrUnexpectedEOF}},
		{"header only", bytes.NewReader(good[:6]), 32, BadToken{}, []error{ErrMalformed, io.ErrUnexpectedEOF}},
		{"wrong token length", bytes.NewReader(encodeTuple(t1, tok(1, 31))), 32, BadToken{}, []error{ErrMalformed}},
		{"zero token length", bytes.NewReader([]byte{0, 0, 0, 1, 0, 0}), 0, BadToken{}, []error{ErrMalformed}},
		{"token too long", bytes.NewReader(encodeTuple(t1, tok(1, 101))), 0, BadToken{}, []error{ErrMalformed}},
		{"garbage", bytes.NewReader([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")), 32, BadToken{}, []error{ErrMalformed}},
		{"read error", iotest.ErrReader(errRead), 32, BadToken{}, []error{errRead}},
		{"read error in token", io.MultiReader(bytes.NewReader(good[:10]), iotest.ErrReader(errRead)), 32,
			BadToken{}, []error{errRead}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := readTuple(tt.in, tt.tokenLen)
			require.Equal(t, tt.want, got)
			if len(tt.wantErr) == 0 {
				require.NoError(t, err)
				return
			}
			for _, want := range tt.wantErr {
				require.ErrorIs(t, err, want)
			}
			if !errors.Is(err, ErrMalformed) {
				require.NotErrorIs(t, err, io.ErrUnexpectedEOF)
			}
		})
	}
}

func TestReadAll(t *testing.T) {
	t1 := time.Unix(1_700_000_000, 0).UTC()
	var three []byte
	var want3 []BadToken
	for i := range 3 {
		tm := t1.Add(time.Duration(i) * time.Second)
		three = append(three, encodeTuple(tm, tok(byte(i), 32))...)
		want3 = append(want3, BadToken{tok(byte(i), 32), tm})
	}
	two := three[:2*38]
	tests := []struct {
		name    string
		in      []byte
		max     int
		want    []BadToken
		wantErr []error
	}{
		{"empty", nil, 0, nil, nil},
		{"three", three, 0, want3, nil},
		{"three, max 3", three, 3, want3, nil},
		{"three, max 2", three, 2, want3[:2], []error{ErrTooMany}},
		{"garbage after two", append(bytes.Clone(two), "garbage"...), 0, want3[:2], []error{ErrMalformed}},
		{"wrong length after two", append(bytes.Clone(two), encodeTuple(t1, tok(9, 20))...), 0, want3[:2], []error{ErrMalformed}},
		{"closed mid-tuple after two", three[:2*38+20], 0, want3[:2], []error{ErrMalformed, io.ErrUnexpectedEOF}},
		{"closed mid-header after two", three[:2*38+3], 0, want3[:2], []error{ErrMalformed, io.ErrUnexpectedEOF}},
		{"closed mid-first", three[:1], 0, nil, []error{ErrMalformed, io.ErrUnexpectedEOF}},
	}
	for _, tt := range tests {
		for _, rd := range []struct {
			name string
			wrap func(io.Reader) io.Reader
		}{
			{"whole", func(r io.Reader) io.Reader { return r }},
			{"one byte", iotest.OneByteReader},
			{"half", iotest.HalfReader},
		} {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				t.Parallel()
				got, err := readAll(rd.wrap(bytes.NewReader(tt.in)), 32, tt.max)
				require.Equal(t, tt.want, got)
				if len(tt.wantErr) == 0 {
					require.NoError(t, err)
					return
				}
				for _, want := range tt.wantErr {
					require.ErrorIs(t, err, want)
				}
			})
		}
	}
}

// FuzzReadTuple checks that any input decodes without panics, and that what
// decodes re-encodes to the input's prefix. Seeds run as a plain test.
func FuzzReadTuple(f *testing.F) {
	t1 := time.Unix(1e9, 0)
	f.Add(encodeTuple(t1, tok(0xab, 32)))
	f.Add(append(encodeTuple(t1, tok(1, 32)), encodeTuple(t1, tok(2, 32))...))
	f.Add(encodeTuple(t1, tok(3, 8)))
	f.Add(encodeTuple(t1, tok(4, 100)))
	f.Add(encodeTuple(t1, tok(5, 101)))
	f.Add([]byte{0, 0, 0, 1, 0, 31}) // wrong token length
	f.Add([]byte{0, 0, 0, 1, 0, 0})  // zero token length
	f.Add([]byte{0, 0, 0, 1, 0})     // short header
	f.Add(encodeTuple(t1, tok(6, 32))[:30])
	f.Add([]byte{})
	f.Add([]byte("garbage garbage garbage garbage garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, tokenLen := range []int{32, 0} {
			tup, err := readTuple(iotest.OneByteReader(bytes.NewReader(b)), tokenLen)
			if err != nil {
				if err != io.EOF {
					require.ErrorIs(t, err, ErrMalformed)
				}
			} else {
				n := headerLen + len(tup.Token)
				require.Equal(t, b[:n], encodeTuple(tup.Time, tup.Token))
			}

		}

		// With any length, readAll returns a prefix of whole tuples,
		// whatever follows.
		all, err := readAll(bytes.NewReader(b), 0, 0)
		re := []byte{}
		for _, tup := range all {
			re = append(re, encodeTuple(tup.Time, tup.Token)...)
		}
		require.Equal(t, b[:len(re)], re)
		if err == nil {
			require.Len(t, b, len(re))
		} else {
			require.ErrorIs(t, err, ErrMalformed)
		}
		// With a length, the same tuples but for those of other lengths,
		// which it skips, reading on.
		var want []BadToken
		for _, tup := range all {
			if len(tup.Token) == 32 {
				want = append(want, tup)
			}
		}
		got, err32 := readAll(bytes.NewReader(b), 32, 0)
		require.Equal(t, want, got)
		if len(want) < len(all) {
			require.ErrorIs(t, err32, ErrMalformed)
		}
	})
}

// TestReadAllSkipsOtherLengths: a tuple whose token is of another length
// than asked is read whole and skipped: the tuples after it are kept, and
// the error counts it.
func TestReadAllSkipsOtherLengths(t *testing.T) {
	t.Parallel()
	t1 := time.Unix(1_700_000_000, 0).UTC()
	b := slices.Concat(encodeTuple(t1, tok(1, 32)), encodeTuple(t1, tok(2, 64)), encodeTuple(t1, tok(3, 32)))
	got, err := readAll(bytes.NewReader(b), 32, 0)
	require.Equal(t, []BadToken{{tok(1, 32), t1}, {tok(3, 32), t1}}, got)
	require.ErrorIs(t, err, ErrMalformed)
	require.ErrorContains(t, err, "1 tuples skipped, the first: feedback: malformed response: a token of another length: token length 64, want 32 (tuple 2)")
}

func TestReadAllErrorAtLimit(t *testing.T) {
	t.Parallel()
	in := io.MultiReader(bytes.NewReader(encodeTuple(time.Unix(1, 0), tok(1, 32))), iotest.ErrReader(errRead))
	got, err := readAll(in, 32, 1)
	require.Len(t, got, 1)
	require.ErrorIs(t, err, errRead)
	require.NotErrorIs(t, err, ErrTooMany)
}
