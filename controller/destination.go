package controller

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/discovery/xdsres"
	"github.com/meshproj/mesh/kubeapi"
	"github.com/meshproj/mesh/wellknown"
)

// Destination turns the cluster's Services, EndpointSlices and Pods into
// xDS resources: for each service port a Listener, a Cluster and a
// ClusterLoadAssignment, all named <service>.<namespace>.svc.<domain>:<port>.
// It keeps them in caches that answer each subscriber only for the names
// it asked for, so a proxy that talks to three services hears of three.
type Destination struct {
	Client        *kubeapi.Client
	ClusterDomain string
	TrustDomain   string
	Log           *slog.Logger

	services   *kubeapi.Informer[kubeapi.Service]
	endpoints  *kubeapi.Informer[kubeapi.EndpointSlice]
	pods       *kubeapi.Informer[kubeapi.Pod]
	httpRoutes *kubeapi.Informer[httpRoute]
	grpcRoutes *kubeapi.Informer[grpcRoute]
	caches     map[string]*cache.LinearCache
	current    map[string]*xdsres.Resources
	changed    chan struct{}
	synced     chan struct{}
	once       sync.Once
	warned     map[string]string
	// routeStatus is what the last build found of each route's parents;
	// built is poked after each build.
	routeStatus atomic.Pointer[[]RouteParentStatus]
	built       chan struct{}

	// Counters for the admin endpoint.
	Rebuilds, Streams, Nacks atomic.Int64
	Services                 atomic.Int64
}

func (d *Destination) init() {
	d.once.Do(func() {
		if d.ClusterDomain == "" {
			d.ClusterDomain = "cluster.local"
		}
		if d.Log == nil {
			d.Log = slog.Default()
		}
		d.changed = make(chan struct{}, 1)
		d.built = make(chan struct{}, 1)
		d.synced = make(chan struct{})
		poke := func() {
			select {
			case d.changed <- struct{}{}:
			default:
			}
		}
		d.services = &kubeapi.Informer[kubeapi.Service]{Client: d.Client, Path: "/api/v1/services", Log: d.Log, OnChange: poke,
			Meta: func(s *kubeapi.Service) *kubeapi.ObjectMeta { return &s.Metadata }}
		d.endpoints = &kubeapi.Informer[kubeapi.EndpointSlice]{Client: d.Client, Path: "/apis/discovery.k8s.io/v1/endpointslices", Log: d.Log, OnChange: poke,
			Meta: func(s *kubeapi.EndpointSlice) *kubeapi.ObjectMeta { return &s.Metadata }}
		d.pods = &kubeapi.Informer[kubeapi.Pod]{Client: d.Client, Path: "/api/v1/pods", Log: d.Log, OnChange: poke,
			Meta: func(p *kubeapi.Pod) *kubeapi.ObjectMeta { return &p.Metadata }}
		d.httpRoutes = &kubeapi.Informer[httpRoute]{Client: d.Client, Path: httpRoutesPath, Log: d.Log, OnChange: poke, Optional: true,
			Meta: func(r *httpRoute) *kubeapi.ObjectMeta { return &r.Metadata }}
		d.grpcRoutes = &kubeapi.Informer[grpcRoute]{Client: d.Client, Path: grpcRoutesPath, Log: d.Log, OnChange: poke, Optional: true,
			Meta: func(r *grpcRoute) *kubeapi.ObjectMeta { return &r.Metadata }}
		// Each replica and each restart counts versions from zero: the
		// prefix names this process, so that a version a proxy got from
		// another one never reads as current here.
		prefix := strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
		d.caches = map[string]*cache.LinearCache{}
		for _, t := range xdsres.Types {
			d.caches[t] = cache.NewLinearCache(t, cache.WithVersionPrefix(prefix))
		}
		d.current = map[string]*xdsres.Resources{}
		d.warned = map[string]string{}
	})
}

// Synced is closed once the first lists are in and resources built: before
// that the xDS server must not answer, or it would tell proxies that
// services they use are gone.
func (d *Destination) Synced() <-chan struct{} {
	d.init()
	return d.synced
}

