package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/discovery/xdswire"
	"github.com/meshproj/mesh/kubeapi"
)

// The policy.mesh.io resources, as far as the controller reads them.
type (
	policyServer struct {
		Metadata kubeapi.ObjectMeta `json:"metadata"`
		Spec     struct {
			PodSelector   labelSelector `json:"podSelector"`
			Port          any           `json:"port"` // a number or a container port's name
			ProxyProtocol string        `json:"proxyProtocol"`
		} `json:"spec"`
	}
	authorizationPolicy struct {
		Metadata kubeapi.ObjectMeta `json:"metadata"`
		Spec     struct {
			TargetRef                  policyRef   `json:"targetRef"`
			RequiredAuthenticationRefs []policyRef `json:"requiredAuthenticationRefs"`
		} `json:"spec"`
	}
	meshTLSAuthentication struct {
		Metadata kubeapi.ObjectMeta `json:"metadata"`
		Spec     struct {
			Identities   []string    `json:"identities"`
			IdentityRefs []policyRef `json:"identityRefs"`
		} `json:"spec"`
	}
	networkAuthentication struct {
		Metadata kubeapi.ObjectMeta `json:"metadata"`
		Spec     struct {
			Networks []struct {
				CIDR   string   `json:"cidr"`
				Except []string `json:"except"`
			} `json:"networks"`
		} `json:"spec"`
	}
	policyRef struct {
		Kind      string `json:"kind"`
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	}
	labelSelector struct {
		MatchLabels      map[string]string `json:"matchLabels"`
		MatchExpressions []struct {
			Key      string   `json:"key"`
			Operator string   `json:"operator"`
			Values   []string `json:"values"`
		} `json:"matchExpressions"`
	}
	// policyPod is what a pod's policy depends on: its labels and named
	// container ports.
	policyPod struct {
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

func (s *labelSelector) matches(labels map[string]string) bool {
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

// podPolicy is a pod's inbound policy from the policies of its namespace:
// each Server that selects the pod, with the authorizations of the
// AuthorizationPolicies that target it (or the namespace). Problems (a
// reference to nothing, a port no container has) are returned to be
// logged; what they concern admits nothing rather than too much.
func podPolicy(pod *policyPod, trustDomain string, servers []*policyServer, aps []*authorizationPolicy,
	mtls map[string]*meshTLSAuthentication, nets map[string]*networkAuthentication) (discovery.InboundPolicy, []string) {
	ns := pod.Metadata.Namespace
	var ip discovery.InboundPolicy
	var problems []string
	for _, s := range servers {
		if s.Metadata.Namespace != ns || !s.Spec.PodSelector.matches(pod.Metadata.Labels) {
			continue
		}
		port, ok := serverPort(pod, s.Spec.Port)
		if !ok {
			problems = append(problems, fmt.Sprintf("server %s/%s: port %v is no container port of pod %s", ns, s.Metadata.Name, s.Spec.Port, pod.Metadata.Name))
			continue
		}
		srv := discovery.Server{Name: s.Metadata.Name, Port: port, Protocol: protocolOf[s.Spec.ProxyProtocol]}
		for _, ap := range aps {
			t := ap.Spec.TargetRef
			if ap.Metadata.Namespace != ns || !(t.Kind == "Server" && t.Name == s.Metadata.Name || t.Kind == "Namespace" && t.Name == ns) {
				continue
			}
			a, err := authorization(ap, trustDomain, mtls, nets)
			if err != nil {
				problems = append(problems, fmt.Sprintf("authorizationpolicy %s/%s: %v", ns, ap.Metadata.Name, err))
				continue
			}
			srv.Authorizations = append(srv.Authorizations, a)
		}
		if slices.ContainsFunc(ip.Servers, func(o discovery.Server) bool { return o.Port == port }) {
			problems = append(problems, fmt.Sprintf("server %s/%s: another server already selects port %d of pod %s", ns, s.Metadata.Name, port, pod.Metadata.Name))
			continue
		}
		ip.Servers = append(ip.Servers, srv)
	}
	slices.SortFunc(ip.Servers, func(a, b discovery.Server) int { return int(a.Port) - int(b.Port) })
	return ip, problems
}

func serverPort(pod *policyPod, port any) (uint16, bool) {
	switch p := port.(type) {
	case float64:
		return uint16(p), p >= 1 && p <= 65535
	case string:
		if n, err := strconv.Atoi(p); err == nil {
			return uint16(n), n >= 1 && n <= 65535
		}
		for _, c := range pod.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == p {
					return uint16(cp.ContainerPort), true
				}
			}
		}
	}
	return 0, false
}

// authorization turns an AuthorizationPolicy into what the proxy checks:
// every required authentication must hold (identities and networks).
func authorization(ap *authorizationPolicy, trustDomain string, mtls map[string]*meshTLSAuthentication, nets map[string]*networkAuthentication) (discovery.Authorization, error) {
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
			m := mtls[rns+"/"+r.Name]
			if m == nil {
				return a, fmt.Errorf("meshtlsauthentication %s/%s does not exist", rns, r.Name)
			}
			if identitiesSet {
				return a, fmt.Errorf("more than one identity requirement; name them in one MeshTLSAuthentication")
			}
			identitiesSet = true
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
			n := nets[rns+"/"+r.Name]
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

// Policies serves each meshed pod its inbound policy over xDS, as a
// resource its proxy asks for by name (xdswire.InboundPolicyName), built
// from the policy.mesh.io resources of the pod's namespace.
type Policies struct {
	Client      *kubeapi.Client
	TrustDomain string
	Log         *slog.Logger

	once     sync.Once
	pods     *kubeapi.Informer[policyPod]
	servers  *kubeapi.Informer[policyServer]
	aps      *kubeapi.Informer[authorizationPolicy]
	mtls     *kubeapi.Informer[meshTLSAuthentication]
	nets     *kubeapi.Informer[networkAuthentication]
	cache    *cache.LinearCache
	current  map[string]string // resource name -> JSON
	warned   map[string]bool
	changed  chan struct{}
	synced   chan struct{}
	Rebuilds atomic.Int64
}

func (p *Policies) init() {
	p.once.Do(func() {
		p.changed = make(chan struct{}, 1)
		p.synced = make(chan struct{})
		poke := func() {
			select {
			case p.changed <- struct{}{}:
			default:
			}
		}
		const api = "/apis/policy.mesh.io/v1alpha1/"
		p.pods = &kubeapi.Informer[policyPod]{Client: p.Client, Path: "/api/v1/pods", Log: p.Log, OnChange: poke,
			Meta: func(o *policyPod) *kubeapi.ObjectMeta { return &o.Metadata }}
		p.servers = &kubeapi.Informer[policyServer]{Client: p.Client, Path: api + "servers", Log: p.Log, OnChange: poke, Optional: true,
			Meta: func(o *policyServer) *kubeapi.ObjectMeta { return &o.Metadata }}
		p.aps = &kubeapi.Informer[authorizationPolicy]{Client: p.Client, Path: api + "authorizationpolicies", Log: p.Log, OnChange: poke, Optional: true,
			Meta: func(o *authorizationPolicy) *kubeapi.ObjectMeta { return &o.Metadata }}
		p.mtls = &kubeapi.Informer[meshTLSAuthentication]{Client: p.Client, Path: api + "meshtlsauthentications", Log: p.Log, OnChange: poke, Optional: true,
			Meta: func(o *meshTLSAuthentication) *kubeapi.ObjectMeta { return &o.Metadata }}
		p.nets = &kubeapi.Informer[networkAuthentication]{Client: p.Client, Path: api + "networkauthentications", Log: p.Log, OnChange: poke, Optional: true,
			Meta: func(o *networkAuthentication) *kubeapi.ObjectMeta { return &o.Metadata }}
		p.cache = cache.NewLinearCache(xdswire.InboundPolicyType, cache.WithVersionPrefix(strconv.FormatInt(time.Now().UnixNano(), 36)+"-"))
		p.current = map[string]string{}
		p.warned = map[string]bool{}
	})
}

// Cache is what the xDS server serves for the policy type.
func (p *Policies) Cache() *cache.LinearCache { p.init(); return p.cache }

// Synced is closed once every pod's policy is built: before that a proxy
// must not hear that it has none.
func (p *Policies) Synced() <-chan struct{} { p.init(); return p.synced }

// Run watches the API server and keeps the policies current.
func (p *Policies) Run(ctx context.Context) error {
	p.init()
	for _, inf := range []interface{ Run(context.Context) }{p.pods, p.servers, p.aps, p.mtls, p.nets} {
		go inf.Run(ctx)
	}
	syncThenRebuild(ctx, []<-chan struct{}{p.pods.Synced(), p.servers.Synced(), p.aps.Synced(), p.mtls.Synced(), p.nets.Synced()},
		p.changed, p.rebuild, p.synced, nil)
	return nil
}

func (p *Policies) rebuild() {
	p.Rebuilds.Add(1)
	mtls := map[string]*meshTLSAuthentication{}
	for _, m := range p.mtls.List() {
		mtls[m.Metadata.Namespace+"/"+m.Metadata.Name] = m
	}
	nets := map[string]*networkAuthentication{}
	for _, n := range p.nets.List() {
		nets[n.Metadata.Namespace+"/"+n.Metadata.Name] = n
	}
	servers, aps := p.servers.List(), p.aps.List()
	want := map[string]string{}
	for _, pod := range p.pods.List() {
		ip, problems := podPolicy(pod, p.TrustDomain, servers, aps, mtls, nets)
		for _, pr := range problems {
			if !p.warned[pr] {
				p.warned[pr] = true
				p.Log.Warn("inbound policy: "+pr, slog.String("pod", pod.Metadata.Namespace+"/"+pod.Metadata.Name))
			}
		}
		b, err := json.Marshal(ip)
		if err != nil {
			continue
		}
		want[xdswire.InboundPolicyName(pod.Metadata.Namespace, pod.Metadata.Name)] = string(b)
	}
	updates := map[string]types.Resource{}
	for name, js := range want {
		if p.current[name] != js {
			updates[name] = wrapperspb.Bytes([]byte(js))
		}
	}
	var gone []string
	for name := range p.current {
		if _, ok := want[name]; !ok {
			gone = append(gone, name)
		}
	}
	if len(updates) > 0 || len(gone) > 0 {
		if err := p.cache.UpdateResources(updates, gone); err != nil {
			p.Log.Error("updating inbound policies", slog.Any("error", err))
			return
		}
	}
	p.current = want
}
