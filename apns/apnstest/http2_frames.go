package apnstest

import (
	"encoding/binary"
	"fmt"
	"io"
)

// HTTP/2 framing of the HTTP2Server's connections (RFC 9113): frame
// reading and writing, settings, resets, GOAWAY.

// h2maxBody is the largest body the server keeps: one byte over the VoIP
// limit is enough to tell PayloadTooLarge.
const h2maxBody = 5121

const (
	h2connWindow   = 16 << 20
	h2maxFrame     = 16384    // SETTINGS_MAX_FRAME_SIZE (the default)
	h2maxHeaderBuf = 64 << 10 // largest header block accepted
)

// HTTP/2 frame types, flags, settings and error codes (RFC 9113).
const (
	h2fData         = 0x0
	h2fHeaders      = 0x1
	h2fPriority     = 0x2
	h2fRSTStream    = 0x3
	h2fSettings     = 0x4
	h2fPushPromise  = 0x5
	h2fPing         = 0x6
	h2fGoAway       = 0x7
	h2fWindowUpdate = 0x8
	h2fContinuation = 0x9

	h2flagEndStream  = 0x1
	h2flagAck        = 0x1
	h2flagEndHeaders = 0x4
	h2flagPadded     = 0x8
	h2flagPriority   = 0x20

	h2setHeaderTableSize      = 0x1
	h2setMaxConcurrentStreams = 0x3
	h2setInitialWindowSize    = 0x4
	h2setMaxFrameSize         = 0x5
	h2setMaxHeaderListSize    = 0x6

	h2errNo            = 0x0
	h2errProtocol      = 0x1
	h2errFlowControl   = 0x3
	h2errStreamClosed  = 0x5
	h2errFrameSize     = 0x6
	h2errRefusedStream = 0x7
	h2errCompression   = 0x9
)

const h2ClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// h2connErr is a connection error: GOAWAY with the code, then close.
type h2connErr uint32

func (e h2connErr) Error() string { return fmt.Sprintf("http2 connection error %d", uint32(e)) }

// readFrame reads one frame; p is valid until the next call.
func (c *h2conn) readFrame() (typ, flags byte, sid uint32, p []byte, err error) {
	h := c.rbuf[:9]
	if _, err = io.ReadFull(c.br, h); err != nil {
		return
	}
	n := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	typ, flags, sid = h[3], h[4], binary.BigEndian.Uint32(h[5:])&0x7fffffff
	if n > h2maxFrame {
		return 0, 0, 0, nil, h2connErr(h2errFrameSize)
	}
	p = c.rbuf[9 : 9+n]
	_, err = io.ReadFull(c.br, p)
	return
}

// Frame writers: frames go to the buffered writer; a failed write shows at
// flush, which then closes the connection. The caller holds c.mu.

func (c *h2conn) writeFrame(typ, flags byte, sid uint32, p []byte) {
	if c.writeClosed {
		return
	}
	h := c.fhdr[:]
	h[0], h[1], h[2] = byte(len(p)>>16), byte(len(p)>>8), byte(len(p))
	h[3], h[4] = typ, flags
	binary.BigEndian.PutUint32(h[5:], sid)
	_, _ = c.bw.Write(h)
	_, _ = c.bw.Write(p)
}

// writeSettings writes SETTINGS with id, value pairs.
func (c *h2conn) writeSettings(kv ...uint32) {
	p := c.wbuf[:0]
	for i := 0; i+1 < len(kv); i += 2 {
		p = binary.BigEndian.AppendUint16(p, uint16(kv[i]))
		p = binary.BigEndian.AppendUint32(p, kv[i+1])
	}
	c.writeFrame(h2fSettings, 0, 0, p)
}

func (c *h2conn) writeWindowUpdate(sid, incr uint32) {
	c.writeFrame(h2fWindowUpdate, 0, sid, binary.BigEndian.AppendUint32(c.wbuf[:0], incr))
}

func (c *h2conn) writeRST(sid, code uint32) {
	c.writeFrame(h2fRSTStream, 0, sid, binary.BigEndian.AppendUint32(c.wbuf[:0], code))
}

func (c *h2conn) writeGoAway(last, code uint32, debug string) {
	p := binary.BigEndian.AppendUint32(c.wbuf[:0], last)
	p = binary.BigEndian.AppendUint32(p, code)
	c.writeFrame(h2fGoAway, 0, 0, append(p, debug...))
}

// writeErr closes the connection after a failed write; serve then ends.
func (c *h2conn) writeErr(err error) {
	if err != nil && !c.writeClosed {
		c.writeClosed = true
		c.raw.Close()
	}
}

func (c *h2conn) flush() {
	if c.bw.Buffered() > 0 && !c.writeClosed {
		c.writeErr(c.bw.Flush())
	}
}

func (c *h2conn) connError(code uint32) {
	c.writeGoAway(c.lastStream, code, "")
	c.flush()
}

func (c *h2conn) streamError(id, code uint32) {
	if st := c.streams[id]; st != nil {
		c.closeStream(st)
	}
	c.writeRST(id, code)
}
