package controller

import (
	"bufio"
	"crypto/tls"
	"net"
	"time"

	"github.com/meshproj/mesh/internal/chanlistener"
)

// MixedTLSListener accepts TLS and plaintext on one port, telling them
// apart by the first byte (a TLS handshake record starts with 0x16; an
// HTTP/2 preface with 'P'). Mesh proxies reach xDS over TLS and check the
// control plane's identity; proxyless gRPC clients, which cannot check a
// SPIFFE ID, may still use plaintext.
func MixedTLSListener(ln net.Listener, cfg *tls.Config) net.Listener {
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"h2"} // gRPC clients insist on it
	m := &mixedListener{Listener: chanlistener.New(ln.Addr()), ln: ln}
	go m.loop(cfg)
	return m
}

type mixedListener struct {
	*chanlistener.Listener
	ln net.Listener
}

func (m *mixedListener) loop(cfg *tls.Config) {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			m.Close()
			return
		}
		// Sniff off the accept loop, so a silent client holds up nobody.
		go func() {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReaderSize(c, 1)
			first, err := br.Peek(1)
			c.SetReadDeadline(time.Time{})
			if err != nil {
				c.Close()
				return
			}
			var out net.Conn = &peekedConn{Conn: c, r: br}
			if first[0] == 0x16 {
				out = tls.Server(out, cfg)
			}
			m.Push(out)
		}()
	}
}

// Close stops accepting on the port too.
func (m *mixedListener) Close() error {
	m.Listener.Close()
	return m.ln.Close()
}

type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
