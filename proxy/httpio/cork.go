package httpio

import (
	"net"
	"sync"
	"time"
)

// CorkedConn gathers what is written to a connection until the writer's
// goroutine gives way, then sends it in one write. net/http's HTTP/2
// server flushes each frame it writes on its own, so a response's HEADERS
// and DATA frames (each a TLS record) cost a write system call apiece and
// wake the peer's reader twice; under TLS, corking the TCP connection
// turns them into one write and one read. The flusher runs as soon as the
// goroutines already runnable have had their turn, so a lone write waits
// only for that.
type CorkedConn struct {
	net.Conn

	mu      sync.Mutex
	pending []byte
	spare   []byte
	queued  bool  // a flush is scheduled
	err     error // the first failed write; later writes fail with it
	on      bool  // corking; until then writes go straight through

	wmu sync.Mutex // held while writing to Conn
}

// corkLimit is how much may wait to be flushed; a writer that would go
// past it writes through, which is also what pushes back on it.
const corkLimit = 64 << 10

// startFlusher runs the flusher once the goroutines already runnable have
// had their turn; tests replace it to decide when the flush happens.
var startFlusher = func(flush func()) { go flush() }

// corkKeep is the largest buffer kept between bursts.
const corkKeep = 16 << 10

// cork wraps c; writes go straight through until start.
func Cork(c net.Conn) *CorkedConn { return &CorkedConn{Conn: c} }

// CorkNow wraps c corked from the start, for connections already known to
// speak HTTP/2.
func CorkNow(c net.Conn) *CorkedConn { return &CorkedConn{Conn: c, on: true} }

// Unwrap returns the connection written to.
func (c *CorkedConn) Unwrap() net.Conn { return c.Conn }

// start begins corking.
// Start turns gathering on, for a connection that begins in another
// protocol (a TLS handshake) and speaks HTTP/2 from here on.
func (c *CorkedConn) Start() {
	c.mu.Lock()
	c.on = true
	c.mu.Unlock()
}

func (c *CorkedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if c.on && len(c.pending)+len(p) <= corkLimit {
		c.pending = append(c.pending, p...)
		if !c.queued {
			c.queued = true
			startFlusher(c.flush)
		}
		c.mu.Unlock()
		return len(p), nil
	}
	c.mu.Unlock()
	// Too much at once: send what waits, then p, in order.
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Write(p)
	if err != nil {
		c.fail(err)
	}
	return n, err
}

func (c *CorkedConn) flush() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.flushLocked()
}

// flushLocked writes what is pending; c.wmu is held.
func (c *CorkedConn) flushLocked() error {
	c.mu.Lock()
	b := c.pending
	c.pending, c.spare = c.spare[:0], nil
	c.queued = false
	err := c.err
	c.mu.Unlock()
	if len(b) > 0 && err == nil {
		if _, err = c.Conn.Write(b); err != nil {
			c.fail(err)
		}
	}
	c.mu.Lock()
	if cap(b) <= corkKeep {
		c.spare = b[:0]
	}
	c.mu.Unlock()
	return err
}

// fail remembers the first write error and closes the connection, so that
// its reader stops too: the writer that caused it has long returned.
func (c *CorkedConn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.Conn.Close()
}

// closeFlushTimeout bounds how long a close waits to send what waits on
// a peer that does not read.
var closeFlushTimeout = 5 * time.Second

// Close sends what waits, then closes.
func (c *CorkedConn) Close() error {
	c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
	c.flush()
	return c.Conn.Close()
}

// CloseWrite sends what waits, then shuts the sending side.
func (c *CorkedConn) CloseWrite() error {
	c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
	c.flush()
	c.Conn.SetWriteDeadline(time.Time{})
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// A deadline applies to writes made after it is set. What waits goes out
// under the later of the old and the new deadline: tls.Conn, closing, sets
// a deadline in five seconds, writes its close_notify, then sets one in
// the past.
func (c *CorkedConn) SetWriteDeadline(t time.Time) error {
	if t.IsZero() || t.After(time.Now()) {
		if err := c.Conn.SetWriteDeadline(t); err != nil {
			return err
		}
		c.flush()
		return nil
	}
	c.flush()
	return c.Conn.SetWriteDeadline(t)
}

func (c *CorkedConn) SetDeadline(t time.Time) error {
	if err := c.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetReadDeadline(t)
}
