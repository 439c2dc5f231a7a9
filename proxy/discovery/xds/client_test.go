package xds

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/discovery/xdsres"
)

// controlPlane is a real go-control-plane server on loopback.
type controlPlane struct {
	t      *testing.T
	addr   string
	srv    *grpc.Server
	caches map[string]*cache.LinearCache
	mu     sync.Mutex
	nacks  []string
	// sent counts, by type, the resources sent in responses; dropped the
	// names unsubscribed from.
	sent    map[string]int
	dropped []string
}

func startControlPlane(t *testing.T, addr string, services ...discovery.Service) *controlPlane {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cp := &controlPlane{t: t, addr: ln.Addr().String(), srv: grpc.NewServer(), caches: map[string]*cache.LinearCache{}, sent: map[string]int{}}
	mux := &cache.MuxCache{Classify: func(r *cache.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cache.DeltaRequest) string { return r.GetTypeUrl() }, Caches: map[string]cache.Cache{}}
	prefix := strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
	for _, typ := range xdsres.Types {
		cp.caches[typ] = cache.NewLinearCache(typ, cache.WithVersionPrefix(prefix))
		mux.Caches[typ] = cp.caches[typ]
	}
	for i := range services {
		cp.set(&services[i])
	}
	cb := server.CallbackFuncs{
		StreamDeltaRequestFunc: func(_ int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			cp.mu.Lock()
			defer cp.mu.Unlock()
			if r.GetErrorDetail() != nil {
				cp.nacks = append(cp.nacks, r.GetErrorDetail().GetMessage())
			}
			for _, n := range r.GetResourceNamesUnsubscribe() {
				cp.dropped = append(cp.dropped, r.GetTypeUrl()+" "+n)
			}
			return nil
		},
		StreamDeltaResponseFunc: func(_ int64, _ *discoveryv3.DeltaDiscoveryRequest, r *discoveryv3.DeltaDiscoveryResponse) {
			cp.mu.Lock()
			cp.sent[r.GetTypeUrl()] += len(r.GetResources())
			cp.mu.Unlock()
		},
	}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(cp.srv, server.NewServer(t.Context(), mux, cb))
	go cp.srv.Serve(ln)
	t.Cleanup(cp.srv.Stop)
	return cp
}

func (cp *controlPlane) set(s *discovery.Service) *xdsres.Resources {
	r, err := xdsres.Encode(s)
	if err != nil {
		cp.t.Fatal(err)
	}
	name := xdsres.Name(s.Key())
	for _, typ := range xdsres.Types {
		if err := cp.caches[typ].UpdateResource(name, r.Of(typ)); err != nil {
			cp.t.Fatal(err)
		}
	}
	return r
}

// sentOf is how many resources of a type responses have carried.
func (cp *controlPlane) sentOf(typ string) int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.sent[typ]
}

func (cp *controlPlane) remove(k discovery.Key) {
	for _, typ := range xdsres.Types {
		cp.caches[typ].DeleteResource(xdsres.Name(k))
	}
}

// states records what the backend delivers.
type states struct {
	mu   sync.Mutex
	last discovery.State
	n    int
}

func (s *states) update(st discovery.State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last, s.n = st, s.n+1
}

func (s *states) service(host string) *discovery.Service {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.last.Services {
		if s.last.Services[i].Name == host {
			return &s.last.Services[i]
		}
	}
	return nil
}

func (s *states) waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func svc(name string, port uint16, vip string, eps ...string) discovery.Service {
	s := discovery.Service{Name: name, Port: port, LoadBalancer: discovery.RoundRobin}
	if vip != "" {
		s.Addresses = []netip.Addr{netip.MustParseAddr(vip)}
	}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, discovery.Endpoint{Address: netip.MustParseAddrPort(e), Weight: 1})
	}
	return s
}

func startBackend(t *testing.T, addr string) (*Backend, *states) {
	b := &Backend{Addr: addr, NodeID: "test.shop", Namespace: "shop"}
	st := &states{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx, st.update); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return b, st
}

