// Package detect tells which protocol a client speaks from the first bytes
// it sends: HTTP/1.x, HTTP/2 with prior knowledge (gRPC), TLS, or anything
// else (opaque TCP). It reads without consuming: the bytes it peeked are
// replayed to whoever handles the connection next.
//
// It does not parse requests; a request line that starts like HTTP but is
// malformed is still HTTP, so that the HTTP server can answer 400.
package detect

import (
	"bytes"
	"errors"
	"net"
	"os"
	"time"
)

// Protocol is what a connection speaks.
type Protocol uint8

// The protocols that can be told apart.
const (
	Opaque Protocol = iota
	HTTP1
	HTTP2
	TLS
)

func (p Protocol) String() string {
	switch p {
	case HTTP1:
		return "http/1"
	case HTTP2:
		return "h2"
	case TLS:
		return "tls"
	}
	return "opaque"
}

// PeekSize is how much Peek reads at most; an HTTP/1 request line longer than
// this is decided from its method alone.
const PeekSize = 8 << 10

var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// Methods that decide HTTP/1 as soon as they are followed by a space.
var methods = [][]byte{
	[]byte("GET "), []byte("POST "), []byte("PUT "), []byte("DELETE "), []byte("HEAD "),
	[]byte("OPTIONS "), []byte("PATCH "), []byte("CONNECT "), []byte("TRACE "),
}

// Classify decides the protocol from a connection's first bytes. more is
// true when b is too short to decide; the caller should read more and ask
// again (or give up and treat the connection as opaque).
func Classify(b []byte) (p Protocol, more bool) {
	if len(b) == 0 {
		return Opaque, true
	}
	// TLS record header: handshake(22), version 3.x.
	if b[0] == 0x16 {
		if len(b) < 3 {
			return Opaque, true
		}
		if b[1] == 3 && b[2] <= 4 {
			return TLS, false
		}
		return Opaque, false
	}
	if n := min(len(b), len(h2Preface)); bytes.Equal(b[:n], h2Preface[:n]) {
		if n == len(h2Preface) {
			return HTTP2, false
		}
		return Opaque, true
	}
	for _, m := range methods {
		if n := min(len(b), len(m)); bytes.Equal(b[:n], m[:n]) {
			if n == len(m) {
				return HTTP1, false
			}
			return Opaque, true // a prefix of a method: need more
		}
	}
	return classifyRequestLine(b)
}

// classifyRequestLine accepts any method token when the whole request line
// has the HTTP/1 form: TOKEN SP TARGET SP HTTP/1.x CRLF.
func classifyRequestLine(b []byte) (Protocol, bool) {
	sp := bytes.IndexByte(b, ' ')
	token := b
	if sp >= 0 {
		token = b[:sp]
	}
	for _, c := range token {
		if !isTokenChar(c) {
			return Opaque, false
		}
	}
	if sp <= 0 {
		if sp == 0 {
			return Opaque, false
		}
		return Opaque, len(b) < 32 // a method longer than 32 bytes is not one
	}
	eol := bytes.IndexByte(b, '\n')
	if eol < 0 {
		return Opaque, len(b) < PeekSize
	}
	line := bytes.TrimSuffix(b[:eol], []byte("\r"))
	last := bytes.LastIndexByte(line, ' ')
	if last <= sp+1 {
		return Opaque, false
	}
	v := line[last+1:]
	if len(v) == 8 && bytes.HasPrefix(v, []byte("HTTP/1.")) && (v[7] == '0' || v[7] == '1') {
		return HTTP1, false
	}
	return Opaque, false
}

// isTokenChar reports whether c may appear in an HTTP token (RFC 9110 5.6.2).
func isTokenChar(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

// Peek reads from c until Classify decides, the buffer is full, the client
// stops sending or timeout passes. It returns the protocol and a connection
// that replays the peeked bytes. A client that sends nothing before the
// timeout (server-speaks-first protocols) is opaque, not an error; err is
// set only when the connection failed or closed before sending anything.
func Peek(c net.Conn, timeout time.Duration) (Protocol, net.Conn, error) {
	buf := make([]byte, 0, 512)
	deadline := time.Now().Add(timeout)
	if err := c.SetReadDeadline(deadline); err != nil {
		return Opaque, c, err
	}
	defer c.SetReadDeadline(time.Time{})
	for {
		if len(buf) == cap(buf) {
			if cap(buf) >= PeekSize {
				return Opaque, &Conn{Conn: c, prefix: buf}, nil
			}
			buf = append(make([]byte, 0, min(2*cap(buf), PeekSize)), buf...)
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if p, more := Classify(buf); !more {
			return p, &Conn{Conn: c, prefix: buf}, nil
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || len(buf) > 0 {
				// Quiet client or a short opaque message followed by EOF.
				return Opaque, &Conn{Conn: c, prefix: buf, eof: err}, nil
			}
			return Opaque, c, err
		}
	}
}

// Conn is a connection whose first bytes were peeked: Read returns them
// before reading from the network again.
type Conn struct {
	net.Conn
	prefix []byte
	eof    error // an error seen while peeking, returned after the prefix
}

// Read returns the peeked bytes first.
func (c *Conn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	if c.eof != nil && !errors.Is(c.eof, os.ErrDeadlineExceeded) {
		return 0, c.eof
	}
	return c.Conn.Read(b)
}

// TakePrefix returns the peeked bytes not yet read and forgets them; the
// caller takes over delivering them.
func (c *Conn) TakePrefix() []byte {
	p := c.prefix
	c.prefix = nil
	return p
}

// Unwrap returns the underlying connection.
func (c *Conn) Unwrap() net.Conn { return c.Conn }
