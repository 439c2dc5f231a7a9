package xdsres

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

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
	wantRoute := xdswire.Route{Key: in.Key(), Cluster: r.Cluster.GetName(), VIPs: []netip.AddrPort{
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
	// gRPC clients read the route from the API listener and drop localities
	// without weight.
	var hcm hcmv3.HttpConnectionManager
	if err := r.Listener.GetApiListener().GetApiListener().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	ra := hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].GetRoute()
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