// Cache is what the xDS server serves.
func (d *Destination) Cache() cache.Cache {
	d.init()
	caches := map[string]cache.Cache{}
	for t, c := range d.caches {
		caches[t] = c
	}
	return &cache.MuxCache{
		Classify:      func(r *cache.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cache.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        caches,
	}
}

// Callbacks count streams and log refused updates.
func (d *Destination) Callbacks() server.Callbacks {
	return server.CallbackFuncs{
		StreamOpenFunc: func(context.Context, int64, string) error { d.Streams.Add(1); return nil },
		StreamClosedFunc: func(int64, *corev3.Node) {
			d.Streams.Add(-1)
		},
		StreamRequestFunc: func(id int64, r *discoveryv3.DiscoveryRequest) error {
			if r.GetErrorDetail() != nil {
				d.Nacks.Add(1)
				d.Log.Warn("a client refused an xDS update", slog.String("node", r.GetNode().GetId()),
					slog.String("type", r.GetTypeUrl()), slog.String("error", r.GetErrorDetail().GetMessage()))
			}
			return nil
		},
	}
}

// Run watches the API server and keeps the caches current until ctx ends.
func (d *Destination) Run(ctx context.Context) error {
	d.init()
	go d.services.Run(ctx)
	go d.endpoints.Run(ctx)
	go d.pods.Run(ctx)
	go d.httpRoutes.Run(ctx)
	go d.grpcRoutes.Run(ctx)
	syncThenRebuild(ctx, []<-chan struct{}{d.services.Synced(), d.endpoints.Synced(), d.pods.Synced(), d.httpRoutes.Synced(), d.grpcRoutes.Synced()}, d.changed, d.rebuild, d.synced,
		func() { d.Log.Info("discovery synced", slog.Int64("service_ports", d.Services.Load())) })
	return nil
}

// rebuild computes every resource and updates only those that changed.
func (d *Destination) rebuild() {
	d.Rebuilds.Add(1)
	want := map[string]*xdsres.Resources{}
	for _, svc := range d.Build() {
		r, err := xdsres.Encode(&svc)
		if err != nil {
			d.Log.Error("encoding a service", slog.String("service", svc.Key().String()), slog.Any("error", err))
			continue
		}
		want[xdsres.Name(r.ServiceKey)] = r
	}
	updates := map[string]map[string]types.Resource{}
	for _, t := range xdsres.Types {
		updates[t] = map[string]types.Resource{}
	}
	for name, r := range want {
		old := d.current[name]
		for _, t := range xdsres.Types {
			if old == nil || !proto.Equal(old.Of(t), r.Of(t)) {
				updates[t][name] = r.Of(t)
			}
		}
	}
	var gone []string
	for name := range d.current {
		if want[name] == nil {
			gone = append(gone, name)
		}
	}
	// Endpoints first and listeners last, so that whoever follows a new
	// name finds everything behind it.
	for _, t := range xdsres.Types {
		if len(updates[t]) == 0 && len(gone) == 0 {
			continue
		}
		if err := d.caches[t].UpdateResources(updates[t], gone); err != nil {
			d.Log.Error("updating the xDS cache", slog.String("type", t), slog.Any("error", err))
		}
	}
	d.current = want
	d.Services.Store(int64(len(want)))
	select {
	case d.built <- struct{}{}:
	default:
	}
}

// Build is the discovery model of the whole cluster, one entry per TCP
// service port, in a stable order.
func (d *Destination) Build() []discovery.Service {
	d.init()
	bySvc := map[string][]*kubeapi.EndpointSlice{}
	for _, es := range d.endpoints.List() {
		if name := es.Metadata.Labels[kubeapi.ServiceNameLabel]; name != "" {
			k := es.Metadata.Namespace + "/" + name
			bySvc[k] = append(bySvc[k], es)
		}
	}
	services := map[string]*kubeapi.Service{}
	for _, svc := range d.services.List() {
		if svc.Spec.Type != "ExternalName" {
			services[svc.Metadata.Key()] = svc
		}
	}
	routes := buildRoutes(services, d.httpRoutes.List(), d.grpcRoutes.List(), d.host)
	d.routeStatus.Store(&routes.statuses)
	var out []discovery.Service
	for _, svc := range services {
		m := &svc.Metadata
		lb, hash, opaque, problems := serviceSettings(m.Annotations)
		fh, more := failureAnnotations(m.Annotations)
		problems = append(problems, more...)
		if said := strings.Join(problems, "; "); said != d.warned[m.Key()] {
			for _, p := range problems {
				d.Log.Warn("service annotation ignored", slog.String("service", m.Key()), slog.String("problem", p))
			}
			d.warned[m.Key()] = said
		}
		var vips []netip.Addr
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 && svc.Spec.ClusterIP != "" {
			ips = []string{svc.Spec.ClusterIP}
		}
		for _, ip := range ips {
			if a, err := netip.ParseAddr(ip); err == nil {
				vips = append(vips, a)
			}
		}
		host := d.host(m.Namespace, m.Name)
		for _, port := range svc.Spec.Ports {
			if port.Protocol != "" && port.Protocol != "TCP" {
				continue
			}
			s := discovery.Service{
				Name: host, Port: uint16(port.Port), LoadBalancer: lb, HashKey: hash,
				Opaque: opaque[port.Port], Addresses: vips,
				Timeouts: fh.timeouts, Retries: fh.retries, FailureAccrual: fh.accrual, Limits: fh.limits,
			}
			s.Endpoints = d.endpointsOf(bySvc[m.Key()], port.Name)
			s.Routes = routes.byPort[m.Key()+":"+strconv.Itoa(int(port.Port))]
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b discovery.Service) int { return strings.Compare(a.Key().String(), b.Key().String()) })
	return out
}

// host is a Service's fully qualified name.
func (d *Destination) host(namespace, name string) string {
	return name + "." + namespace + ".svc." + d.ClusterDomain
}

// endpointsOf collects the ready endpoints of a service port from its
// slices (where a port is matched by name), with the identity of meshed
// pods.
func (d *Destination) endpointsOf(eslices []*kubeapi.EndpointSlice, portName string) []discovery.Endpoint {
	seen := map[netip.AddrPort]bool{}
	var out []discovery.Endpoint
	for _, es := range eslices {
		if es.AddressType != "IPv4" && es.AddressType != "IPv6" {
			continue
		}
		var port int32
		for _, p := range es.Ports {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			if name == portName && p.Port != nil && (p.Protocol == nil || *p.Protocol == "TCP") {
				port = *p.Port
			}
		}
		if port <= 0 || port > 65535 {
			continue
		}
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			id, weight := d.podIdentity(ep.TargetRef)
			zone := ""
			if ep.Zone != nil {
				zone = *ep.Zone
			}
			for _, a := range ep.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil {
					continue
				}
				ap := netip.AddrPortFrom(ip, uint16(port))
				if seen[ap] {
					continue
				}
				seen[ap] = true
				out = append(out, discovery.Endpoint{Address: ap, Weight: weight, Identity: id, Zone: zone})
			}
		}
	}
	slices.SortFunc(out, func(a, b discovery.Endpoint) int { return a.Address.Compare(b.Address) })
	return out
}

