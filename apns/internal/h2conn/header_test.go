package h2conn

import (
	"bytes"
	"io"
	"math/rand/v2"
	"strconv"
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

// TestFieldMemoDecodes: blocks written with the memo of indexed fields
// decode to what was written, through everything that changes the
// encoder's table: new values evicting old ones from a small table, a new
// table size limit between blocks, a shared value that changes (a new
// provider token), fields in another order, Unique fields between them.
// It fails if a memo entry outlives the index it holds.
func TestFieldMemoDecodes(t *testing.T) {
	var out bytes.Buffer
	encoded := &countingWriter{w: &out} // what the encoder writes
	enc := hpack.NewEncoder(encoded)
	h := &HeaderEncoder{enc: enc, out: &out}
	dec := hpack.NewDecoder(4096, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	topics := []string{"com.example.a", "com.example.b", "com.example.c"}
	memoHits := 0
	for i := range 3000 {
		if i%500 == 250 { // the peer's SETTINGS: a smaller table, then the full one
			size := uint32(64 + rng.IntN(4096))
			enc.SetMaxDynamicTableSizeLimit(size)
			h.tableChanged()
		}
		bearer := "bearer " + strconv.Itoa(i/700) + strings.Repeat("t", 150)
		fields := []hpack.HeaderField{
			{Name: ":method", Value: "POST"},
			{Name: ":scheme", Value: "https"},
			{Name: ":authority", Value: "api.push.apple.com"},
			{Name: "authorization", Value: bearer},
			{Name: "apns-topic", Value: topics[rng.IntN(len(topics))]},
			{Name: "apns-push-type", Value: "alert"},
		}
		if rng.IntN(10) == 0 { // now and then a new value, evicting others
			fields = append(fields, hpack.HeaderField{Name: "x-new", Value: strconv.Itoa(i) + strings.Repeat("v", rng.IntN(300))})
		}
		if rng.IntN(20) == 0 { // now and then another order
			rng.Shuffle(len(fields)-1, func(a, b int) { fields[a+1], fields[b+1] = fields[b+1], fields[a+1] })
		}
		out.Reset()
		h.begin()
		var want []hpack.HeaderField
		for k, f := range fields {
			if k == 2 {
				h.Unique(":path", "/3/device/"+strconv.Itoa(i))
				want = append(want, hpack.HeaderField{Name: ":path", Value: "/3/device/" + strconv.Itoa(i), Sensitive: true})
			}
			before := encoded.n
			h.Field(f.Name, f.Value)
			if encoded.n == before {
				memoHits++
			}
			want = append(want, f)
		}
		got, err := dec.DecodeFull(out.Bytes())
		require.NoError(t, err, "block %d", i)
		require.Equal(t, want, got, "block %d", i)
	}
	require.Greater(t, memoHits, 3000, "the memo is used")
}

type countingWriter struct {
	w io.Writer
	n int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n++
	return c.w.Write(p)
}
