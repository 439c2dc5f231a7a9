// Package rawsock reads and writes the proxy's TCP sockets without telling
// the Go scheduler that a system call is under way.
//
// Every read and write through package net enters the runtime's system-call
// bookkeeping, and the first one after the process has been idle wakes the
// runtime's monitor thread (sysmon) from its sleep; woken that way it polls
// every 20 µs until the process idles again. A proxy at a steady rate idles
// between requests, so each request paid for a wake-up and a burst of
// polls: on this project's benchmark about a third of its CPU time and two
// thirds of its context switches. The sockets are non-blocking, so a read
// or write returns at once and has no need of what the bookkeeping is for
// (handing the processor to another thread while a call blocks). Waiting for
// readiness, deadlines and close stay package net's: the calls go through
// the socket's syscall.RawConn.
package rawsock

import (
	"net"
)

// Conn is a TCP connection whose Read and Write are raw system calls.
// Everything else (deadlines, CloseWrite, addresses, SyscallConn) is the
// TCP connection's own.
type Conn struct {
	*net.TCPConn
	raw rawConn
}

type rawConn interface {
	Read(func(fd uintptr) bool) error
	Write(func(fd uintptr) bool) error
}

// Wrap returns c with raw reads and writes when it is a TCP connection on a
// system this package knows, else c itself.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok || !supported {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	return &Conn{TCPConn: tc, raw: rc}
}

// Unwrap returns the TCP connection, for those that look beneath wrappers
// (the original destination's lookup, for one).
func (c *Conn) Unwrap() net.Conn { return c.TCPConn }

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// Listener wraps the connections a TCP listener accepts.
type Listener struct{ net.Listener }

// Accept returns the next connection, wrapped.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}
