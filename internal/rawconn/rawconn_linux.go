//go:build linux

package rawconn

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// conn is a *net.TCPConn whose Read and Write are raw system calls, made
// from inside syscall.RawConn's Read and Write: those hold the poller's
// read or write lock, check the deadlines, and wait for readiness when the
// call reports EAGAIN.
type conn struct {
	*net.TCPConn
	rc syscall.RawConn

	// The read in progress. rmu serializes Reads: the poller's read lock
	// is held only inside rc.Read, and these fields outlive it.
	rmu    sync.Mutex
	rbuf   []byte
	rn     int
	rerr   syscall.Errno
	reof   bool
	readFn func(fd uintptr) bool // rawRead, bound once

	// The write in progress, under wmu as the read's under rmu.
	wmu     sync.Mutex
	wbuf    []byte
	wn      int
	werr    syscall.Errno
	writeFn func(fd uintptr) bool // rawWrite, bound once
}

func wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	w := &conn{TCPConn: tc, rc: rc}
	w.readFn, w.writeFn = w.rawRead, w.rawWrite
	return w
}

// Read reads up to len(p) bytes as net.Conn's Read does.
func (c *conn) Read(p []byte) (int, error) {
	if len(p) == 0 { // net's checks: closed, not the deadline
		return c.TCPConn.Read(p)
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rbuf, c.rn, c.rerr, c.reof = p, 0, 0, false
	err := c.rc.Read(c.readFn)
	n, errno, eof := c.rn, c.rerr, c.reof
	c.rbuf = nil
	raceWriteRange(p[:n])
	switch {
	case err != nil: // deadline, closed
		return n, c.opError("read", err)
	case errno != 0:
		return n, c.opError("read", os.NewSyscallError("read", errno))
	case eof:
		return 0, io.EOF
	}
	return n, nil
}

// rawRead reads once into c.rbuf; it reports false (wait for readiness)
// only on EAGAIN.
func (c *conn) rawRead(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch e {
		case 0:
			c.rn, c.reof = int(n), n == 0
			raceAcquireIO(fd)
			return true
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.rerr = e
			return true
		}
	}
}

// Write writes all of p, or fails, as net.Conn's Write does.
func (c *conn) Write(p []byte) (int, error) {
	if len(p) == 0 { // net's checks: closed, the deadline
		return c.TCPConn.Write(p)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf, c.wn, c.werr = p, 0, 0
	raceReleaseIO()
	err := c.rc.Write(c.writeFn)
	n, errno := c.wn, c.werr
	c.wbuf = nil
	raceReadRange(p[:n])
	switch {
	case err != nil:
		return n, c.opError("write", err)
	case errno != 0:
		return n, c.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

// rawWrite writes what is left of c.wbuf; it reports false (wait for
// readiness) only on EAGAIN.
func (c *conn) rawWrite(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		rest := c.wbuf[c.wn:]
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
		switch e {
		case 0:
			c.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werr = e
			return true
		}
	}
	return true
}

// opError is err as net reports a failed read or write: a *net.OpError
// with op, whose Err is the deadline, closed-connection or system-call
// error.
func (c *conn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) { // from RawConn: op "raw-read" or "raw-write"
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
