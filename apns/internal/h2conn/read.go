package h2conn

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

func (c *Conn[R]) readLoop() {
	defer close(c.readerDone)
	err := c.read()
	c.mu.Lock()
	c.dead = err
	c.mu.Unlock()
	c.readErr = err
}

// frameErr turns the framer's errors into this package's: a
// ConnectionError becomes a local *ConnError (answered with GOAWAY).
func (c *Conn[R]) frameErr(err error) error {
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &ce):
		if d := c.fr.ErrorDetail(); d != nil {
			err = d
		}
		return connErr(http2.ErrCode(ce), "%v", err)
	case errors.Is(err, http2.ErrFrameTooLarge):
		return connErr(http2.ErrCodeFrameSize, "frame larger than %d bytes", minFrameSize)
	}
	return err
}

func (c *Conn[R]) read() error {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				// The framer read the frame whole: fail its stream only.
				c.resetStream(se.StreamID, se.Code, ErrMalformed)
				continue
			}
			return c.frameErr(err)
		}
		c.lastRead.Store(time.Now().UnixNano())
		switch f := f.(type) {
		case *http2.HeadersFrame:
			c.hdr = headerBlock{id: f.StreamID, end: f.StreamEnded(), clen: -1}
			c.hdec.SetEmitEnabled(true)
			err = c.onHeaderBlock(f.HeaderBlockFragment(), f.HeadersEnded())
		case *http2.ContinuationFrame:
			err = c.onHeaderBlock(f.HeaderBlockFragment(), f.HeadersEnded())
		case *http2.DataFrame:
			err = c.onData(f)
		case *http2.RSTStreamFrame:
			err = c.onReset(f)
		case *http2.SettingsFrame:
			if !f.IsAck() {
				err = c.onSettings(f)
			}
		case *http2.WindowUpdateFrame:
			err = c.onWindowUpdate(f)
		case *http2.PingFrame:
			if !f.IsAck() {
				err = c.onPing(f)
			} else {
				c.poke() // a probed connection may open streams again
			}
		case *http2.GoAwayFrame:
			c.onGoAway(f)
		case *http2.PushPromiseFrame:
			err = connErr(http2.ErrCodeProtocol, "PUSH_PROMISE though push is disabled")
		}
		if err != nil {
			return err
		}
	}
}

// checkOpened fails the connection for a frame on a stream this client
// never opened (even ids are the server's, which it may not open either).
func (c *Conn[R]) checkOpened(id uint32, what string) error {
	if id%2 == 0 || id > c.lastOpened.Load() {
		return connErr(http2.ErrCodeProtocol, "%s on stream %d, never opened", what, id)
	}
	return nil
}

// onField is the hpack decoder's emit function. Once the block outgrows
// MaxHeaderListSize, emitting stops: the block is still decoded, to keep
// the decoder's table in sync, but nothing more is kept.
func (c *Conn[R]) onField(f hpack.HeaderField) {
	h := &c.hdr
	h.size += f.Size()
	if h.size > c.cfg.MaxHeaderListSize {
		h.tooBig = true
		c.hdec.SetEmitEnabled(false)
		return
	}
	if len(f.Name) > 0 && f.Name[0] == ':' {
		if f.Name != ":status" || h.regular {
			h.malformed = true
			return
		}
		if h.status != 0 || len(f.Value) != 3 {
			h.status = -1 // malformed
			return
		}
		h.status, _ = strconv.Atoi(f.Value)
		return
	}
	h.regular = true
	if !validField(f) {
		h.malformed = true
		return
	}
	if f.Name == "content-length" {
		u, err := strconv.ParseUint(f.Value, 10, 63) // digits only (RFC 9110 §8.6)
		n := int64(u)
		if err != nil || h.clen >= 0 && n != h.clen {
			h.malformed = true
			return
		}
		h.clen = n
	}
	for i, k := range c.cfg.KeepHeaders {
		if f.Name == k {
			h.keep[i] = f.Value
		}
	}
}