func within(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	_ = cancel
	return ctx
}

func TestOnDemandSubscription(t *testing.T) {
	web := svc("web.shop.svc.cluster.local", 80, "10.96.0.10", "127.0.0.1:8081")
	api := svc("api.shop.svc.cluster.local", 8080, "10.96.0.11", "127.0.0.1:9091", "127.0.0.1:9092")
	cp := startControlPlane(t, "", web, api)
	b, st := startBackend(t, cp.addr)

	if err := b.Want(within(5*time.Second), discovery.Key{Host: "web", Port: 80}); err != nil {
		t.Fatal("web:80 not found")
	}
	got := st.service("web.shop.svc.cluster.local")
	if got == nil || len(got.Endpoints) != 1 || len(got.Aliases) != 1 || got.Aliases[0] != "web" || len(got.Addresses) != 1 {
		t.Fatalf("web delivered as %+v", got)
	}
	if st.service("api.shop.svc.cluster.local") != nil {
		t.Fatal("api was delivered without being asked for")
	}
	// Unknown names and ports fail at once, without waiting out ctx.
	start := time.Now()
	for _, k := range []discovery.Key{{Host: "nope", Port: 80}, {Host: "web", Port: 81}} {
		err := b.Want(within(5*time.Second), k)
		if !errors.Is(err, discovery.ErrNotFound) || !strings.Contains(err.Error(), "knows no "+k.Host) {
			t.Errorf("%s: %v", k, err)
		}
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("unknown names took %s", time.Since(start))
	}
	// By virtual IP, as intercepted traffic asks.
	if err := b.WantAddr(within(5*time.Second), netip.MustParseAddrPort("10.96.0.11:8080")); err != nil {
		t.Fatal("api's VIP not found")
	}
	if got := st.service("api.shop.svc.cluster.local"); got == nil || len(got.Endpoints) != 2 {
		t.Fatalf("api delivered as %+v", got)
	}
	if err := b.WantAddr(within(time.Second), netip.MustParseAddrPort("10.96.0.99:80")); !errors.Is(err, discovery.ErrNotFound) {
		t.Fatalf("an address that is no service: %v", err)
	}
	if st := b.Status().(Status); !st.Connected || st.Known != 2 || len(st.Subscribed) != 2 {
		t.Errorf("status %+v", st)
	}

	// Endpoint changes reach the proxy; so does a deletion.
	api.Endpoints = api.Endpoints[:1]
	cp.set(&api)
	st.waitFor(t, "api to shrink to one endpoint", func() bool {
		s := st.service("api.shop.svc.cluster.local")
		return s != nil && len(s.Endpoints) == 1
	})
	cp.remove(web.Key())
	st.waitFor(t, "web to go", func() bool { return st.service("web.shop.svc.cluster.local") == nil })

	// A cluster the proxy cannot use is refused (NACK) and the last good
	// state kept.
	bad, err := xdsres.Encode(&api)
	if err != nil {
		t.Fatal(err)
	}
	bad.Cluster.Metadata.FilterMetadata[xdsres.MetadataKey].Fields["balancer"] = structpb.NewStringValue("fastest")
	if err := cp.caches[xdsres.ClusterType].UpdateResource(xdsres.Name(api.Key()), bad.Cluster); err != nil {
		t.Fatal(err)
	}
	st.waitFor(t, "the NACK", func() bool {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		return len(cp.nacks) > 0
	})
	if s := st.service("api.shop.svc.cluster.local"); s == nil || s.LoadBalancer != discovery.RoundRobin {
		t.Fatalf("after a refused update api is %+v", s)
	}
}