// podIdentity is the SPIFFE ID a meshed pod's proxy presents (empty for
// pods without the proxy) and the pod's endpoint weight.
func (d *Destination) podIdentity(ref *kubeapi.ObjectReference) (string, uint32) {
	if ref == nil || ref.Kind != "Pod" {
		return "", 1
	}
	pod := d.pods.Get(ref.Namespace + "/" + ref.Name)
	if pod == nil {
		return "", 1
	}
	weight := uint32(1)
	if w, err := strconv.ParseUint(pod.Metadata.Annotations[wellknown.AnnotationWeight], 10, 32); err == nil && w > 0 {
		weight = uint32(w)
	}
	if pod.Metadata.Annotations[wellknown.AnnotationInjectedBy] == "" {
		return "", weight
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	return "spiffe://" + d.TrustDomain + "/ns/" + pod.Metadata.Namespace + "/sa/" + sa, weight
}

// serviceSettings reads a Service's mesh annotations. A bad value is
// reported and the default used, so one typo does not take a service out
// of discovery.
func serviceSettings(ann map[string]string) (discovery.LoadBalancer, discovery.HashKey, map[int32]bool, []string) {
	var problems []string
	lb := discovery.PeakEWMA
	if v, ok := ann[wellknown.AnnotationLoadBalancer]; ok {
		if l := discovery.LoadBalancer(strings.TrimSpace(v)); l.Valid() {
			lb = l
		} else {
			names := make([]string, len(discovery.LoadBalancers))
			for i, l := range discovery.LoadBalancers {
				names[i] = string(l)
			}
			problems = append(problems, fmt.Sprintf("%s: unknown balancer %q (want one of %s); using %s", wellknown.AnnotationLoadBalancer, v, strings.Join(names, ", "), discovery.PeakEWMA))
		}
	}
	var hash discovery.HashKey
	if v, ok := ann[wellknown.AnnotationHashKey]; ok {
		kind, arg, _ := strings.Cut(strings.TrimSpace(v), ":")
		switch {
		case kind == "header" && arg != "":
			hash.Header = arg
		case kind == "cookie" && arg != "":
			hash.Cookie = arg
		case kind == "source-ip" && arg == "":
			hash.SourceIP = true
		default:
			problems = append(problems, fmt.Sprintf("%s: %q is not header:<name>, cookie:<name> or source-ip", wellknown.AnnotationHashKey, v))
		}
		if !lb.Hashing() && !hash.IsZero() {
			problems = append(problems, fmt.Sprintf("%s is only used by ring-hash and maglev, but the balancer is %s", wellknown.AnnotationHashKey, lb))
			hash = discovery.HashKey{}
		}
	}
	if lb.Hashing() && hash.IsZero() {
		hash.SourceIP = true
	}
	opaque := map[int32]bool{}
	if v := ann[wellknown.AnnotationOpaquePorts]; v != "" {
		for f := range strings.SplitSeq(v, ",") {
			n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 16)
			if err != nil || n == 0 {
				problems = append(problems, fmt.Sprintf("%s: %q is not a port", wellknown.AnnotationOpaquePorts, f))
				continue
			}
			opaque[int32(n)] = true
		}
	}
	return lb, hash, opaque, problems
}