func (c *Conn[R]) onHeaderBlock(frag []byte, end bool) error {
	h := &c.hdr
	if h.raw += len(frag); h.raw > c.maxBlockBytes() {
		return connErr(http2.ErrCodeEnhanceYourCalm, "header block over %d bytes", c.maxBlockBytes())
	}
	if _, err := c.hdec.Write(frag); err != nil {
		return connErr(http2.ErrCodeCompression, "hpack: %v", err)
	}
	if !end {
		return nil
	}
	if err := c.hdec.Close(); err != nil {
		return connErr(http2.ErrCodeCompression, "hpack: %v", err)
	}
	if err := c.checkOpened(h.id, "HEADERS"); err != nil {
		return err
	}
	switch {
	case h.tooBig:
		c.resetStream(h.id, http2.ErrCodeProtocol, ErrHeaderListTooLarge)
		return nil
	case h.malformed:
		c.resetStream(h.id, http2.ErrCodeProtocol, ErrMalformed)
		return nil
	case h.status >= 100 && h.status < 200 && h.status != 101:
		if h.end {
			c.resetStream(h.id, http2.ErrCodeProtocol, ErrMalformed)
		}
		return nil // informational
	}
	c.mu.Lock()
	r, ok := c.streams[h.id]
	if !ok {
		c.mu.Unlock()
		return nil // timed out or reset meanwhile
	}
	s := r.H2Stream()
	if s.Status == 0 { // not trailers
		if h.status < 200 || h.status > 599 {
			c.mu.Unlock()
			c.resetStream(h.id, http2.ErrCodeProtocol, ErrMalformed)
			return nil
		}
		s.Status, s.keep, s.clen = h.status, h.keep, h.clen
		if s.Status == 204 || s.Status == 304 {
			s.clen = -1 // it has no content, whatever its content-length says
		}
	} else if h.status != 0 || !h.end {
		// Trailers: no pseudo-header, and END_STREAM (§8.1).
		c.mu.Unlock()
		c.resetStream(h.id, http2.ErrCodeProtocol, ErrMalformed)
		return nil
	}
	if !h.end {
		c.mu.Unlock()
		return nil
	}
	c.endLocked(r)
	return nil
}

// endLocked ends r's stream at its END_STREAM: answered, unless its DATA
// does not add up to its content-length (RFC 9113 §8.1.1), which makes
// the response malformed. It unlocks mu.
func (c *Conn[R]) endLocked(r R) {
	s := r.H2Stream()
	if s.clen >= 0 && s.got != s.clen {
		c.mu.Unlock()
		c.resetStream(s.id, http2.ErrCodeProtocol, ErrMalformed)
		return
	}
	c.answerLocked(r)
}

// resetStream fails stream id from this side: RST_STREAM with code, and
// the owner told why.
func (c *Conn[R]) resetStream(id uint32, code http2.ErrCode, cause error) {
	c.mu.Lock()
	r, ok := c.streams[id]
	if ok {
		c.endStreamLocked(id)
	}
	if len(c.resets) < maxOwedFrames { // else the peer floods: the stream is gone here anyway
		c.resets = append(c.resets, windowUpdate{id, uint32(code)})
	}
	c.mu.Unlock()
	c.poke()
	if ok {
		c.cfg.Owner.Done(r, &StreamError{StreamID: id, Code: code, Cause: cause})
	}
}

// answerLocked ends r's stream, answered in full, and unlocks mu to hand
// r back to the owner. A payload not yet sent whole never will be: the
// stream is reset (CANCEL) so the peer stops waiting for it.
func (c *Conn[R]) answerLocked(r R) {
	s := r.H2Stream()
	c.endStreamLocked(s.id)
	if s.sent < len(s.Payload) && len(c.resets) < maxOwedFrames {
		c.resets = append(c.resets, windowUpdate{s.id, uint32(http2.ErrCodeCancel)})
		c.poke()
	}
	c.mu.Unlock()
	c.answered++
	c.cfg.Owner.Done(r, nil)
}

// endStreamLocked removes a stream answered in full (or reset).
func (c *Conn[R]) endStreamLocked(id uint32) {
	delete(c.streams, id)
	if uint32(len(c.streams)) == c.maxStreams-1 || c.goaway && len(c.streams) == 0 {
		c.poke() // a slot opened, or the drain is over
	}
}

