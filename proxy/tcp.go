package proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/proxy/balance"
	"github.com/meshproj/mesh/proxy/connlimit"
	"github.com/meshproj/mesh/proxy/detect"
	"github.com/meshproj/mesh/proxy/httpio"
	"github.com/meshproj/mesh/proxy/rawsock"
)

// forwardOutboundTCP balances one opaque connection over a service's
// endpoints: TCP is balanced per connection.
func (p *Proxy) forwardOutboundTCP(c net.Conn, key discovery.Key, _ []byte) {
	svc, err := p.lookup(context.Background(), key)
	if err != nil {
		p.log.Warn("outbound TCP connection refused", slog.String("service", key.String()), slog.Any("error", err))
		p.metrics.HTTPErrors.WithLabelValues(outbound.String(), "unknown_service").Inc()
		c.Close()
		return
	}
	var hash uint64
	if svc.balancer.Algorithm().Hashing() {
		if ra, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			hash = balance.HashAddr(ra.AddrPort().Addr())
		}
	}
	// A connection that fails to open carried nothing: try another endpoint.
	pol := svc.policy.Load()
	var tried [maxTries]*balance.Endpoint
	for attempt := range min(pol.maxRetries+1, maxTries) {
		ep, err := (&balancingTransport{p: p, svc: svc}).pickTCP(hash, pol, tried[:attempt])
		if err != nil {
			p.log.Warn("outbound TCP connection refused", slog.String("service", svc.authority), slog.Any("error", err))
			p.metrics.HTTPErrors.WithLabelValues(outbound.String(), "no_endpoints").Inc()
			c.Close()
			return
		}
		tried[attempt] = ep
		start := ep.Begin()
		var server net.Conn
		var pr peer
		if p.cfg.Identity != nil && ep.Identity != "" {
			pr = peer{tls: true, serverID: ep.Identity}
			server, err = p.dialMesh(context.Background(), ep.Addr, []string{alpnTCP})
		} else {
			server, err = net.DialTimeout("tcp", ep.Addr, p.cfg.ConnectTimeout)
		}
		if err != nil {
			ep.Done()
			svc.balancer.Report(ep, false)
			p.log.Warn("TCP connect failed", slog.String("service", svc.authority), slog.String("endpoint", ep.Addr), slog.Any("error", err))
			p.metrics.HTTPErrors.WithLabelValues(outbound.String(), "connect_failed").Inc()
			continue
		}
		ep.Observe(start)
		svc.balancer.Report(ep, true)
		p.pipe(c, server, outbound, svc.authority, ep.Addr, pr)
		ep.Done()
		return
	}
	c.Close()
}

// pickTCP picks an endpoint for a connection, waiting up to the queue
// timeout when none is available.
func (t *balancingTransport) pickTCP(hash uint64, pol *policy, tried []*balance.Endpoint) (*balance.Endpoint, error) {
	req := &http.Request{Header: http.Header{}}
	ctx, cancel := context.WithTimeout(context.Background(), pol.queueTimeout+time.Second)
	defer cancel()
	if hash != 0 && len(tried) == 0 {
		if e := t.svc.balancer.Pick(hash); e != nil {
			return e, nil
		}
	}
	// A connection that fails to open is tried elsewhere: any may probe.
	return t.pick(ctx, req, pol, tried, true)
}

// forwardOriginalDst forwards an intercepted opaque connection to where
// the client was going.
func (p *Proxy) forwardOriginalDst(c net.Conn, dst netip.AddrPort, _ []byte) {
	if svc := p.vip(context.Background(), dst); svc != nil {
		p.forwardOutboundTCP(c, svc.settings.Load().Key(), nil)
		return
	}
	target := dst.String()
	if id, ok := p.meshIDs.Load(target); ok && p.cfg.Identity != nil {
		server, err := p.dialMesh(context.Background(), target, []string{alpnTCP})
		if err != nil {
			p.log.Warn("TCP connect failed", slog.String("target", target), slog.Any("error", err))
			c.Close()
			return
		}
		p.pipe(c, server, outbound, target, target, peer{tls: true, serverID: id.(string)})
		return
	}
	p.dialAndPipe(c, outbound, target)
}

// forwardInboundTCP forwards an opaque connection to the local app.
func (p *Proxy) forwardInboundTCP(c net.Conn, target netip.AddrPort) {
	if !p.admitConn(c, target.Port(), "") {
		return
	}
	p.dialAndPipe(c, inbound, target.String())
}

func (p *Proxy) dialAndPipe(c net.Conn, d direction, target string) {
	server, err := net.DialTimeout("tcp", target, p.cfg.ConnectTimeout)
	if err != nil {
		p.log.Warn("TCP connect failed", slog.String("direction", d.String()), slog.String("target", target), slog.Any("error", err))
		p.metrics.HTTPErrors.WithLabelValues(d.String(), "connect_failed").Inc()
		c.Close()
		return
	}
	p.pipe(c, server, d, target, target, peer{})
}

// pipe copies bytes both ways between client and server until both sides
// are done, keeping half-closes (a client that shuts down writing still
// gets its answer).
func (p *Proxy) pipe(client, server net.Conn, d direction, authority, target string, pr peer) {
	labels := pr.labels(d, authority, target)
	p.metrics.TCPOpened(&labels)
	p.window.open[d].Add(1)
	defer p.window.open[d].Add(-1)
	connlimit.Busy(client) // a stream holds its place until it ends
	p.tcpConns.add(client)
	defer p.tcpConns.remove(client)

	p.tcpConns.add(server)
	defer p.tcpConns.remove(server)

	var wg sync.WaitGroup
	var fromClient int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		fromClient = copyConn(server, client)
		httpio.CloseWrite(server)
	}()
	toClient := copyConn(client, server)
	httpio.CloseWrite(client)
	wg.Wait()
	client.Close()
	server.Close()
	p.metrics.TCPClosed(&labels, fromClient, toClient)
}

// copyConn copies src to dst. Bytes peeked during detection go first; the
// rest is copied between the raw TCP connections, which lets the kernel
// splice them without passing through user space.
func copyConn(dst, src net.Conn) int64 {
	var n int64
	if dc, ok := src.(*detect.Conn); ok {
		if pre := dc.TakePrefix(); len(pre) > 0 {
			m, err := dst.Write(pre)
			n += int64(m)
			if err != nil {
				return n
			}
		}
	}
	m, _ := io.Copy(bare(dst), bare(src))
	return n + m
}

// bare strips what only peeks at reads (its prefix already taken) or
// counts a listener's places, so that io.Copy finds the TCP connections.
func bare(c net.Conn) net.Conn {
	for {
		switch v := c.(type) {
		case *detect.Conn:
			c = v.Unwrap()
		case *connlimit.Conn:
			c = v.Unwrap()
		case *rawsock.Conn:
			c = v.Unwrap()
		default:
			return c
		}
	}
}
