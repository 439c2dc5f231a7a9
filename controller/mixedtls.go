package controller

import (
	"bufio"
	"crypto/tls"
	"net"
	"sync"
	"time"
)

// MixedTLSListener accepts TLS and plaintext on one port, telling them
// apart by the first byte (a TLS handshake record starts with 0x16; an
// HTTP/2 preface with 'P'). Mesh proxies reach xDS over TLS and check the
// control plane's identity; proxyless gRPC clients, which cannot check a
// SPIFFE ID, may still use plaintext.
func MixedTLSListener(ln net.Listener, cfg *tls.Config) net.Listener {
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"h2"} // gRPC clients insist on it
	m := &mixedListener{Listener: ln, cfg: cfg, conns: make(chan net.Conn), done: make(chan struct{})}
	go m.loop()
	return m
}

type mixedListener struct {
	net.Listener
	cfg   *tls.Config
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (m *mixedListener) loop() {
	for {
		c, err := m.Listener.Accept()
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
				out = tls.Server(out, m.cfg)
			}
			select {
			case m.conns <- out:
			case <-m.done:
				c.Close()
			}
		}()
	}
}

func (m *mixedListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case <-m.done:
		return nil, net.ErrClosed
	}
}

func (m *mixedListener) Close() error {
	m.once.Do(func() { close(m.done) })
	return m.Listener.Close()
}

type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
