package detect

import (
	"encoding/binary"
	"errors"
	"os"
	"time"
)

// ClientHelloALPN reads the ALPN protocols a TLS client offers from the
// first record of its ClientHello. more is true when b does not yet hold
// the whole record. Anything that is not a well-formed ClientHello offers
// nothing.
func ClientHelloALPN(b []byte) (protos []string, more bool) {
	if len(b) < 5 {
		return nil, true
	}
	if b[0] != 0x16 {
		return nil, false
	}
	n := int(binary.BigEndian.Uint16(b[3:5]))
	if len(b) < 5+n {
		return nil, 5+n <= PeekSize*2
	}
	rec := b[5 : 5+n]
	// Handshake header: type 1 (ClientHello) and a 3-byte length.
	if len(rec) < 4 || rec[0] != 1 {
		return nil, false
	}
	hl := int(rec[1])<<16 | int(rec[2])<<8 | int(rec[3])
	body := rec[4:]
	if hl < len(body) {
		body = body[:hl]
	}
	r := reader(body)
	if !r.skip(2+32) || !r.skipVec(1) || !r.skipVec(2) || !r.skipVec(1) {
		return nil, false
	}
	exts, ok := r.vec(2)
	if !ok {
		return nil, false
	}
	for len(exts) >= 4 {
		typ := binary.BigEndian.Uint16(exts)
		l := int(binary.BigEndian.Uint16(exts[2:]))
		if len(exts) < 4+l {
			return nil, false
		}
		data := exts[4 : 4+l]
		exts = exts[4+l:]
		if typ != 16 { // application_layer_protocol_negotiation
			continue
		}
		list := reader(data)
		names, ok := list.vec(2)
		if !ok {
			return nil, false
		}
		for len(names) > 0 {
			nl := int(names[0])
			if nl == 0 || len(names) < 1+nl {
				return nil, false
			}
			protos = append(protos, string(names[1:1+nl]))
			names = names[1+nl:]
		}
	}
	return protos, false
}

type reader []byte

func (r *reader) skip(n int) bool {
	if len(*r) < n {
		return false
	}
	*r = (*r)[n:]
	return true
}

func (r *reader) vec(lenBytes int) ([]byte, bool) {
	if len(*r) < lenBytes {
		return nil, false
	}
	var n int
	for i := range lenBytes {
		n = n<<8 | int((*r)[i])
	}
	*r = (*r)[lenBytes:]
	if len(*r) < n {
		return nil, false
	}
	v := (*r)[:n]
	*r = (*r)[n:]
	return v, true
}

func (r *reader) skipVec(lenBytes int) bool {
	_, ok := r.vec(lenBytes)
	return ok
}

// FillClientHello reads until the peeked bytes hold the client's whole
// first TLS record (or timeout passes), and returns the ALPN protocols it
// offers.
func FillClientHello(c *Conn, timeout time.Duration) ([]string, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	defer c.Conn.SetReadDeadline(time.Time{})
	for {
		protos, more := ClientHelloALPN(c.prefix)
		if !more {
			return protos, nil
		}
		if c.eof != nil {
			return nil, c.eof
		}
		buf := make([]byte, 4096)
		n, err := c.Conn.Read(buf)
		c.prefix = append(c.prefix, buf[:n]...)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, errors.New("TLS client hello incomplete before the detect timeout")
			}
			c.eof = err
		}
	}
}
