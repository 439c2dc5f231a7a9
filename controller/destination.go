package controller

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
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
	"google.golang.org/genproto/googleapis/rpc/status"
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
	// names holds, by Service (namespace/name), the resource names its
	// ports gave at the last build; routes the routes of that build.
	names  map[string][]string
	routes routeSet
	// dirty names the Services whose resources an event may have changed
	// since the last build, and all says anything may have; byPod holds,
	// by pod, the Services whose endpoints it is (its identity and weight
	// are theirs), and podsOf the same by Service. These four are guarded
	// by dirtyMu: the informers' events read and write them, as the build
	// does.
	dirtyMu sync.Mutex
	dirty   map[string]bool
	all     bool
	byPod   map[string]map[string]bool
	podsOf  map[string]map[string]bool // byPod the other way: by Service, its pods
	changed chan struct{}
	synced  chan struct{}
	once    sync.Once
	warned  map[string]string
	// routeStatus is what the last build found of each route's parents;
	// built is poked after each build.
	routeStatus atomic.Pointer[[]RouteParentStatus]
	built       chan struct{}

	// Counters for the admin endpoint.
	Rebuilds, Streams, Nacks atomic.Int64
	Services                 atomic.Int64
	// Built counts the Services built, by all builds: a change to one
	// Service's endpoints builds that one.
	Built atomic.Int64
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
		d.services = &kubeapi.Informer[kubeapi.Service]{Client: d.Client, Path: "/api/v1/services", Log: d.Log, OnChange: poke, OnEvent: d.serviceEvent,
			Meta: func(s *kubeapi.Service) *kubeapi.ObjectMeta { return &s.Metadata }}
		d.endpoints = &kubeapi.Informer[kubeapi.EndpointSlice]{Client: d.Client, Path: "/apis/discovery.k8s.io/v1/endpointslices", Log: d.Log, OnChange: poke, OnEvent: d.sliceEvent,
			Meta: func(s *kubeapi.EndpointSlice) *kubeapi.ObjectMeta { return &s.Metadata }}
		d.pods = &kubeapi.Informer[kubeapi.Pod]{Client: d.Client, Path: "/api/v1/pods", Log: d.Log, OnChange: poke, OnEvent: d.podEvent,
			Meta: func(p *kubeapi.Pod) *kubeapi.ObjectMeta { return &p.Metadata }}
		d.httpRoutes = &kubeapi.Informer[httpRoute]{Client: d.Client, Path: httpRoutesPath, Log: d.Log, OnChange: poke, Optional: true,
			OnEvent: func(_, _ *httpRoute) { d.markAll() }, Meta: func(r *httpRoute) *kubeapi.ObjectMeta { return &r.Metadata }}
		d.grpcRoutes = &kubeapi.Informer[grpcRoute]{Client: d.Client, Path: grpcRoutesPath, Log: d.Log, OnChange: poke, Optional: true,
			OnEvent: func(_, _ *grpcRoute) { d.markAll() }, Meta: func(r *grpcRoute) *kubeapi.ObjectMeta { return &r.Metadata }}
		// Each replica and each restart counts versions from zero: the
		// prefix names this process, so that a version a proxy got from
		// another one never reads as current here.
		prefix := strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
		d.caches = map[string]*cache.LinearCache{}
		for _, t := range xdsres.Types {
			d.caches[t] = cache.NewLinearCache(t, cache.WithVersionPrefix(prefix))
		}
		d.current = map[string]*xdsres.Resources{}
		d.names = map[string][]string{}
		d.dirty = map[string]bool{}
		d.all = true
		d.byPod = map[string]map[string]bool{}
		d.podsOf = map[string]map[string]bool{}
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

