package file

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/meshproj/mesh/discovery"
)

// The discovery file's inbound policies: who may reach each workload, in
// the shape of the policy.mesh.io resources (a Server per port, its
// authorizations naming identities and networks), for the proxies that
// present the policy's identity.
type inboundPolicy struct {
	Identity string      `yaml:"identity"`
	Default  string      `yaml:"default"`
	Servers  []policySrv `yaml:"servers"`
}

type policySrv struct {
	Name           string        `yaml:"name"`
	Port           int           `yaml:"port"`
	Protocol       string        `yaml:"protocol"`
	Authorizations []policyAuthz `yaml:"authorizations"`
}

type policyAuthz struct {
	Name       string          `yaml:"name"`
	Identities []string        `yaml:"identities"`
	Networks   []policyNetwork `yaml:"networks"`
}

type policyNetwork struct {
	CIDR   string   `yaml:"cidr"`
	Except []string `yaml:"except"`
}

var protocols = map[string]bool{"": true, "http1": true, "http2": true, "grpc": true, "opaque": true}

// policies checks the file's inbound policies, naming the line of each
// problem.
func (ps *parser) policies(in []inboundPolicy) ([]discovery.InboundPolicy, error) {
	var out []discovery.InboundPolicy
	seen := map[string]int{}
	for i, p := range in {
		at := func(path ...any) int { return ps.at(append([]any{"policies", i}, path...)...) }
		field := func(f string) string { return fmt.Sprintf("policies[%d].%s", i, f) }
		if prev, dup := seen[p.Identity]; dup {
			return nil, ps.fail(at("identity"), "%s: a second policy for %q (also policies[%d])", field("identity"), p.Identity, prev)
		}
		seen[p.Identity] = i
		ip := discovery.InboundPolicy{Identity: p.Identity, Default: discovery.DefaultPolicy(p.Default)}
		if ip.Default != "" && !ip.Default.Valid() {
			return nil, ps.fail(at("default"), "%s %q is unknown; use one of %v", field("default"), p.Default, discovery.DefaultPolicies)
		}
		ports := map[int]string{}
		for j, s := range p.Servers {
			sat := func(path ...any) int { return at(append([]any{"servers", j}, path...)...) }
			sf := func(f string) string { return field(fmt.Sprintf("servers[%d].%s", j, f)) }
			switch {
			case s.Name == "":
				return nil, ps.fail(sat(), "%s is required", sf("name"))
			case s.Port < 1 || s.Port > 65535:
				return nil, ps.fail(sat("port"), "%s must be 1-65535, got %d", sf("port"), s.Port)
			case !protocols[s.Protocol]:
				return nil, ps.fail(sat("protocol"), "%s %q is unknown; use http1, http2, grpc or opaque", sf("protocol"), s.Protocol)
			}
			if other, dup := ports[s.Port]; dup {
				return nil, ps.fail(sat("port"), "%s: servers %s and %s both select port %d", sf("port"), other, s.Name, s.Port)
			}
			ports[s.Port] = s.Name
			srv := discovery.Server{Name: s.Name, Port: uint16(s.Port), Protocol: s.Protocol}
			for k, a := range s.Authorizations {
				aat := func(path ...any) int { return sat(append([]any{"authorizations", k}, path...)...) }
				af := func(f string) string { return sf(fmt.Sprintf("authorizations[%d].%s", k, f)) }
				if a.Name == "" {
					return nil, ps.fail(aat(), "%s is required", af("name"))
				}
				if len(a.Identities) == 0 && len(a.Networks) == 0 {
					return nil, ps.fail(aat(), "%s (%s) names no identities and no networks; to admit everyone say networks: [{cidr: 0.0.0.0/0}, {cidr: \"::/0\"}]", strings.TrimSuffix(af(""), "."), a.Name)
				}
				da := discovery.Authorization{Name: a.Name}
				for m, id := range a.Identities {
					if id == "" {
						return nil, ps.fail(aat("identities", m), "%s is empty", af(fmt.Sprintf("identities[%d]", m)))
					}
					da.Identities = append(da.Identities, id)
				}
				for m, n := range a.Networks {
					cidr, err := netip.ParsePrefix(n.CIDR)
					if err != nil {
						return nil, ps.fail(aat("networks", m, "cidr"), "%s %q is not a CIDR", af(fmt.Sprintf("networks[%d].cidr", m)), n.CIDR)
					}
					dn := discovery.Network{CIDR: cidr.Masked()}
					for x, e := range n.Except {
						ex, err := netip.ParsePrefix(e)
						if err != nil {
							return nil, ps.fail(aat("networks", m, "except", x), "%s %q is not a CIDR", af(fmt.Sprintf("networks[%d].except[%d]", m, x)), e)
						}
						dn.Except = append(dn.Except, ex.Masked())
					}
					da.Networks = append(da.Networks, dn)
				}
				srv.Authorizations = append(srv.Authorizations, da)
			}
			ip.Servers = append(ip.Servers, srv)
		}
		out = append(out, ip)
	}
	return out, nil
}
