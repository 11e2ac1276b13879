// Package rawconn gives a TCP connection reads and writes that are direct
// system calls on its non-blocking socket, without the Go scheduler's
// system-call bookkeeping.
//
// Go's net package enters every read and write through the runtime's
// syscall path: the first one after the process was idle wakes the sysmon
// thread, which then polls every 20 µs until the process is idle again,
// and, when no other P is idle, a call that takes more than 20 µs (a
// loopback write runs the receiver's TCP stack too) has its P handed to
// another thread. A worker
// at a few thousand jobs a second goes idle and wakes up several times per
// batch of jobs, so on a small virtual machine those wake-ups cost more
// CPU than the jobs: on 2 cores, at 10 000 jobs/s, the sysmon thread alone
// took 17 % of the worker's CPU. The socket is non-blocking, so a read or
// write returns at once (EAGAIN when it would block); Wrap makes it a raw
// system call and waits for readiness, and deadlines, through the
// runtime's poller as net does (syscall.RawConn). Reads and writes behave
// as net.Conn's otherwise: a write writes everything or fails, a read of
// a closed stream is io.EOF, errors are *net.OpError.
//
// Only Linux has the raw calls; elsewhere Wrap returns the connection as
// it is.
package rawconn

import "net"

// Wrap returns c with direct reads and writes if it is a *net.TCPConn on
// Linux; else it returns c.
func Wrap(c net.Conn) net.Conn { return wrap(c) }
