package proxy

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshproj/mesh/proxy/connlimit"
)

// What a client may hold and for how long. SECURITY.md says who reaches
// which listener; these bound what each of them can cost.
const (
	// DefaultMaxConnections bounds each traffic listener. A connection that
	// has sent half a request head costs the proxy about 12 KB (its
	// goroutine's stack, the head buffer, the request parsed so far;
	// measured with 10,000 of them), so a full listener costs some 60 MB
	// on top of an idle proxy's 25: within the injected 250Mi limit with
	// both the inbound and the outbound listener full.
	DefaultMaxConnections = 5000
	// DefaultAdminMaxConnections bounds the admin listener: probes and
	// scrapes need a handful.
	DefaultAdminMaxConnections = 256
	// DefaultRequestHeadTimeout bounds how long a client may take to send a
	// request head once it has started one.
	DefaultRequestHeadTimeout = 30 * time.Second
	// DefaultClientIdleTimeout closes a client's keep-alive connection that
	// has sat between requests this long.
	DefaultClientIdleTimeout = 90 * time.Second
)

// reclaimAfter is how far the open connections must have fallen from their
// peak before the proxy hands freed memory back to the kernel at once: Go's
// runtime would otherwise keep the heap it grew to for minutes, and a pod
// that weathered a flood of connections would stay at its peak.
const reclaimAfter = 2000

// bound wraps a listener in its connection bound, counted in the metrics.
func (p *Proxy) bound(ln net.Listener, name string, max int) *connlimit.Listener {
	l := connlimit.New(ln, name, max, p.log, connlimit.Hooks{
		Refused: func() { p.metrics.ConnectionsRefused.WithLabelValues(name, "limit").Inc() },
		Evicted: func(wasIdle bool) {
			state := "fresh"
			if wasIdle {
				state = "idle"
			}
			p.metrics.ConnectionsEvicted.WithLabelValues(name, state).Inc()
		},
	})
	labels := prometheus.Labels{"listener": name}
	if p.registered[name] {
		return l // several outbound TCP listeners share one series
	}
	p.registered[name] = true
	p.metrics.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "listener_connections", Help: "Connections holding a place on the listener now.", ConstLabels: labels,
		}, func() float64 { return float64(p.openConns(name)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "listener_connections_max", Help: "The most connections the listener holds at once.", ConstLabels: labels,
		}, func() float64 { return float64(max) }),
	)
	return l
}

func (p *Proxy) openConns(name string) int {
	n := 0
	for _, l := range p.bounded {
		if l.Name() == name {
			n += l.Open()
		}
	}
	return n
}

// ownPorts are the ports the proxy listens on itself. An inbound connection
// whose original destination is one of them is refused: forwarded, it would
// reach the proxy's own outbound side (and send requests into the mesh with
// this pod's identity), an outbound TCP port, the admin endpoints as a
// loopback client, or the inbound listener again.
func ownPorts(lns ...net.Listener) map[uint16]bool {
	ports := map[uint16]bool{}
	for _, ln := range lns {
		if a, ok := ln.Addr().(*net.TCPAddr); ok {
			ports[uint16(a.Port)] = true
		}
	}
	return ports
}

// refuseOwnPort reports whether an inbound connection must be refused for
// the port it was meant for, and counts it.
func (p *Proxy) refuseOwnPort(c net.Conn, dst netip.AddrPort) bool {
	if p.cfg.InboundForward != "" || !dst.IsValid() || !p.ownPorts[dst.Port()] {
		return false
	}
	p.log.Debug("inbound connection refused: it was meant for one of the proxy's own listeners",
		slog.String("client", c.RemoteAddr().String()), slog.String("original_destination", dst.String()))
	p.metrics.ConnectionsRefused.WithLabelValues(inbound.String(), "proxy_port").Inc()
	c.Close()
	return true
}

// reclaimMemory returns freed memory to the kernel when the connections
// open have fallen well below their recent peak.
func (p *Proxy) reclaimMemory(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	high := 0 // the most open at once since memory was last returned
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		peak, open := 0, 0
		for _, l := range p.bounded {
			peak += l.TakePeak()
			open += l.Open()
		}
		high = max(high, peak)
		if high-open >= reclaimAfter {
			start := time.Now()
			debug.FreeOSMemory()
			p.log.Info("returned memory to the kernel after a fall in open connections",
				slog.Int("peak", high), slog.Int("open", open), slog.Duration("took", time.Since(start).Round(time.Millisecond)))
			high = open
		}
	}
}
