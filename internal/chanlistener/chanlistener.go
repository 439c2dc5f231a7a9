// Package chanlistener is a net.Listener fed by the program itself: code
// that accepts connections and decides what they are (protocol detection,
// TLS or not) pushes each one to the server that should serve it.
package chanlistener

import (
	"net"
	"sync"
)

// Listener is a net.Listener whose connections come from Push.
type Listener struct {
	addr   net.Addr
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

// New returns a listener that reports addr as its address (an empty TCP
// address if nil).
func New(addr net.Addr) *Listener {
	if addr == nil {
		addr = &net.TCPAddr{}
	}
	return &Listener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// Push blocks until the server accepts c, so a connection is never lost in
// a buffer when the server shuts down; after Close it closes c.
func (l *Listener) Push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

// Accept implements net.Listener.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener; it does not close connections already
// accepted.
func (l *Listener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

// Done is closed by Close.
func (l *Listener) Done() <-chan struct{} { return l.done }

// Addr implements net.Listener.
func (l *Listener) Addr() net.Addr { return l.addr }
