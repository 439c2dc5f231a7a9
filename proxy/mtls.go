package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/meshproj/mesh/internal/chanlistener"
	"github.com/meshproj/mesh/pki"
	"github.com/meshproj/mesh/proxy/connlimit"
	"github.com/meshproj/mesh/proxy/detect"
	"github.com/meshproj/mesh/proxy/httpio"
	"github.com/meshproj/mesh/proxy/rawsock"
)

// This file is where traffic between two proxies is secured: TLS 1.3 with
// both sides proving a SPIFFE identity under the trust anchors.
//
// A client proxy offers the ALPN marker "mesh" beside the protocol it
// wants, which lets the server proxy tell mesh TLS from an app's own TLS
// by peeking at the ClientHello, without terminating the latter:
//
//	h2       HTTP/2 requests (gRPC) multiplexed over one connection
//	http/1.1 HTTP/1.1 requests, kept HTTP/1.1 across the hop over pooled
//	         connections, served on each side by the proxy's own HTTP/1
//	         server and client (and upgrades: WebSocket)
//	mesh.tcp opaque TCP
//
// Proxies before HTTP/1.1 crossed the hop as HTTP/1.1 sent it over h2,
// marked with origProtoHeader; the server side still takes that.

const (
	alpnMesh = "mesh"
	alpnTCP  = "mesh.tcp"
	// origProtoHeader marks an HTTP/1 request carried over HTTP/2 between
	// proxies, so that the server proxy sends it on as HTTP/1.
	origProtoHeader = "Mesh-Orig-Proto"
)

// identityError is a peer that proved an identity other than expected.
type identityError struct {
	addr, got, want string
}

func (e *identityError) Error() string {
	return fmt.Sprintf("server proxy at %s presented identity %s, expected %s", e.addr, e.got, e.want)
}

// peerID verifies a TLS peer's chain against the anchors and returns its
// SPIFFE ID.
func (p *Proxy) peerID(cs tls.ConnectionState) (pki.ID, error) {
	return pki.Verify(cs.PeerCertificates, p.cfg.TrustAnchors, time.Now())
}

// clientTLS is the configuration for dialing a meshed endpoint whose proxy
// must prove the identity want.
func (p *Proxy) clientTLS(addr, want string, protos []string) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		NextProtos:           append(protos[:len(protos):len(protos)], alpnMesh),
		GetClientCertificate: p.cfg.Identity.GetClientCertificate,
		// Names are checked below as SPIFFE IDs, not as DNS names.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := p.peerID(cs)
			if err != nil {
				return fmt.Errorf("server proxy at %s: %w", addr, err)
			}
			if id.String() != want {
				return &identityError{addr: addr, got: id.String(), want: want}
			}
			return nil
		},
	}
}

// serverTLS is the inbound configuration: any mesh client with a valid
// chain may connect; who it is goes into metrics (and, later, policy).
func (p *Proxy) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		NextProtos:     []string{"h2", "http/1.1", alpnTCP},
		GetCertificate: p.cfg.Identity.GetCertificate,
		ClientAuth:     tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := p.peerID(cs)
			return err
		},
	}
}

// dialMesh opens an mTLS connection to a meshed endpoint.
func (p *Proxy) dialMesh(ctx context.Context, addr string, protos []string) (*tls.Conn, error) {
	want, ok := p.meshIDs.Load(addr)
	if !ok {
		return nil, fmt.Errorf("no expected identity known for %s", addr)
	}
	d := net.Dialer{Timeout: p.cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	cc := httpio.Cork(rawsock.Wrap(raw))
	tc := tls.Client(cc, p.clientTLS(addr, want.(string), protos))
	hctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		p.metrics.HTTPErrors.WithLabelValues(outbound.String(), "tls_handshake_failed").Inc()
		var ie *identityError
		if errors.As(err, &ie) {
			return nil, ie
		}
		return nil, &tlsError{addr: addr, err: err}
	}
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		cc.Start() // see serveMeshInbound
	}
	return tc, nil
}

// tlsError is a failed handshake with a meshed endpoint.
type tlsError struct {
	addr string
	err  error
}

func (e *tlsError) Error() string { return fmt.Sprintf("mTLS handshake with %s: %v", e.addr, e.err) }
func (e *tlsError) Unwrap() error { return e.err }

// newMeshTransports builds the pools to meshed endpoints: a multiplexing
// HTTP/2 connection per endpoint for HTTP/2 requests (see meshpool.go),
// the proxy's own HTTP/1.1 client over pooled mTLS connections for HTTP/1
// requests, and net/http's for what that client leaves to it (upgrades).
func (p *Proxy) newMeshTransports(idleTimeout time.Duration, maxConns int) (*meshPool, *httpio.Client, *http.Transport) {
	var p1 http.Protocols
	p1.SetHTTP1(true)
	upgrade := &http.Transport{
		Proxy: nil,
		DialTLSContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return p.dialMesh(ctx, addr, []string{"http/1.1"})
		},
		MaxIdleConnsPerHost: httpio.MaxIdlePerEndpoint,
		IdleConnTimeout:     idleTimeout,
		DisableCompression:  true,
		Protocols:           &p1,
	}
	h1 := httpio.NewClient(func(ctx context.Context, addr string) (net.Conn, error) {
		return p.dialMesh(ctx, addr, []string{"http/1.1"})
	}, idleTimeout, maxConns, upgrade)
	return newMeshPool(p.dialMesh, idleTimeout), h1, upgrade
}

func (p *Proxy) closeIdleMesh() {
	p.meshH2.CloseIdleConnections()
	p.meshH1.CloseIdleConnections()
	p.meshUpgrade.CloseIdleConnections()
}

