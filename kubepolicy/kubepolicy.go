// Package kubepolicy reads the policy.mesh.io resources (Server,
// AuthorizationPolicy, MeshTLSAuthentication, NetworkAuthentication): it
// turns those of a pod's namespace into the pod's inbound policy, as the
// controller serves it to the pod's proxy, and finds what is wrong with
// them, as mesh check reports it. It decodes what the API server serves;
// it talks to no API server itself.
package kubepolicy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/kubeapi"
)

// The policy.mesh.io resources, as far as the mesh reads them.
type (
	// Server selects a port of the pods its podSelector matches.
	Server struct {
		Metadata kubeapi.ObjectMeta `json:"metadata"`
		Spec     struct {
			PodSelector   LabelSelector `json:"podSelector"`
			Port          any           `json:"port"` // a number or a container port's name
			ProxyProtocol string        `json:"proxyProtocol"`
		} `json:"spec"`
	}
	// AuthorizationPolicy admits to its target (a Server, or every Server
	// of a namespace) the clients that meet all its authentications.
	AuthorizationPolicy struct {
		Metadata kubeapi.ObjectMeta `json:"metadata"`
		Spec     struct {
			TargetRef                  Ref   `json:"targetRef"`
			RequiredAuthenticationRefs []Ref `json:"requiredAuthenticationRefs"`
		} `json:"spec"`
	}
	// MeshTLSAuthentication names mesh identities.
	MeshTLSAuthentication struct {
		Metadata kubeapi.ObjectMeta `json:"metadata"`
		Spec     struct {
			Identities   []string `json:"identities"`
			IdentityRefs []Ref    `json:"identityRefs"`
		} `json:"spec"`
	}
	// NetworkAuthentication names client networks.
	NetworkAuthentication struct {
		Metadata kubeapi.ObjectMeta `json:"metadata"`
		Spec     struct {
			Networks []struct {
				CIDR   string   `json:"cidr"`
				Except []string `json:"except"`
			} `json:"networks"`
		} `json:"spec"`
	}
	// Ref refers to another resource.
	Ref struct {
		Kind      string `json:"kind"`
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	}
	// LabelSelector is a Kubernetes label selector.
	LabelSelector struct {
		MatchLabels      map[string]string `json:"matchLabels"`
		MatchExpressions []struct {
			Key      string   `json:"key"`
			Operator string   `json:"operator"`
			Values   []string `json:"values"`
		} `json:"matchExpressions"`
	}
	// Pod is what a pod's policy depends on: its labels and named
	// container ports.
	Pod struct {
		Metadata kubeapi.ObjectMeta `json:"metadata"`
		Spec     struct {
			Containers []struct {
				Ports []struct {
					Name          string `json:"name"`
					ContainerPort int    `json:"containerPort"`
				} `json:"ports"`
			} `json:"containers"`
		} `json:"spec"`
	}
)

// Matches reports whether labels satisfy the selector.
func (s *LabelSelector) Matches(labels map[string]string) bool {
	for k, v := range s.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	for _, e := range s.MatchExpressions {
		v, has := labels[e.Key]
		switch e.Operator {
		case "In":
			if !has || !slices.Contains(e.Values, v) {
				return false
			}
		case "NotIn":
			if has && slices.Contains(e.Values, v) {
				return false
			}
		case "Exists":
			if !has {
				return false
			}
		case "DoesNotExist":
			if has {
				return false
			}
		default:
			return false
		}
	}
	return true
}

var protocolOf = map[string]string{"HTTP/1": "http1", "HTTP/2": "http2", "gRPC": "grpc", "opaque": "opaque"}

// Set is the policy.mesh.io resources of the cluster (or of the
// namespaces at hand). The authentications are keyed by namespace/name.
type Set struct {
	Servers               []*Server
	AuthorizationPolicies []*AuthorizationPolicy
	MeshTLS               map[string]*MeshTLSAuthentication
	Networks              map[string]*NetworkAuthentication
}

// ForPod is a pod's inbound policy from the resources of its namespace:
// each Server that selects the pod, with the authorizations of the
// AuthorizationPolicies that target it (or the namespace). What is wrong
// (a reference to nothing, a port the pod lacks, two Servers on one port)
// admits nothing rather than too much; Problems says what it is.
func (s *Set) ForPod(pod *Pod, trustDomain string) discovery.InboundPolicy {
	ns := pod.Metadata.Namespace
	var ip discovery.InboundPolicy
	taken := map[uint16]bool{}
	for _, sv := range s.selecting(pod) {
		port, ok := serverPort(pod, sv.Spec.Port)
		if !ok || taken[port] {
			continue
		}
		taken[port] = true
		srv := discovery.Server{Name: sv.Metadata.Name, Port: port, Protocol: protocolOf[sv.Spec.ProxyProtocol]}
		for _, ap := range s.AuthorizationPolicies {
			if ap.Metadata.Namespace != ns || !ap.targets(sv) {
				continue
			}
			if a, err := s.authorization(ap, trustDomain); err == nil {
				srv.Authorizations = append(srv.Authorizations, a)
			}
		}
		ip.Servers = append(ip.Servers, srv)
	}
	slices.SortFunc(ip.Servers, func(a, b discovery.Server) int { return int(a.Port) - int(b.Port) })
	return ip
}