// Callbacks count streams and log refused updates, of either variant of
// the protocol: mesh proxies speak the incremental one, grpc-go's xDS
// clients the state-of-the-world one.
func (d *Destination) Callbacks() server.Callbacks {
	open := func(context.Context, int64, string) error { d.Streams.Add(1); return nil }
	closed := func(int64, *corev3.Node) { d.Streams.Add(-1) }
	refused := func(node *corev3.Node, typ string, detail *status.Status) {
		if detail != nil {
			d.Nacks.Add(1)
			d.Log.Warn("a client refused an xDS update", slog.String("node", node.GetId()),
				slog.String("type", typ), slog.String("error", detail.GetMessage()))
		}
	}
	return server.CallbackFuncs{
		StreamOpenFunc: open, StreamClosedFunc: closed, DeltaStreamOpenFunc: open, DeltaStreamClosedFunc: closed,
		StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
			refused(r.GetNode(), r.GetTypeUrl(), r.GetErrorDetail())
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			refused(r.GetNode(), r.GetTypeUrl(), r.GetErrorDetail())
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

// markAll has the next build build everything: after a fresh list, or a
// change that can reach any Service (a route, or a Service that appeared
// or went, which routes may name).
func (d *Destination) markAll() {
	d.dirtyMu.Lock()
	d.all = true
	d.dirtyMu.Unlock()
}

func (d *Destination) mark(keys ...string) {
	d.dirtyMu.Lock()
	for _, k := range keys {
		d.dirty[k] = true
	}
	d.dirtyMu.Unlock()
}

func (d *Destination) serviceEvent(old, cur *kubeapi.Service) {
	// Routes attach to a Service's ports, and take an ExternalName one for
	// none.
	if old == nil || cur == nil || old.Spec.Type != cur.Spec.Type || !reflect.DeepEqual(old.Spec.Ports, cur.Spec.Ports) {
		d.markAll()
		return
	}
	d.mark(cur.Metadata.Key())
}

// sliceEvent marks the Service a slice is of, before and after.
func (d *Destination) sliceEvent(old, cur *kubeapi.EndpointSlice) {
	if old == nil && cur == nil {
		d.markAll()
		return
	}
	for _, es := range []*kubeapi.EndpointSlice{old, cur} {
		if es == nil {
			continue
		}
		if name := es.Metadata.Labels[kubeapi.ServiceNameLabel]; name != "" {
			d.mark(es.Metadata.Namespace + "/" + name)
		}
	}
}

// podEvent marks the Services a pod is an endpoint of, when what they
// take from it (its identity and weight) may have changed: a pod's status
// changes often, and touches none of them.
func (d *Destination) podEvent(old, cur *kubeapi.Pod) {
	if old == nil && cur == nil {
		d.markAll()
		return
	}
	if old != nil && cur != nil && old.Spec.ServiceAccountName == cur.Spec.ServiceAccountName &&
		old.Metadata.Annotations[wellknown.AnnotationWeight] == cur.Metadata.Annotations[wellknown.AnnotationWeight] &&
		old.Metadata.Annotations[wellknown.AnnotationInjectedBy] == cur.Metadata.Annotations[wellknown.AnnotationInjectedBy] {
		return
	}
	p := old
	if p == nil {
		p = cur
	}
	d.dirtyMu.Lock()
	for k := range d.byPod[p.Metadata.Key()] {
		d.dirty[k] = true
	}
	d.dirtyMu.Unlock()
}

// rebuild builds the Services that changed (all of them after a fresh
// list or a change to routes) and updates only the resources that differ.
func (d *Destination) rebuild() {
	d.Rebuilds.Add(1)
	d.dirtyMu.Lock()
	all, dirty := d.all, d.dirty
	d.all, d.dirty = false, map[string]bool{}
	d.dirtyMu.Unlock()

	var built map[string]builtService
	if all {
		built, d.routes = d.buildAll()
		d.routeStatus.Store(&d.routes.statuses)
	} else {
		built = d.buildSome(dirty, d.routes)
	}
	updates := map[string]map[string]types.Resource{}
	for _, t := range xdsres.Types {
		updates[t] = map[string]types.Resource{}
	}
	var gone []string
	for key, b := range built {
		if said := strings.Join(b.problems, "; "); said != d.warned[key] {
			for _, p := range b.problems {
				d.Log.Warn("service annotation ignored", slog.String("service", key), slog.String("problem", p))
			}
			d.warned[key] = said
		}
		now := map[string]bool{}
		for _, svc := range b.services {
			r, err := xdsres.Encode(&svc)
			if err != nil {
				d.Log.Error("encoding a service", slog.String("service", svc.Key().String()), slog.Any("error", err))
				continue
			}
			name := xdsres.Name(r.ServiceKey)
			now[name] = true
			old := d.current[name]
			for _, t := range xdsres.Types {
				if old == nil || !proto.Equal(old.Of(t), r.Of(t)) {
					updates[t][name] = r.Of(t)
				}
			}
			d.current[name] = r
		}
		for _, name := range d.names[key] {
			if !now[name] {
				gone = append(gone, name)
				delete(d.current, name)
			}
		}
		if len(now) == 0 {
			delete(d.names, key)
		} else {
			d.names[key] = slices.Sorted(maps.Keys(now))
		}
		d.Built.Add(1)
	}
	if all {
		// What no Service gave this time (it went) is gone too.
		for key, names := range d.names {
			if _, ok := built[key]; ok {
				continue
			}
			gone = append(gone, names...)
			for _, name := range names {
				delete(d.current, name)
			}
			delete(d.names, key)
		}
	}
	d.dirtyMu.Lock()
	for key, b := range built {
		d.indexPodsLocked(key, b.pods)
	}
	if all {
		for key := range d.podsOf {
			if _, ok := built[key]; !ok {
				d.indexPodsLocked(key, nil)
			}
		}
	}
	d.dirtyMu.Unlock()
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
	d.Services.Store(int64(len(d.current)))
	select {
	case d.built <- struct{}{}:
	default:
	}
}

// indexPodsLocked records that Service key's endpoints are pods (none:
// it is gone), in byPod and podsOf.
func (d *Destination) indexPodsLocked(key string, pods map[string]bool) {
	for pod := range d.podsOf[key] {
		if !pods[pod] {
			delete(d.byPod[pod], key)
			if len(d.byPod[pod]) == 0 {
				delete(d.byPod, pod)
			}
		}
	}
	for pod := range pods {
		if d.byPod[pod] == nil {
			d.byPod[pod] = map[string]bool{}
		}
		d.byPod[pod][key] = true
	}
	if len(pods) == 0 {
		delete(d.podsOf, key)
	} else {
		d.podsOf[key] = pods
	}
}

// builtService is what one Service gave: an entry per TCP port, and the
// pods its endpoints are.
type builtService struct {
	services []discovery.Service
	pods     map[string]bool
	// problems are its annotations' problems.
	problems []string
}

// Build is the discovery model of the whole cluster, one entry per TCP
// service port, in a stable order.
func (d *Destination) Build() []discovery.Service {
	d.init()
	var out []discovery.Service
	all, _ := d.buildAll()
	for _, b := range all {
		out = append(out, b.services...)
	}
	slices.SortFunc(out, func(a, b discovery.Service) int { return strings.Compare(a.Key().String(), b.Key().String()) })
	return out
}

// buildAll builds every Service, and the routes.
func (d *Destination) buildAll() (map[string]builtService, routeSet) {
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
	out := make(map[string]builtService, len(services))
	for key, svc := range services {
		out[key] = d.buildService(svc, bySvc[key], routes)
	}
	return out, routes
}

// buildSome builds the Services keys names, with the routes of the last
// full build (a change to routes, or to which Services exist, builds
// everything). A Service that is gone builds as none.
func (d *Destination) buildSome(keys map[string]bool, routes routeSet) map[string]builtService {
	bySvc := map[string][]*kubeapi.EndpointSlice{}
	for _, es := range d.endpoints.List() {
		if name := es.Metadata.Labels[kubeapi.ServiceNameLabel]; name != "" {
			if k := es.Metadata.Namespace + "/" + name; keys[k] {
				bySvc[k] = append(bySvc[k], es)
			}
		}
	}
	out := make(map[string]builtService, len(keys))
	for key := range keys {
		svc := d.services.Get(key)
		if svc == nil || svc.Spec.Type == "ExternalName" {
			out[key] = builtService{}
			continue
		}
		out[key] = d.buildService(svc, bySvc[key], routes)
	}
	return out
}

// buildService is one Service's entries, one per TCP port, from its
// slices.
func (d *Destination) buildService(svc *kubeapi.Service, eslices []*kubeapi.EndpointSlice, routes routeSet) builtService {
	m := &svc.Metadata
	lb, hash, opaque, problems := serviceSettings(m.Annotations)
	fh, more := failureAnnotations(m.Annotations)
	problems = append(problems, more...)
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
	out := builtService{pods: map[string]bool{}, problems: problems}
	for _, port := range svc.Spec.Ports {
		if port.Protocol != "" && port.Protocol != "TCP" {
			continue
		}
		s := discovery.Service{
			Name: host, Port: uint16(port.Port), LoadBalancer: lb, HashKey: hash,
			Opaque: opaque[port.Port], Addresses: vips,
			Timeouts: fh.timeouts, Retries: fh.retries, FailureAccrual: fh.accrual, Limits: fh.limits,
		}
		s.Endpoints = d.endpointsOf(eslices, port.Name, out.pods)
		s.Routes = routes.byPort[m.Key()+":"+strconv.Itoa(int(port.Port))]
		out.services = append(out.services, s)
	}
	return out
}

// host is a Service's fully qualified name.
func (d *Destination) host(namespace, name string) string {
	return name + "." + namespace + ".svc." + d.ClusterDomain
}

// endpointsOf collects the ready endpoints of a service port from its
// slices (where a port is matched by name), with the identity of meshed
// pods, and adds the pods it names to pods.
func (d *Destination) endpointsOf(eslices []*kubeapi.EndpointSlice, portName string, pods map[string]bool) []discovery.Endpoint {
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
			if r := ep.TargetRef; r != nil && r.Kind == "Pod" {
				pods[r.Namespace+"/"+r.Name] = true
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