func TestControlPlaneRestartKeepsState(t *testing.T) {
	api := svc("api.shop.svc.cluster.local", 8080, "", "127.0.0.1:9091", "127.0.0.1:9092")
	web := svc("web.shop.svc.cluster.local", 80, "", "127.0.0.1:8081")
	cp := startControlPlane(t, "", api, web)
	b, st := startBackend(t, cp.addr)
	if err := b.Want(within(5*time.Second), discovery.Key{Host: "api.shop", Port: 8080}); err != nil {
		t.Fatal("api not found")
	}
	cp.srv.Stop()
	time.Sleep(300 * time.Millisecond)
	if s := st.service("api.shop.svc.cluster.local"); s == nil || len(s.Endpoints) != 2 {
		t.Fatalf("with the control plane gone api is %+v", s)
	}
	if status := b.Status().(Status); status.Connected || status.LastError == "" {
		t.Errorf("with the control plane gone the status is %+v", status)
	}
	// A service not asked for before cannot be had now, and the error
	// says why.
	if err := b.Want(within(300*time.Millisecond), discovery.Key{Host: "web.shop", Port: 80}); err == nil || errors.Is(err, discovery.ErrNotFound) || !strings.Contains(err.Error(), "not connected") {
		t.Errorf("asking with the control plane gone: %v", err)
	}
	// A new control plane on the same address, with a third endpoint.
	api.Endpoints = append(api.Endpoints, discovery.Endpoint{Address: netip.MustParseAddrPort("127.0.0.1:9093"), Weight: 1})
	startControlPlane(t, cp.addr, api, web)
	st.waitFor(t, "the new control plane's endpoints", func() bool {
		s := st.service("api.shop.svc.cluster.local")
		return s != nil && len(s.Endpoints) == 3 && len(s.Aliases) == 1
	})
}

func TestNoStateBeforeTheControllerAnswers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, st := startBackend(t, addr)
	time.Sleep(300 * time.Millisecond)
	st.mu.Lock()
	n := st.n
	st.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d states delivered with no controller: the proxy would be ready without knowing any service", n)
	}
	startControlPlane(t, addr, svc("web.shop.svc.cluster.local", 80, "", "127.0.0.1:8081"))
	st.waitFor(t, "the first state", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.n > 0
	})
}

func TestCandidates(t *testing.T) {
	b := &Backend{Namespace: "shop", ClusterDomain: "cluster.local"}
	for host, want := range map[string]string{
		"web":                         "web.shop.svc.cluster.local",
		"web.other":                   "web.other.svc.cluster.local",
		"web.other.svc":               "web.other.svc.cluster.local",
		"web.other.svc.cluster.local": "web.other.svc.cluster.local",
		"example.com.with.many.dots":  "example.com.with.many.dots",
	} {
		if got := b.candidates(host); got[0] != want {
			t.Errorf("%s: %v, want %s first", host, got, want)
		}
	}
}

// TestAChangeTravelsAlone: one service's new endpoints are one resource on
// the wire, and the state delivered names that service alone as changed,
// however many the proxy holds.
func TestAChangeTravelsAlone(t *testing.T) {
	var all []discovery.Service
	for i := range 5 {
		all = append(all, svc("s"+strconv.Itoa(i)+".shop.svc.cluster.local", 80, "", "127.0.0.1:"+strconv.Itoa(9000+i)))
	}
	cp := startControlPlane(t, "", all...)
	b, st := startBackend(t, cp.addr)
	for i := range all {
		if err := b.Want(within(5*time.Second), discovery.Key{Host: "s" + strconv.Itoa(i), Port: 80}); err != nil {
			t.Fatal(err)
		}
	}
	before := cp.sentOf(xdsres.EndpointType)
	changed := all[3]
	changed.Endpoints = append(changed.Endpoints, discovery.Endpoint{Address: netip.MustParseAddrPort("127.0.0.1:9999"), Weight: 1})
	cp.set(&changed)
	st.waitFor(t, "s3's second endpoint", func() bool {
		s := st.service(changed.Name)
		return s != nil && len(s.Endpoints) == 2
	})
	st.mu.Lock()
	last := st.last
	st.mu.Unlock()
	if len(last.Services) != 5 || len(last.Changed) != 1 || !last.Changed[changed.Key()] {
		t.Errorf("the state after one change holds %d services and names %v as changed, want 5 and only %s", len(last.Services), last.Changed, changed.Key())
	}
	// The Cluster (and the others) came again too: set writes every type.
	if n := cp.sentOf(xdsres.EndpointType) - before; n != 1 {
		t.Errorf("one service's change sent %d endpoint resources, want 1", n)
	}
}

