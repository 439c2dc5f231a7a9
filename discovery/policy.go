package discovery

import "net/netip"

// DefaultPolicy is what a proxy does with an inbound connection to a port
// no Server selects (and, before any policy has arrived, with every one).
type DefaultPolicy string

// Default inbound policies.
const (
	// AllUnauthenticated admits everyone (the mesh's default).
	AllUnauthenticated DefaultPolicy = "all-unauthenticated"
	// AllAuthenticated admits clients that proved a mesh identity (mTLS).
	AllAuthenticated DefaultPolicy = "all-authenticated"
	// ClusterAuthenticated admits mesh clients and clients from the
	// cluster's networks.
	ClusterAuthenticated DefaultPolicy = "cluster-authenticated"
	// Deny admits nobody.
	Deny DefaultPolicy = "deny"
	// Audit admits everyone, but counts and logs what the policy would deny.
	Audit DefaultPolicy = "audit"
)

// DefaultPolicies lists them, as users write them.
var DefaultPolicies = []DefaultPolicy{AllUnauthenticated, AllAuthenticated, ClusterAuthenticated, Deny, Audit}

// Valid reports whether p is a known default policy.
func (p DefaultPolicy) Valid() bool {
	for _, d := range DefaultPolicies {
		if p == d {
			return true
		}
	}
	return false
}

// InboundPolicy is who may reach a workload's ports through its proxy.
type InboundPolicy struct {
	// Identity picks the proxies it applies to by the identity they
	// present (a discovery file serves every proxy of a local mesh); empty
	// applies to every proxy the state reaches.
	Identity string `json:"identity,omitempty"`
	// Default applies to ports no Server selects; empty keeps the proxy's
	// own (--default-inbound-policy).
	Default DefaultPolicy `json:"default,omitempty"`
	// Servers select ports; a port with a Server admits only what one of
	// its authorizations allows.
	Servers []Server `json:"servers,omitempty"`
}

// Server is a port of the workload, as a policy refers to it.
type Server struct {
	Name string `json:"name"`
	Port uint16 `json:"port"`
	// Protocol is http1, http2, grpc or opaque; empty: detected.
	Protocol       string          `json:"protocol,omitempty"`
	Authorizations []Authorization `json:"authorizations,omitempty"`
}

// Authorization admits clients to a Server: those that proved one of
// Identities (when given) and come from one of Networks (when given).
type Authorization struct {
	// Name is the AuthorizationPolicy's, for metrics and errors.
	Name string `json:"name"`
	// Identities are SPIFFE IDs; "*" in one matches any run of characters
	// within a path segment (spiffe://cluster.local/ns/shop/sa/*), and "*"
	// alone any authenticated client.
	Identities []string `json:"identities,omitempty"`
	// Networks admit by the client's address.
	Networks []Network `json:"networks,omitempty"`
}

// Network is a CIDR with exceptions.
type Network struct {
	CIDR   netip.Prefix   `json:"cidr"`
	Except []netip.Prefix `json:"except,omitempty"`
}
