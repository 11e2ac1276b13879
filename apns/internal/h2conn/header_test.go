package h2conn

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2/hpack"
)

// TestUniqueFieldsDecode: fields written by Unique, raw and never indexed,
// decode to what was written, between fields the encoder indexes, and
// leave the decoder's table as the encoder's: later blocks that index the
// shared fields still decode right. Long values take multi-byte lengths.
func TestUniqueFieldsDecode(t *testing.T) {
	var out bytes.Buffer
	enc := hpack.NewEncoder(&out)
	h := &HeaderEncoder{enc: enc, out: &out}
	dec := hpack.NewDecoder(4096, nil)
	long := strings.Repeat("x", 127) + strings.Repeat("y", 300)
	for i := range 3 {
		out.Reset()
		h.Unique("apns-first", "first in the block") // through the encoder
		h.Field(":method", "POST")
		h.Unique(":path", "/3/device/0123")
		h.Field("apns-topic", "com.example.app")
		h.Unique("apns-id", "e77a3d12-bc9f-f410-a127-43f212597a9c")
		h.Unique("apns-collapse-id", long[:126+i]) // 126, 127, 128 bytes
		h.Unique("x-long", long)
		got, err := dec.DecodeFull(out.Bytes())
		require.NoError(t, err, "block %d", i)
		want := []hpack.HeaderField{
			{Name: "apns-first", Value: "first in the block", Sensitive: true},
			{Name: ":method", Value: "POST"},
			{Name: ":path", Value: "/3/device/0123", Sensitive: true},
			{Name: "apns-topic", Value: "com.example.app"},
			{Name: "apns-id", Value: "e77a3d12-bc9f-f410-a127-43f212597a9c", Sensitive: true},
			{Name: "apns-collapse-id", Value: long[:126+i], Sensitive: true},
			{Name: "x-long", Value: long, Sensitive: true},
		}
		require.Equal(t, want, got, "block %d", i)
	}
}
