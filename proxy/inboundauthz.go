package proxy

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/proxy/authz"
)

// applyPolicy puts in force the inbound policy of a discovery state meant
// for this proxy: the one for its identity, else one for every proxy,
// else none (the default alone). A policy that does not compile leaves
// the last one in force.
func (p *Proxy) applyPolicy(s *discovery.State) {
	own := ""
	if p.cfg.Identity != nil {
		own = p.cfg.Identity.ID.String()
	}
	var mine, anyone *discovery.InboundPolicy
	for i := range s.Policies {
		switch id := s.Policies[i].Identity; {
		case id == "":
			anyone = &s.Policies[i]
		case id == own:
			mine = &s.Policies[i]
		}
	}
	if mine == nil {
		mine = anyone
	}
	pol, err := authz.Compile(mine, p.cfg.DefaultInboundPolicy, p.cfg.ClusterNetworks)
	if err != nil {
		p.log.Error("inbound policy refused; keeping the last one", slog.String("source", s.Source), slog.Any("error", err))
		return
	}
	p.authz.Store(pol)
}

// probeDecision is how a kubelet probe is counted: admitted by the probe
// rule, whatever the policy.
var probeDecision = authz.Decision{Allowed: true, Authorization: "probe"}

// admitRequest applies the inbound policy to a request; a refused one is
// answered here (403, or PERMISSION_DENIED for gRPC) and false returned.
func (p *Proxy) admitRequest(w http.ResponseWriter, r *http.Request, ci *connInfo) bool {
	clientID := ""
	if ci.peer.tls {
		clientID = ci.peer.clientID
	}
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && p.probes[Probe{ci.dst.Port(), r.URL.Path}] {
		p.countDecision("http", probeDecision)
		return true
	}
	d := p.authz.Load().Decide(ci.dst.Port(), clientID, ci.source.Addr())
	p.countDecision("http", d)
	if d.Allowed && !d.Audited {
		return true
	}
	msg := p.denial(d, clientID, ci.source, ci.dst.Port())
	if d.Audited {
		p.log.Info("inbound request would be refused (audit mode: let through)", slog.String("path", r.URL.Path), slog.String("why", msg))
		return true
	}
	target := ci.dst.String()
	id := p.tapStart(r, inbound, target, ci.peer)
	p.fail(w, r, inbound, http.StatusForbidden, "unauthorized", msg)
	if id != 0 {
		grpc := ""
		if w.Header().Get("Grpc-Status") != "" {
			grpc = w.Header().Get("Grpc-Status")
		}
		p.tapEnd(id, r, inbound, target, ci.peer, http.StatusForbidden, grpc, 0, 0, 0, msg)
	}
	return false
}

// admitConn applies the inbound policy to an opaque TCP connection; a
// refused one is closed and false returned.
func (p *Proxy) admitConn(c net.Conn, port uint16, clientID string) bool {
	src := remoteAddrPort(c)
	d := p.authz.Load().Decide(port, clientID, src.Addr())
	p.countDecision("tcp", d)
	if d.Allowed && !d.Audited {
		return true
	}
	msg := p.denial(d, clientID, src, port)
	if d.Audited {
		p.log.Info("inbound connection would be refused (audit mode: let through)", slog.String("why", msg))
		return true
	}
	p.log.Debug("inbound connection refused", slog.String("why", msg))
	c.Close()
	return false
}

// denial says who was refused, by what, and why, for the mesh-error
// header and the log.
func (p *Proxy) denial(d authz.Decision, clientID string, src netip.AddrPort, port uint16) string {
	who := "a client without a mesh identity"
	if clientID != "" {
		who = clientID
	}
	by := fmt.Sprintf("the default policy %s", p.authz.Load().Default())
	if d.Server != "" {
		by = "server " + d.Server
	}
	return fmt.Sprintf("refused by %s on port %d: %s (%s from %s)", by, port, d.Reason, who, src.Addr().Unmap())
}