func (c *Conn[R]) onData(f *http2.DataFrame) error {
	if err := c.checkOpened(f.StreamID, "DATA"); err != nil {
		return err
	}
	c.mu.Lock()
	// Padding counts: the whole frame is granted back, to the connection
	// whatever happens to the stream.
	if c.recvConn += int64(f.Length); c.recvConn > recvWindow {
		c.mu.Unlock()
		return connErr(http2.ErrCodeFlowControl, "DATA beyond the connection window")
	}
	if c.recvConn >= recvWindow/2 {
		c.connWU += uint32(c.recvConn)
		c.recvConn = 0
		c.poke()
	}
	r, ok := c.streams[f.StreamID]
	if !ok {
		c.mu.Unlock()
		return nil // timed out or reset meanwhile
	}
	s := r.H2Stream()
	var fail error
	if s.Status == 0 {
		fail = ErrMalformed // DATA before the response's HEADERS
	} else if s.recv += int64(f.Length); s.recv > recvWindow {
		fail = errors.New("h2conn: DATA beyond the stream window")
	} else if s.got += int64(len(f.Data())); s.clen >= 0 && s.got > s.clen {
		fail = ErrMalformed // more than its content-length
	}
	if fail != nil {
		c.mu.Unlock()
		code := http2.ErrCodeProtocol
		if fail != ErrMalformed {
			code = http2.ErrCodeFlowControl
		}
		c.resetStream(f.StreamID, code, fail)
		return nil
	}
	if d := f.Data(); len(s.Body) < c.cfg.MaxBody {
		s.Body = append(s.Body, d[:min(len(d), c.cfg.MaxBody-len(s.Body))]...)
	}
	if !f.StreamEnded() {
		if s.recv >= recvWindow/2 {
			c.streamWU = append(c.streamWU, windowUpdate{s.id, uint32(s.recv)})
			s.recv = 0
			c.poke()
		}
		c.mu.Unlock()
		return nil
	}
	c.endLocked(r)
	return nil
}

func (c *Conn[R]) onReset(f *http2.RSTStreamFrame) error {
	if err := c.checkOpened(f.StreamID, "RST_STREAM"); err != nil {
		return err
	}
	c.mu.Lock()
	r, ok := c.streams[f.StreamID]
	if !ok {
		c.mu.Unlock()
		return nil
	}
	c.endStreamLocked(f.StreamID)
	c.mu.Unlock()
	if f.ErrCode == http2.ErrCodeRefusedStream {
		c.cfg.Owner.Done(r, ErrRefused)
		return nil
	}
	c.cfg.Owner.Done(r, &StreamError{StreamID: f.StreamID, Code: f.ErrCode, Remote: true})
	return nil
}

// validSetting checks one SETTINGS value (RFC 9113 §6.5.2) before any is
// applied.
func validSetting(s http2.Setting) error {
	switch s.ID {
	case http2.SettingEnablePush:
		if s.Val != 0 { // a server may only say 0 (§6.5.2)
			return connErr(http2.ErrCodeProtocol, "ENABLE_PUSH %d from a server", s.Val)
		}
	case http2.SettingInitialWindowSize:
		if s.Val > maxWindow {
			return connErr(http2.ErrCodeFlowControl, "INITIAL_WINDOW_SIZE %d above 2^31-1", s.Val)
		}
	case http2.SettingMaxFrameSize:
		if s.Val < minFrameSize || s.Val > maxFrameSize {
			return connErr(http2.ErrCodeProtocol, "MAX_FRAME_SIZE %d outside 16384..16777215", s.Val)
		}
	}
	return nil
}