// TestReleaseEndsASubscription: a released service is no longer delivered
// or sent, and asking for it again brings it back as it is now.
func TestReleaseEndsASubscription(t *testing.T) {
	web := svc("web.shop.svc.cluster.local", 80, "", "127.0.0.1:8081")
	api := svc("api.shop.svc.cluster.local", 8080, "", "127.0.0.1:9091")
	cp := startControlPlane(t, "", web, api)
	b, st := startBackend(t, cp.addr)
	for _, k := range []discovery.Key{web.Key(), api.Key()} {
		if err := b.Want(within(5*time.Second), k); err != nil {
			t.Fatal(err)
		}
	}
	b.Release([]discovery.Key{web.Key()})
	if st.service(web.Name) != nil {
		t.Fatal("web is still delivered after its release")
	}
	st.mu.Lock()
	changed := st.last.Changed
	st.mu.Unlock()
	if !changed[web.Key()] || len(changed) != 1 {
		t.Errorf("the state after the release names %v as changed, want web alone", changed)
	}
	if s := b.Status().(Status); len(s.Subscribed) != 1 || s.Subscribed[0] != xdsres.Name(api.Key()) {
		t.Errorf("subscribed after the release: %v", s.Subscribed)
	}
	// The controller has been told: web's change is not sent, api's is.
	st.waitFor(t, "the unsubscription", func() bool {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		return slices.Contains(cp.dropped, xdsres.EndpointType+" "+xdsres.Name(web.Key()))
	})
	before := cp.sentOf(xdsres.EndpointType)
	web.Endpoints = append(web.Endpoints, discovery.Endpoint{Address: netip.MustParseAddrPort("127.0.0.1:8082"), Weight: 1})
	cp.set(&web)
	api.Endpoints = append(api.Endpoints, discovery.Endpoint{Address: netip.MustParseAddrPort("127.0.0.1:9092"), Weight: 1})
	cp.set(&api)
	st.waitFor(t, "api's second endpoint", func() bool {
		s := st.service(api.Name)
		return s != nil && len(s.Endpoints) == 2
	})
	if n := cp.sentOf(xdsres.EndpointType) - before; n != 1 {
		t.Errorf("%d endpoint resources sent after web's release, want api's alone", n)
	}
	if err := b.Want(within(5*time.Second), discovery.Key{Host: "web", Port: 80}); err != nil {
		t.Fatal(err)
	}
	if s := st.service(web.Name); s == nil || len(s.Endpoints) != 2 {
		t.Errorf("web asked for again is %+v, want its two endpoints of now", s)
	}
}

// TestAListenerChangeKeepsTheRoutes: a new virtual IP changes a service's
// Listener and nothing else; the service stays delivered, with its routes
// (which the controller does not send again) and the new address.
func TestAListenerChangeKeepsTheRoutes(t *testing.T) {
	web := svc("web.shop.svc.cluster.local", 80, "10.96.0.10", "127.0.0.1:8081")
	cp := startControlPlane(t, "", web)
	b, st := startBackend(t, cp.addr)
	if err := b.Want(within(5*time.Second), web.Key()); err != nil {
		t.Fatal(err)
	}
	routes := cp.sentOf(xdsres.RouteType)
	web.Addresses = []netip.Addr{netip.MustParseAddr("10.96.0.20")}
	cp.set(&web)
	st.waitFor(t, "web's new virtual IP", func() bool {
		s := st.service(web.Name)
		return s != nil && len(s.Addresses) == 1 && s.Addresses[0] == web.Addresses[0]
	})
	if n := cp.sentOf(xdsres.RouteType) - routes; n != 0 {
		t.Errorf("the unchanged routes were sent %d more times", n)
	}
}
