package proxy

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/meshproj/mesh/internal/chanlistener"
	"github.com/meshproj/mesh/proxy/connlimit"
	"github.com/meshproj/mesh/proxy/detect"
	"github.com/meshproj/mesh/proxy/httpio"
	"github.com/meshproj/mesh/proxy/metrics"
	"github.com/meshproj/mesh/proxy/origdst"
)

// direction says which way traffic flows through the proxy.
type direction uint8

const (
	outbound direction = iota
	inbound
)

func (d direction) String() string {
	if d == inbound {
		return "inbound"
	}
	return "outbound"
}

// accept runs a listener's accept loop until the listener closes. Each
// connection is handled on its own goroutine.
func (p *Proxy) accept(ln net.Listener, handle func(net.Conn)) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: back off, keep going.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.log.Warn("accept failed", slog.String("listener", ln.Addr().String()), slog.Any("error", err))
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		go handle(c)
	}
}

// connInfo is what the proxy knows about an accepted connection; it rides
// in the request context of every request on the connection.
type connInfo struct {
	// dst is the original destination when traffic was intercepted (for
	// inbound connections: the app's address).
	dst netip.AddrPort
	// source is the client's address.
	source netip.AddrPort
	// peer is what mTLS proved about the client.
	peer peer
}

// peer is the TLS standing of a hop, for metrics labels.
type peer struct {
	tls      bool
	clientID string // inbound: the client proxy's SPIFFE ID
	serverID string // outbound: the server proxy's SPIFFE ID
}

// peerID is the identity that stat groups by: the client's inbound, the
// server's outbound.
func (p peer) peerID(d direction) string {
	if d == inbound {
		return p.clientID
	}
	return p.serverID
}

// labels is the series of a request or stream with this peer.
func (p peer) labels(d direction, authority, target string) metrics.Labels {
	tls := "false"
	if p.tls {
		tls = "true"
	}
	return metrics.Labels{Direction: d.String(), Authority: authority, TargetAddr: target, TLS: tls, ClientID: p.clientID, ServerID: p.serverID}
}

type connInfoKey struct{}

func infoOf(ctx context.Context) *connInfo {
	ci, _ := ctx.Value(connInfoKey{}).(*connInfo)
	return ci
}

// handleOutbound routes a connection from the local app.
func (p *Proxy) handleOutbound(c net.Conn) {
	dst, _ := origdst.Lookup(c)
	if dst.IsValid() {
		svc := p.vip(context.Background(), dst)
		if p.opaque[dst.Port()] || (svc != nil && svc.settings.Load().Opaque) {
			p.forwardOriginalDst(c, dst, nil)
			return
		}
	}
	proto, pc, ok := p.detect(c, p.cfg.DetectTimeout)
	if !ok {
		return
	}
	switch proto {
	case detect.HTTP1, detect.HTTP2:
		p.outboundH.serve(pc, dst, proto)
	default:
		if !dst.IsValid() {
			// Without interception an opaque connection names no service:
			// the app should use an outbound TCP port instead.
			p.log.Debug("outbound connection is not HTTP and has no original destination; closing",
				slog.String("client", c.RemoteAddr().String()), slog.String("protocol", proto.String()))
			p.metrics.HTTPErrors.WithLabelValues(outbound.String(), "no_destination").Inc()
			pc.Close()
			return
		}
		p.forwardOriginalDst(pc, dst, nil)
	}
}

// handleInbound routes a connection meant for the local app.
func (p *Proxy) handleInbound(c net.Conn) {
	dst, _ := origdst.Lookup(c)
	if p.refuseOwnPort(c, dst) {
		return
	}
	target, err := p.inboundTarget(dst)
	if err != nil {
		p.log.Warn("inbound connection has nowhere to go", slog.String("client", c.RemoteAddr().String()), slog.Any("error", err))
		c.Close()
		return
	}
	if p.opaque[target.Port()] || p.authz.Load().Opaque(target.Port()) {
		p.handleInboundOpaque(c, target)
		return
	}
	proto, pc, ok := p.detect(c, p.cfg.DetectTimeout)
	if !ok {
		return
	}
	if proto == detect.TLS && p.inboundMeshTLS(pc) {
		p.serveMeshInbound(pc, target)
		return
	}
	if p.cfg.RequireIdentity {
		p.log.Debug("inbound connection refused: not mesh TLS", slog.String("client", c.RemoteAddr().String()))
		p.metrics.HTTPErrors.WithLabelValues(inbound.String(), "identity_required").Inc()
		pc.Close()
		return
	}
	switch proto {
	case detect.HTTP1, detect.HTTP2:
		p.inboundH.serve(pc, target, proto)
	default:
		p.forwardInboundTCP(pc, target)
	}
}

// opaqueTLSWait is how long an opaque inbound port waits for a client's
// first bytes: a meshed client's proxy opens with its TLS handshake at
// once, and a client of a server-speaks-first protocol without a proxy
// sends nothing until the server has spoken.
const opaqueTLSWait = time.Second

// handleInboundOpaque serves a connection to an opaque port: no HTTP
// detection, but the mesh's TLS from another proxy is still recognized
// and terminated (its client proxy treats the port as opaque too and
// tunnels the bytes in mTLS); anything else is forwarded as it comes.
func (p *Proxy) handleInboundOpaque(c net.Conn, target netip.AddrPort) {
	proto, pc, ok := p.detect(c, min(opaqueTLSWait, p.cfg.DetectTimeout))
	if !ok {
		return
	}
	if proto == detect.TLS && p.inboundMeshTLS(pc) {
		p.serveMeshInbound(pc, target)
		return
	}
	p.forwardInboundTCP(pc, target)
}