// selecting lists the Servers that select the pod, oldest first (of two
// on one port, the older wins), then by name.
func (s *Set) selecting(pod *Pod) []*Server {
	var out []*Server
	for _, sv := range s.Servers {
		if sv.Metadata.Namespace == pod.Metadata.Namespace && sv.Spec.PodSelector.Matches(pod.Metadata.Labels) {
			out = append(out, sv)
		}
	}
	slices.SortFunc(out, func(a, b *Server) int {
		if c := a.Metadata.CreationTimestamp.Compare(b.Metadata.CreationTimestamp); c != 0 {
			return c
		}
		return strings.Compare(a.Metadata.Name, b.Metadata.Name)
	})
	return out
}

// targets reports whether the policy applies to a Server of its namespace.
func (ap *AuthorizationPolicy) targets(sv *Server) bool {
	t := ap.Spec.TargetRef
	return t.Kind == "Server" && t.Name == sv.Metadata.Name || t.Kind == "Namespace" && t.Name == sv.Metadata.Namespace
}

func serverPort(pod *Pod, port any) (uint16, bool) {
	valid := func(n float64) (uint16, bool) {
		if n < 1 || n > 65535 || n != float64(int(n)) {
			return 0, false
		}
		return uint16(n), true
	}
	switch p := port.(type) {
	case float64:
		return valid(p)
	case string:
		if n, err := strconv.Atoi(p); err == nil {
			return valid(float64(n))
		}
		for _, c := range pod.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == p {
					return valid(float64(cp.ContainerPort))
				}
			}
		}
	}
	return 0, false
}

// authorization turns an AuthorizationPolicy into what the proxy checks:
// every required authentication must hold (identities and networks).
func (s *Set) authorization(ap *AuthorizationPolicy, trustDomain string) (discovery.Authorization, error) {
	ns := ap.Metadata.Namespace
	a := discovery.Authorization{Name: ap.Metadata.Name}
	identitiesSet := false
	for _, r := range ap.Spec.RequiredAuthenticationRefs {
		rns := r.Namespace
		if rns == "" {
			rns = ns
		}
		switch r.Kind {
		case "ServiceAccount":
			if identitiesSet {
				return a, fmt.Errorf("more than one identity requirement; name them in one MeshTLSAuthentication")
			}
			identitiesSet = true
			a.Identities = []string{fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", trustDomain, rns, r.Name)}
		case "MeshTLSAuthentication":
			m := s.MeshTLS[rns+"/"+r.Name]
			if m == nil {
				return a, fmt.Errorf("meshtlsauthentication %s/%s does not exist", rns, r.Name)
			}
			if identitiesSet {
				return a, fmt.Errorf("more than one identity requirement; name them in one MeshTLSAuthentication")
			}
			identitiesSet = true
			for i, id := range m.Spec.Identities {
				if id == "" {
					return a, fmt.Errorf("meshtlsauthentication %s/%s: identities[%d] is empty", rns, r.Name, i)
				}
			}
			a.Identities = append(a.Identities, m.Spec.Identities...)
			for _, ir := range m.Spec.IdentityRefs {
				irns := ir.Namespace
				if irns == "" {
					irns = rns
				}
				switch ir.Kind {
				case "ServiceAccount":
					a.Identities = append(a.Identities, fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", trustDomain, irns, ir.Name))
				case "Namespace":
					name := ir.Name
					if name == "" {
						name = irns
					}
					a.Identities = append(a.Identities, fmt.Sprintf("spiffe://%s/ns/%s/sa/*", trustDomain, name))
				}
			}
		case "NetworkAuthentication":
			n := s.Networks[rns+"/"+r.Name]
			if n == nil {
				return a, fmt.Errorf("networkauthentication %s/%s does not exist", rns, r.Name)
			}
			if len(a.Networks) > 0 {
				return a, fmt.Errorf("more than one NetworkAuthentication; list the networks in one")
			}
			for _, nw := range n.Spec.Networks {
				cidr, err := netip.ParsePrefix(nw.CIDR)
				if err != nil {
					return a, fmt.Errorf("networkauthentication %s/%s: %q is not a CIDR", rns, r.Name, nw.CIDR)
				}
				dn := discovery.Network{CIDR: cidr.Masked()}
				for _, e := range nw.Except {
					ex, err := netip.ParsePrefix(e)
					if err != nil {
						return a, fmt.Errorf("networkauthentication %s/%s: except %q is not a CIDR", rns, r.Name, e)
					}
					dn.Except = append(dn.Except, ex.Masked())
				}
				a.Networks = append(a.Networks, dn)
			}
		default:
			return a, fmt.Errorf("requiredAuthenticationRefs: unknown kind %q", r.Kind)
		}
	}
	if len(a.Identities) == 0 && len(a.Networks) == 0 {
		// No requirement: everyone, as the CRD documents.
		a.Networks = []discovery.Network{{CIDR: netip.MustParsePrefix("0.0.0.0/0")}, {CIDR: netip.MustParsePrefix("::/0")}}
	}
	return a, nil
}