func (c *Conn[R]) onSettings(f *http2.SettingsFrame) error {
	if err := f.ForeachSetting(validSetting); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.settingsAcks >= maxOwedFrames {
		return connErr(http2.ErrCodeEnhanceYourCalm, "SETTINGS flood")
	}
	// A window pushed past 2^31-1 by the new initial size is checked for
	// every stream before anything changes.
	if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
		delta := int64(v) - c.initWindow
		for _, r := range c.streams {
			if r.H2Stream().window+delta > maxWindow {
				return connErr(http2.ErrCodeFlowControl, "INITIAL_WINDOW_SIZE %d overflows a stream window", v)
			}
		}
	}
	_ = f.ForeachSetting(func(s http2.Setting) error {
		switch s.ID {
		case http2.SettingMaxConcurrentStreams:
			old := c.maxStreams
			c.maxStreams = min(s.Val, c.cfg.MaxStreams)
			if c.maxStreams != old {
				c.cfg.Logger.LogAttrs(context.Background(), slog.LevelDebug, "http2 stream limit changed",
					slog.Uint64("from", uint64(old)), slog.Uint64("to", uint64(c.maxStreams)))
			}
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.initWindow
			c.initWindow = int64(s.Val)
			for _, r := range c.streams {
				r.H2Stream().window += delta
			}
		case http2.SettingMaxFrameSize:
			c.maxFrame = int(min(s.Val, maxWriteFrame))
		case http2.SettingHeaderTableSize:
			c.tableSize, c.tableSet = s.Val, true
		}
		return nil
	})
	c.settingsAcks++
	c.poke()
	return nil
}

func (c *Conn[R]) onPing(f *http2.PingFrame) error {
	c.mu.Lock()
	if len(c.pingAcks) >= maxOwedFrames {
		c.mu.Unlock()
		return connErr(http2.ErrCodeEnhanceYourCalm, "PING flood")
	}
	c.pingAcks = append(c.pingAcks, f.Data)
	c.mu.Unlock()
	c.poke()
	return nil
}

func (c *Conn[R]) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	if f.StreamID != 0 {
		if err := c.checkOpened(f.StreamID, "WINDOW_UPDATE"); err != nil {
			return err
		}
	}
	c.mu.Lock()
	if f.StreamID == 0 {
		c.connWindow += int64(f.Increment)
		if c.connWindow > maxWindow {
			c.mu.Unlock()
			return connErr(http2.ErrCodeFlowControl, "connection window above 2^31-1")
		}
	} else if r, ok := c.streams[f.StreamID]; ok {
		s := r.H2Stream()
		if s.window += int64(f.Increment); s.window > maxWindow {
			c.mu.Unlock()
			c.resetStream(f.StreamID, http2.ErrCodeFlowControl, errors.New("h2conn: stream window above 2^31-1"))
			return nil
		}
	}
	c.mu.Unlock()
	c.poke()
	return nil
}

// onGoAway stops new streams; those above the last stream id were not
// processed and go back to the owner as refused, those below finish here.
func (c *Conn[R]) onGoAway(f *http2.GoAwayFrame) {
	var refused []R
	c.mu.Lock()
	c.goaway = true
	if f.ErrCode != http2.ErrCodeNo || c.goawayCode == http2.ErrCodeNo {
		c.goawayCode = f.ErrCode
	}
	for id, r := range c.streams {
		if id > f.LastStreamID {
			refused = append(refused, r)
			delete(c.streams, id)
		}
	}
	c.mu.Unlock()
	level := slog.LevelInfo // a drain is routine
	if f.ErrCode != http2.ErrCodeNo {
		level = slog.LevelWarn
	}
	c.cfg.Logger.LogAttrs(context.Background(), level, "http2 goaway received",
		slog.Uint64("last_stream_id", uint64(f.LastStreamID)), slog.String("code", f.ErrCode.String()),
		slog.String("debug", Printable(f.DebugData(), 128)), slog.Int("refused", len(refused)))
	for _, r := range refused {
		c.cfg.Owner.Done(r, ErrRefused)
	}
	c.poke()
}

// Printable returns up to n bytes of b as printable ASCII, other bytes as
// '?': a peer's bytes made fit for a log line.
func Printable(b []byte, n int) string {
	b = b[:min(len(b), n)]
	out := make([]byte, len(b))
	for i, ch := range b {
		if ch < 0x20 || ch > 0x7e {
			ch = '?'
		}
		out[i] = ch
	}
	return string(out)
}