// inboundTarget is the local app's address for an inbound connection.
func (p *Proxy) inboundTarget(dst netip.AddrPort) (netip.AddrPort, error) {
	if p.cfg.InboundForward != "" {
		return netip.MustParseAddrPort(p.cfg.InboundForward), nil
	}
	if !dst.IsValid() {
		return netip.AddrPort{}, errors.New("no original destination (traffic is not intercepted) and no --inbound-forward address")
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), dst.Port()), nil
}

// detect peeks at a connection. ok is false when the connection is gone.
func (p *Proxy) detect(c net.Conn, timeout time.Duration) (detect.Protocol, net.Conn, bool) {
	p.detecting.Add(1)
	defer p.detecting.Done()
	proto, pc, err := detect.Peek(c, timeout)
	if err != nil {
		c.Close()
		return 0, nil, false
	}
	return proto, pc, true
}

// httpEntry is one listener's HTTP servers. HTTP/1 connections are served
// by h1 on the goroutine that detected them; HTTP/2 ones are handed to
// net/http's server through a listener fed by a channel.
type httpEntry struct {
	direction direction
	h1        *httpio.Server
	server    *http.Server
	ln        *chanlistener.Listener
}

func (p *Proxy) newHTTPEntry(d direction, h http.Handler) *httpEntry {
	e := &httpEntry{direction: d, ln: chanlistener.New(nil)}
	// The connections of an HTTP listener are counted by direction alone:
	// which service a request is for is the request's to say.
	labels := &metrics.Labels{Direction: d.String(), TLS: "false"}
	connState := func(hc *handedConn, state http.ConnState) {
		switch state {
		case http.StateActive:
			hc.slot.Busy()
		case http.StateIdle:
			hc.slot.Idle()
		case http.StateNew:
			p.window.open[d].Add(1)
			p.metrics.TCPOpened(labels)
		case http.StateClosed, http.StateHijacked:
			p.window.open[d].Add(-1)
			// A hijacked connection (an upgrade) is counted closed when
			// the server lets go of it; its later bytes are the tunnel's.
			p.metrics.TCPClosed(labels, hc.read.Load(), hc.written.Load())
		}
	}
	e.h1 = httpio.NewServer(h, p.log, func(c net.Conn, st http.ConnState) {
		if hc, ok := c.(*handedConn); ok {
			connState(hc, st)
		}
	}, p.cfg.RequestHeadTimeout, p.cfg.ClientIdleTimeout)
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	e.server = &http.Server{
		Handler:           h,
		Protocols:         &protocols,
		HTTP2:             &http.HTTP2Config{MaxReadFrameSize: httpio.MaxReadFrameSize},
		ReadHeaderTimeout: p.cfg.RequestHeadTimeout,
		IdleTimeout:       p.cfg.ClientIdleTimeout,
		// net/http reports handler panics and broken clients here.
		ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
		ConnState: func(c net.Conn, state http.ConnState) {
			if hc, ok := c.(*handedConn); ok {
				connState(hc, state)
			}
		},
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if hc, ok := c.(*handedConn); ok {
				return context.WithValue(ctx, connInfoKey{}, &hc.info)
			}
			return ctx
		},
	}
	return e
}

// serve serves a detected connection; HTTP/1 on the calling goroutine.
func (e *httpEntry) serve(c net.Conn, dst netip.AddrPort, proto detect.Protocol) {
	hc := &handedConn{Conn: c, slot: connlimit.Of(c)}
	hc.info.dst = dst
	if ra, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		hc.info.source = ra.AddrPort()
	}
	if proto != detect.HTTP2 {
		e.h1.Serve(context.WithValue(context.Background(), connInfoKey{}, &hc.info), hc)
		return
	}
	// The HTTP/2 server flushes every frame; corked, a response's frames
	// leave in one write (see httpio.CorkedConn). It also reads each frame's
	// header and payload with a read apiece, straight from the connection:
	// a buffer takes whatever has arrived at once. The guard refuses what
	// the server would pass on (see httpio.H2Guard).
	hc.Conn = httpio.NewH2Guard(httpio.CorkNow(c), bufio.NewReaderSize(c, 4<<10))
	e.ln.Push(hc)
}

// shutdown lets both servers finish their requests; false: ctx ended first
// and what was left has been closed.
func (e *httpEntry) shutdown(ctx context.Context) bool {
	done := make(chan bool, 1)
	go func() { done <- e.h1.Shutdown(ctx) == nil }()
	ok := e.server.Shutdown(ctx) == nil
	if !<-done || !ok {
		e.server.Close()
		e.h1.Close()
		return false
	}
	return true
}

// handedConn carries connection facts to ConnContext and counts bytes for
// the connection metrics.
type handedConn struct {
	net.Conn
	info connInfo
	// slot is the connection's place on its listener (nil: none), marked
	// busy while a request is in flight and idle between requests.
	slot          *connlimit.Conn
	read, written atomic.Int64
}

func (c *handedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read.Add(int64(n))
	return n, err
}

// Unwrap returns the connection beneath.
func (c *handedConn) Unwrap() net.Conn { return c.Conn }

func (c *handedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.written.Add(int64(n))
	return n, err
}
