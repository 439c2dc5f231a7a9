package xdsres

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/discovery/xdswire"
)

// wire is a resource as the controller sends it.
func wire(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The proxy reads what Encode writes with xdswire, from the wire format,
// without the Envoy types: both must agree on every field.

func TestEncodeDecodeRoundTrip(t *testing.T) {
	in := discovery.Service{
		Name: "web.shop.svc.cluster.local", Port: 80,
		LoadBalancer: discovery.RingHash, HashKey: discovery.HashKey{Header: "x-user"},
		Addresses: []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00::10")},
		Timeouts:  discovery.Timeouts{Request: 1500 * time.Millisecond},
		Retries: &discovery.Retries{MaxRetries: 3, Statuses: []discovery.StatusRange{{Min: 500, Max: 599}, {Min: 429, Max: 429}},
			GRPCCodes: []uint32{14, 2}, BudgetRatio: 0.25, BudgetMinPerSecond: 5, BudgetTTL: 20 * time.Second},
		FailureAccrual: &discovery.FailureAccrual{ConsecutiveFailures: 4, MinBackoff: 500 * time.Millisecond, MaxBackoff: 30 * time.Second, Jitter: 0.2},
		Limits:         discovery.Limits{MaxRequestsPerEndpoint: 100},
		Endpoints: []discovery.Endpoint{
			{Address: netip.MustParseAddrPort("10.0.0.1:8080"), Weight: 1, Identity: "spiffe://cluster.local/ns/shop/sa/web", Zone: "a"},
			{Address: netip.MustParseAddrPort("10.0.0.2:8080"), Weight: 3, Zone: "b"},
			{Address: netip.MustParseAddrPort("10.0.0.3:8080"), Weight: 1, Zone: "a"},
		},
	}
	r, err := Encode(&in)
	if err != nil {
		t.Fatal(err)
	}
	if r.Listener.GetName() != "web.shop.svc.cluster.local:80" || r.Cluster.GetName() != r.Listener.GetName() || r.Endpoints.GetClusterName() != r.Listener.GetName() {
		t.Fatalf("names: %s %s %s", r.Listener.GetName(), r.Cluster.GetName(), r.Endpoints.GetClusterName())
	}
	route, err := xdswire.DecodeListener(wire(t, r.Listener))
	if err != nil {
		t.Fatal(err)
	}
	wantRoute := xdswire.Route{Key: in.Key(), Cluster: r.Cluster.GetName(), RouteConfig: r.Routes.GetName(), VIPs: []netip.AddrPort{
		netip.MustParseAddrPort("10.96.0.10:80"), netip.MustParseAddrPort("[fd00::10]:80")}}
	if diff := cmp.Diff(wantRoute, route, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Errorf("route (-want +got):\n%s", diff)
	}
	out, err := xdswire.DecodeCluster(wire(t, r.Cluster))
	if err != nil {
		t.Fatal(err)
	}
	var cluster string
	if cluster, out.Endpoints, err = xdswire.DecodeEndpoints(wire(t, r.Endpoints)); err != nil || cluster != r.Cluster.GetName() {
		t.Fatal(cluster, err)
	}
	out.Addresses = in.Addresses
	// Endpoints come back grouped by zone.
	want := in
	want.Endpoints = []discovery.Endpoint{in.Endpoints[0], in.Endpoints[2], in.Endpoints[1]}
	if diff := cmp.Diff(want, out, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("service (-want +got):\n%s", diff)
	}
	// gRPC clients follow the API listener to its routes (RDS) and drop
	// localities without weight.
	var hcm hcmv3.HttpConnectionManager
	if err := r.Listener.GetApiListener().GetApiListener().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	if rds := hcm.GetRds(); rds.GetRouteConfigName() != r.Routes.GetName() || rds.GetConfigSource().GetAds() == nil {
		t.Errorf("the listener's routes: %v; want %s over ADS", rds, r.Routes.GetName())
	}
	if name, routes, err := xdswire.DecodeRoutes(wire(t, r.Routes)); err != nil || name != r.Cluster.GetName() || routes != nil {
		t.Errorf("a service without routes: %s %v %v", name, routes, err)
	}
	ra := r.Routes.GetVirtualHosts()[0].GetRoutes()[0].GetRoute()
	if ra.GetCluster() != r.Cluster.GetName() || ra.GetHashPolicy()[0].GetHeader().GetHeaderName() != "x-user" {
		t.Errorf("route action %v", ra)
	}
	// UNKNOWN (2) is not a code gRPC clients retry on.
	if rp := ra.GetRetryPolicy(); rp.GetRetryOn() != "unavailable" || rp.GetNumRetries().GetValue() != 3 {
		t.Errorf("retry policy for gRPC clients: %v", rp)
	}
	if d := ra.GetMaxStreamDuration().GetMaxStreamDuration().AsDuration(); d != in.Timeouts.Request {
		t.Errorf("max stream duration %v; want the request timeout %v", d, in.Timeouts.Request)
	}
	for _, loc := range r.Endpoints.GetEndpoints() {
		if loc.GetLoadBalancingWeight().GetValue() == 0 {
			t.Errorf("locality %v has no weight", loc.GetLocality())
		}
	}
}

func TestDecodeRefusesWhatItCannotUse(t *testing.T) {
	r, err := Encode(&discovery.Service{Name: "api.shop.svc.cluster.local", Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := xdswire.DecodeCluster(wire(t, r.Cluster)); err != nil || s.LoadBalancer != discovery.PeakEWMA {
		t.Fatalf("default balancer: %v %v", s.LoadBalancer, err)
	}
	r.Cluster.Name = "no-port"
	if _, err := xdswire.DecodeCluster(wire(t, r.Cluster)); err == nil {
		t.Error("a cluster name without a port was accepted")
	}
	r.Listener.Metadata = nil
	if _, err := xdswire.DecodeListener(wire(t, r.Listener)); err == nil {
		t.Error("a listener without its cluster was accepted")
	}
	for _, bad := range []discovery.Service{
		{Retries: &discovery.Retries{MaxRetries: 11, BudgetTTL: time.Second}},
		{Retries: &discovery.Retries{MaxRetries: 1, BudgetRatio: 2, BudgetTTL: time.Second}},
		{Retries: &discovery.Retries{MaxRetries: 1}}, // no budget window
		{Retries: &discovery.Retries{MaxRetries: 1, BudgetTTL: time.Second, GRPCCodes: []uint32{0}}},
		{FailureAccrual: &discovery.FailureAccrual{ConsecutiveFailures: 1, MinBackoff: time.Minute, MaxBackoff: time.Second}},
		{FailureAccrual: &discovery.FailureAccrual{ConsecutiveFailures: 1, MinBackoff: time.Second, MaxBackoff: time.Second, Jitter: 1}},
	} {
		bad.Name, bad.Port = "api.shop.svc.cluster.local", 8080
		r, err := Encode(&bad)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := xdswire.DecodeCluster(wire(t, r.Cluster)); err == nil {
			t.Errorf("failure handling out of bounds was accepted: %+v %+v", bad.Retries, bad.FailureAccrual)
		} else if !strings.Contains(err.Error(), "api.shop.svc.cluster.local:8080") {
			t.Errorf("the error does not name the cluster: %v", err)
		}
	}
}

// A service's routes reach mesh proxies as they are, and gRPC clients as
// Envoy's routes in the Gateway API's order of precedence.
func TestRoutesForProxiesAndGRPCClients(t *testing.T) {
	v2 := discovery.Key{Host: "web-v2.shop.svc.cluster.local", Port: 80}
	in := discovery.Service{Name: "web.shop.svc.cluster.local", Port: 80, Routes: []discovery.Route{
		{Name: "shop/split/0", Backends: []discovery.RouteBackend{{Service: discovery.Key{Host: "web.shop.svc.cluster.local", Port: 80}, Weight: 90}, {Service: v2, Weight: 10}}},
		{Name: "shop/canary/0", Matches: []discovery.RouteMatch{{PathType: discovery.PathPrefix, Path: "/api", Headers: []discovery.NameValue{{Name: "X-Canary", Value: "1"}}}},
			Backends: []discovery.RouteBackend{{Service: v2, Weight: 1}}, Timeouts: discovery.Timeouts{Request: time.Second}},
		{Name: "shop/exact/0", Matches: []discovery.RouteMatch{{PathType: discovery.PathExact, Path: "/login", Method: "POST"}}},
		{Name: "shop/off/0", Matches: []discovery.RouteMatch{{PathType: discovery.PathExact, Path: "/off"}}, Backends: []discovery.RouteBackend{{Service: v2, Weight: 0}}},
	}}
	r, err := Encode(&in)
	if err != nil {
		t.Fatal(err)
	}
	name, got, err := xdswire.DecodeRoutes(wire(t, r.Routes))
	if err != nil || name != "web.shop.svc.cluster.local:80" {
		t.Fatal(name, err)
	}
	if diff := cmp.Diff(in.Routes, got); diff != "" {
		t.Errorf("routes for mesh proxies (-want +got):\n%s", diff)
	}
	var order []string
	for _, er := range r.Routes.GetVirtualHosts()[0].GetRoutes() {
		m := er.GetMatch()
		desc := er.GetName() + " " + m.GetPath() + m.GetPrefix()
		for _, h := range m.GetHeaders() {
			desc += " " + h.GetName() + "=" + h.GetStringMatch().GetExact()
		}
		a := er.GetRoute()
		desc += " -> " + a.GetCluster()
		for _, c := range a.GetWeightedClusters().GetClusters() {
			desc += fmt.Sprintf(" %s*%d", c.GetName(), c.GetWeight().GetValue())
		}
		if d := a.GetMaxStreamDuration().GetMaxStreamDuration(); d != nil {
			desc += " max " + d.AsDuration().String()
		}
		order = append(order, desc)
	}
	want := []string{
		"shop/exact/0 /login :method=POST -> web.shop.svc.cluster.local:80",
		"shop/off/0 /off -> weightless.web.shop.svc.cluster.local:80",
		"shop/canary/0 /api x-canary=1 -> web-v2.shop.svc.cluster.local:80 max 1s",
		"shop/canary/0 /api/ x-canary=1 -> web-v2.shop.svc.cluster.local:80 max 1s",
		"shop/split/0 / ->  web.shop.svc.cluster.local:80*90 web-v2.shop.svc.cluster.local:80*10",
	}
	if diff := cmp.Diff(want, order); diff != "" {
		t.Errorf("Envoy's routes, first match wins (-want +got):\n%s", diff)
	}
	// A route a proxy could not follow is refused whole.
	r.Routes.Metadata.FilterMetadata[MetadataKey].Fields["routes"] = structpb.NewStringValue(`[{"name":"x","backends":[{"service":{"host":"","port":0},"weight":1}]}]`)
	if _, _, err := xdswire.DecodeRoutes(wire(t, r.Routes)); err == nil || !strings.Contains(err.Error(), "web.shop.svc.cluster.local:80") {
		t.Errorf("a backend without a name: %v", err)
	}
}

func TestRouteFiltersForGRPCClientsAndProxies(t *testing.T) {
	to := "/new"
	in := discovery.Service{Name: "web.shop.svc.cluster.local", Port: 80, Routes: []discovery.Route{
		{Name: "shop/moved/0", Matches: []discovery.RouteMatch{{PathType: discovery.PathExact, Path: "/old"}},
			Redirect: &discovery.Redirect{Scheme: "https", Hostname: "new.example", StatusCode: 301, FullPath: &to}},
		{Name: "shop/headers/0", RequestHeaders: &discovery.HeaderModifier{Set: []discovery.NameValue{{Name: "X-A", Value: "1"}}, Add: []discovery.NameValue{{Name: "x-b", Value: "2"}}, Remove: []string{"x-c"}},
			ResponseHeaders: &discovery.HeaderModifier{Remove: []string{"server"}}},
	}}
	r, err := Encode(&in)
	if err != nil {
		t.Fatal(err)
	}
	if _, got, err := xdswire.DecodeRoutes(wire(t, r.Routes)); err != nil || !cmp.Equal(in.Routes, got) {
		t.Errorf("routes for mesh proxies: %v\n%s", err, cmp.Diff(in.Routes, got))
	}
	routes := r.Routes.GetVirtualHosts()[0].GetRoutes()
	rd := routes[0].GetRedirect()
	if rd.GetSchemeRedirect() != "https" || rd.GetHostRedirect() != "new.example" || rd.GetPathRedirect() != "/new" || rd.GetResponseCode().String() != "MOVED_PERMANENTLY" {
		t.Errorf("the redirect for Envoy: %v", rd)
	}
	h := routes[1]
	add := h.GetRequestHeadersToAdd()
	if len(add) != 2 || add[0].GetHeader().GetKey() != "x-a" || add[0].GetAppendAction().String() != "OVERWRITE_IF_EXISTS_OR_ADD" ||
		add[1].GetAppendAction().String() != "APPEND_IF_EXISTS_OR_ADD" || h.GetRequestHeadersToRemove()[0] != "x-c" || h.GetResponseHeadersToRemove()[0] != "server" {
		t.Errorf("header changes for Envoy: %v", h)
	}
}
