// Package authz decides who may reach a workload through its proxy: a
// workload's inbound policy (discovery.InboundPolicy) compiled into a form
// that answers per connection and per request without a lock or an
// allocation. A port that a Server selects admits only what one of the
// Server's authorizations allows; any other port follows the default
// policy.
package authz

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/meshproj/mesh/discovery"
)

// Reasons a client is refused (or, under audit, would be).
const (
	// NoAuthorization: a Server selects the port and none of its
	// authorizations admits the client.
	NoAuthorization = "no authorization admits the client"
	// Unauthenticated: the default policy wants a mesh identity.
	Unauthenticated = "the client proved no mesh identity"
	// NotInCluster: the default policy wants a mesh identity or an
	// address of the cluster's networks.
	NotInCluster = "the client proved no mesh identity and is not on the cluster's networks"
	// DeniedByDefault: the default policy is deny.
	DeniedByDefault = "the default policy denies it"
)

// Decision is what the policy says of one client.
type Decision struct {
	Allowed bool
	// Audited is set when the client is admitted only because the policy
	// is in audit mode: it would have been refused.
	Audited bool
	// Server and Authorization name what decided ("" for the default).
	Server, Authorization string
	// Reason says why the client is (or would be) refused.
	Reason string
}

// DefaultClusterNetworks are what cluster-authenticated admits without an
// identity when none are given: the private and shared address ranges.
var DefaultClusterNetworks = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("172.16.0.0/12"), netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("fd00::/8"),
}

// Policy is a compiled inbound policy. Its zero value is not usable; make
// one with Compile.
type Policy struct {
	src         discovery.InboundPolicy
	def         discovery.DefaultPolicy
	clusterNets []netip.Prefix
	servers     map[uint16]*server
}

type server struct {
	name  string
	authz []authorization
	// opaque: the Server says its port speaks opaque TCP, so the proxy
	// skips protocol detection on it.
	opaque bool
}

type authorization struct {
	name string
	// Identities: any authenticated (anyID), one of exact, or one of
	// patterns; none of them given: no identity needed.
	anyID    bool
	exact    map[string]bool
	patterns []string
	networks []discovery.Network
}

func (a *authorization) needsID() bool { return a.anyID || len(a.exact) > 0 || len(a.patterns) > 0 }

// Compile checks and compiles a policy; ip may be nil (no policy: the
// default alone). fallback is the proxy's own default, used when the
// policy names none; clusterNets are what cluster-authenticated admits
// (nil: DefaultClusterNetworks).
func Compile(ip *discovery.InboundPolicy, fallback discovery.DefaultPolicy, clusterNets []netip.Prefix) (*Policy, error) {
	if clusterNets == nil {
		clusterNets = DefaultClusterNetworks
	}
	p := &Policy{def: fallback, clusterNets: clusterNets, servers: map[uint16]*server{}}
	if ip != nil && ip.Default != "" {
		p.def = ip.Default
	}
	if p.def == "" {
		p.def = discovery.AllUnauthenticated
	}
	if !p.def.Valid() {
		return nil, fmt.Errorf("default policy %q: want one of %v", p.def, discovery.DefaultPolicies)
	}
	if ip == nil {
		p.src.Default = p.def
		return p, nil
	}
	p.src = *ip
	p.src.Default = p.def
	for _, s := range ip.Servers {
		if s.Port == 0 {
			return nil, fmt.Errorf("server %q: no port", s.Name)
		}
		if other, ok := p.servers[s.Port]; ok {
			return nil, fmt.Errorf("servers %q and %q both select port %d", other.name, s.Name, s.Port)
		}
		srv := &server{name: s.Name, opaque: s.Protocol == "opaque"}
		for _, a := range s.Authorizations {
			ca := authorization{name: a.Name, exact: map[string]bool{}, networks: a.Networks}
			for _, id := range a.Identities {
				switch {
				case id == "*":
					ca.anyID = true
				case strings.Contains(id, "*"):
					ca.patterns = append(ca.patterns, id)
				case id == "":
					return nil, fmt.Errorf("server %q, authorization %q: an empty identity", s.Name, a.Name)
				default:
					ca.exact[id] = true
				}
			}
			for _, n := range a.Networks {
				if !n.CIDR.IsValid() {
					return nil, fmt.Errorf("server %q, authorization %q: a network without a CIDR", s.Name, a.Name)
				}
			}
			if !ca.needsID() && len(ca.networks) == 0 {
				return nil, fmt.Errorf("server %q, authorization %q: names no identity and no network, so it would admit everyone; say so with networks 0.0.0.0/0 and ::/0", s.Name, a.Name)
			}
			srv.authz = append(srv.authz, ca)
		}
		p.servers[s.Port] = srv
	}
	return p, nil
}