// meshTransport picks the pool for a request to a meshed endpoint: HTTP/1
// stays HTTP/1.1 across the hop, HTTP/2 stays HTTP/2.
func (p *Proxy) meshTransport(req *http.Request) http.RoundTripper {
	req.URL.Scheme = "https"
	if req.ProtoMajor == 1 {
		return p.meshH1
	}
	return p.meshH2
}

// serveMeshInbound terminates mesh TLS from a client proxy and serves what
// it carries.
func (p *Proxy) serveMeshInbound(c net.Conn, target netip.AddrPort) {
	cc := httpio.Cork(c)
	tc := tls.Server(cc, p.serverTLS())
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ConnectTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		p.metrics.HTTPErrors.WithLabelValues(inbound.String(), "tls_handshake_failed").Inc()
		p.log.Warn("inbound mTLS handshake failed", slog.String("client", c.RemoteAddr().String()), slog.Any("error", err))
		c.Close()
		return
	}
	cs := tc.ConnectionState()
	id, _ := p.peerID(cs)
	pr := peer{tls: true, clientID: id.String()}
	switch cs.NegotiatedProtocol {
	case alpnTCP:
		if !p.admitConn(tc, target.Port(), pr.clientID) {
			return
		}
		server, err := net.DialTimeout("tcp", target.String(), p.cfg.ConnectTimeout)
		if err != nil {
			p.metrics.HTTPErrors.WithLabelValues(inbound.String(), "connect_failed").Inc()
			tc.Close()
			return
		}
		t := target.String()
		p.pipe(tc, server, inbound, t, t, pr)
	case "http/1.1":
		ci := &connInfo{dst: target, source: remoteAddrPort(c), peer: pr}
		p.meshInbound.h1.Serve(context.WithValue(context.Background(), connInfoKey{}, ci), tc)
	default: // h2
		// The HTTP/2 server flushes every frame; corked, a response's
		// frames leave in one write (see httpio.CorkedConn).
		cc.Start()
		p.meshInbound.serveTLS(tc, connInfo{dst: target, source: remoteAddrPort(c), peer: pr})
	}
}

func remoteAddrPort(c net.Conn) netip.AddrPort {
	if ra, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ra.AddrPort()
	}
	return netip.AddrPort{}
}

// meshHTTP serves HTTP on terminated mesh TLS connections: HTTP/1.1 with
// the proxy's own server, on the goroutine that accepted the connection,
// and HTTP/2 with net/http's, handed over through a listener; facts about
// each connection wait in a map until ConnContext picks them up.
type meshHTTP struct {
	h1     *httpio.Server
	server *http.Server
	ln     *chanlistener.Listener
	infos  sync.Map // *tls.Conn -> *connInfo
}

func (p *Proxy) newMeshHTTP() *meshHTTP {
	m := &meshHTTP{ln: chanlistener.New(nil)}
	h := p.logged(inbound, http.HandlerFunc(p.serveInbound))
	m.h1 = httpio.NewServer(h, p.log, func(c net.Conn, state http.ConnState) {
		switch state {
		case http.StateNew:
			p.window.open[inbound].Add(1)
		case http.StateClosed, http.StateHijacked:
			p.window.open[inbound].Add(-1)
		}
	}, p.cfg.RequestHeadTimeout, p.cfg.ClientIdleTimeout)
	// HTTP/2 arrives here through a guard (httpio.H2Guard) over the TLS
	// connection, which the server speaks to as it would to plaintext.
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	m.server = &http.Server{
		Handler:           h,
		Protocols:         &protocols,
		HTTP2:             &http.HTTP2Config{MaxReadFrameSize: httpio.MaxReadFrameSize},
		ReadHeaderTimeout: p.cfg.RequestHeadTimeout,
		IdleTimeout:       p.cfg.ClientIdleTimeout,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if ci, ok := m.infos.Load(c); ok {
				return context.WithValue(ctx, connInfoKey{}, ci.(*connInfo))
			}
			return ctx
		},
		ConnState: func(c net.Conn, state http.ConnState) {
			connlimit.FollowHTTP(c, state)
			switch state {
			case http.StateNew:
				p.window.open[inbound].Add(1)
			case http.StateClosed, http.StateHijacked:
				p.window.open[inbound].Add(-1)
				m.infos.Delete(c)
			}
		},
	}
	return m
}

// shutdown lets the servers finish their requests; false: ctx ended first
// and what was left has been closed.
func (m *meshHTTP) shutdown(ctx context.Context) bool {
	h1done := make(chan bool, 1)
	go func() {
		err := m.h1.Shutdown(ctx)
		if err != nil {
			m.h1.Close()
		}
		h1done <- err == nil
	}()
	ok := true
	if m.server.Shutdown(ctx) != nil {
		m.server.Close()
		ok = false
	}
	return <-h1done && ok
}

func (m *meshHTTP) serveTLS(tc *tls.Conn, ci connInfo) {
	g := httpio.NewH2Guard(tc, tc)
	m.infos.Store(g, &ci)
	m.ln.Push(g)
}

// inboundMeshTLS decides whether a TLS connection to the inbound listener
// is mesh TLS (from a client proxy) by the ALPN marker in its ClientHello.
func (p *Proxy) inboundMeshTLS(c net.Conn) bool {
	dc, ok := c.(*detect.Conn)
	if !ok || p.cfg.Identity == nil {
		return false
	}
	protos, err := detect.FillClientHello(dc, p.cfg.DetectTimeout)
	if err != nil {
		return false
	}
	for _, proto := range protos {
		if proto == alpnMesh {
			return true
		}
	}
	return false
}
