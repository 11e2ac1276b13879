package h2conn

import (
	"bytes"
	"unsafe"

	"golang.org/x/net/http2/hpack"
)

// Request header blocks: HeaderEncoder writes a request's fields for the
// owner, through x/net's hpack encoder or, for values seen once, as raw
// literals.

// HeaderEncoder writes one request's header fields.
type HeaderEncoder struct {
	enc *hpack.Encoder
	out *bytes.Buffer // where enc writes the block
	// Scratch is a buffer the owner may reuse for values it builds per
	// request (one connection's, never shared).
	Scratch []byte

	// The shared fields of the last blocks, by their place among a block's
	// Field calls, with the bytes the encoder wrote for them when it found
	// them in its table (an index). The index holds while the table does
	// not change: epoch counts the writes that may have changed it.
	memo  [8]memoField
	nth   int // Field calls so far in this block
	epoch uint64
}

type memoField struct {
	name, value string
	epoch       uint64
	n           int // len(enc) in use; 0: none
	enc         [memoLen]byte
}

// memoLen bounds an index's representation (7-bit prefix, 3 more bytes:
// indexes up to 2 097 278, past any table's).
const memoLen = 4

// begin starts a block.
func (h *HeaderEncoder) begin() { h.nth = 0 }

// tableChanged forgets the memo: the encoder's table may have changed
// without a field written (a new size limit).
func (h *HeaderEncoder) tableChanged() { h.epoch++ }

// Field writes a field the peer may index: values shared by many requests.
// A field found in the table at the same place in the last block, with the
// table unchanged since, is written from the memo without the encoder's
// table search.
func (h *HeaderEncoder) Field(name, value string) {
	var m *memoField
	if h.nth < len(h.memo) {
		m = &h.memo[h.nth]
	}
	h.nth++
	if m != nil && m.n > 0 && m.epoch == h.epoch && h.out.Len() > 0 && m.name == name && m.value == value {
		h.out.Write(m.enc[:m.n])
		return
	}
	start := h.out.Len()
	_ = h.enc.WriteField(hpack.HeaderField{Name: name, Value: value})
	b := h.out.Bytes()[start:]
	if len(b) == 0 || b[0]&0x80 == 0 || len(b) > memoLen {
		// A literal: it may have been added to the table, evicting others
		// (or a table size update came first).
		h.epoch++
		if m != nil {
			m.n = 0
		}
		return
	}
	if m != nil { // an indexed field, the whole of b: the table is as it was
		m.name, m.value, m.epoch, m.n = name, value, h.epoch, copy(m.enc[:], b)
	}
}

// Unique writes a never-indexed field: values unique to one request, which
// would only evict shared ones from the table. It writes the literal
// itself, without Huffman coding (RFC 7541 §6.2.3; a value seen once is
// not worth the table search and the coding): it leaves the dynamic table
// alone, so the encoder's view of it stays right. As the block's first
// field it goes through the encoder, which may owe a table size update
// first.
func (h *HeaderEncoder) Unique(name, value string) {
	if h.out.Len() == 0 {
		_ = h.enc.WriteField(hpack.HeaderField{Name: name, Value: value, Sensitive: true})
		h.epoch++ // after a table size update, maybe
		return
	}
	b := h.out.AvailableBuffer()
	if name == ":path" {
		b = append(b, 0x10|4) // never indexed, name of static entry 4
	} else {
		b = appendLiteral(append(b, 0x10), name) // never indexed, new name
	}
	h.out.Write(appendLiteral(b, value))
}

// UniqueBytes is Unique for a value in a buffer (Scratch); it is neither
// kept nor copied.
func (h *HeaderEncoder) UniqueBytes(name string, value []byte) {
	h.Unique(name, unsafe.String(unsafe.SliceData(value), len(value)))
}

// appendLiteral appends s as an hpack string literal without Huffman
// coding: its length (an integer with a 7-bit prefix) and its bytes.
func appendLiteral(b []byte, s string) []byte {
	n := uint64(len(s))
	if n < 127 {
		b = append(b, byte(n))
	} else {
		b = append(b, 127)
		for n -= 127; n >= 128; n >>= 7 {
			b = append(b, byte(n)|0x80)
		}
		b = append(b, byte(n))
	}
	return append(b, s...)
}

// validField reports whether a response's regular field is allowed by RFC
// 9113: a name of no upper-case letters, controls, spaces or bytes past
// 0x7e (§8.2.1); a value without NUL, CR or LF, and no space or tab at
// either end; and no connection-specific field (§8.2.2), te but
// "trailers".
func validField(f hpack.HeaderField) bool {
	if f.Name == "" {
		return false
	}
	for i := 0; i < len(f.Name); i++ {
		if b := f.Name[i]; b <= ' ' || b >= 0x7f || 'A' <= b && b <= 'Z' {
			return false
		}
	}
	v := f.Value
	if v != "" && (v[0] == ' ' || v[0] == '\t' || v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		return false
	}
	for i := 0; i < len(v); i++ {
		if b := v[i]; b == 0 || b == '\r' || b == '\n' {
			return false
		}
	}
	switch f.Name {
	case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
		return false
	case "te":
		return v == "trailers"
	}
	return true
}