// Opaque reports whether a Server declares the port opaque TCP.
func (p *Policy) Opaque(port uint16) bool {
	s := p.servers[port]
	return s != nil && s.opaque
}

// Source is the policy as given, with the default in force filled in.
func (p *Policy) Source() discovery.InboundPolicy { return p.src }

// Default is the policy's default.
func (p *Policy) Default() discovery.DefaultPolicy { return p.def }

// Decide says whether a client that proved clientID ("" for none) from
// src may reach port.
func (p *Policy) Decide(port uint16, clientID string, src netip.Addr) Decision {
	var d Decision
	if srv, ok := p.servers[port]; ok {
		d.Server = srv.name
		for i := range srv.authz {
			if a := &srv.authz[i]; a.admits(clientID, src) {
				d.Allowed, d.Authorization = true, a.name
				return d
			}
		}
		d.Reason = NoAuthorization
	} else {
		switch p.def {
		case discovery.AllUnauthenticated, discovery.Audit:
			d.Allowed = true
			return d
		case discovery.AllAuthenticated:
			if clientID != "" {
				d.Allowed = true
				return d
			}
			d.Reason = Unauthenticated
		case discovery.ClusterAuthenticated:
			if clientID != "" || inAny(src, p.clusterNets) {
				d.Allowed = true
				return d
			}
			d.Reason = NotInCluster
		default:
			d.Reason = DeniedByDefault
		}
	}
	if p.def == discovery.Audit {
		d.Allowed, d.Audited = true, true
	}
	return d
}

func (a *authorization) admits(clientID string, src netip.Addr) bool {
	if a.needsID() {
		if clientID == "" {
			return false
		}
		if !a.anyID && !a.exact[clientID] && !matchesAny(a.patterns, clientID) {
			return false
		}
	}
	if len(a.networks) > 0 && !inNetworks(src, a.networks) {
		return false
	}
	return true
}

func matchesAny(patterns []string, id string) bool {
	for _, p := range patterns {
		if Match(p, id) {
			return true
		}
	}
	return false
}

// Match reports whether id matches pattern, where each "*" stands for any
// run of characters other than "/" (within one path segment). It takes
// time linear in the segments' lengths times the stars, whatever the
// pattern.
func Match(pattern, id string) bool {
	for {
		pi, ii := strings.IndexByte(pattern, '/'), strings.IndexByte(id, '/')
		if (pi < 0) != (ii < 0) {
			return false
		}
		if pi < 0 {
			return matchSegment(pattern, id)
		}
		if !matchSegment(pattern[:pi], id[:ii]) {
			return false
		}
		pattern, id = pattern[pi+1:], id[ii+1:]
	}
}

// matchSegment matches within one segment: on a mismatch, the last star
// seen takes one more character and the match resumes after it.
func matchSegment(pattern, s string) bool {
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case p < len(pattern) && pattern[p] == s[i]:
			p++
			i++
		case star >= 0:
			mark++
			p, i = star+1, mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

func inAny(a netip.Addr, prefixes []netip.Prefix) bool {
	a = a.Unmap()
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func inNetworks(a netip.Addr, nets []discovery.Network) bool {
	a = a.Unmap()
	for _, n := range nets {
		if n.CIDR.Contains(a) && !inAny(a, n.Except) {
			return true
		}
	}
	return false
}
