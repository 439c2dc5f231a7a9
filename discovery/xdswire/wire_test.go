package xdswire

import (
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshproj/mesh/discovery"
)

func TestADeltaRequestReadsAsEnvoys(t *testing.T) {
	r := DeltaRequest{TypeURL: ClusterType, Nonce: "n3", Subscribe: []string{"a.x.svc.cluster.local:80", "b.x.svc.cluster.local:81"},
		Unsubscribe: []string{"c.x.svc.cluster.local:82"}, Initial: map[string]string{"a.x.svc.cluster.local:80": "v7", "b.x.svc.cluster.local:81": ""},
		NodeID: "web-1.shop", NodeCluster: "shop", Agent: "mesh-proxy", ErrorCode: 3, ErrorMessage: "bad balancer"}
	var got discoveryv3.DeltaDiscoveryRequest
	if err := proto.Unmarshal(r.Marshal(), &got); err != nil {
		t.Fatal(err)
	}
	if got.GetTypeUrl() != ClusterType || got.GetResponseNonce() != "n3" ||
		strings.Join(got.GetResourceNamesSubscribe(), ",") != "a.x.svc.cluster.local:80,b.x.svc.cluster.local:81" ||
		strings.Join(got.GetResourceNamesUnsubscribe(), ",") != "c.x.svc.cluster.local:82" ||
		len(got.GetInitialResourceVersions()) != 2 || got.GetInitialResourceVersions()["a.x.svc.cluster.local:80"] != "v7" ||
		got.GetNode().GetId() != "web-1.shop" || got.GetNode().GetCluster() != "shop" || got.GetNode().GetUserAgentName() != "mesh-proxy" ||
		got.GetErrorDetail().GetCode() != 3 || got.GetErrorDetail().GetMessage() != "bad balancer" {
		t.Errorf("decoded as %v", &got)
	}
	// An acknowledgement: a nonce, and nothing else.
	ack := DeltaRequest{TypeURL: ListenerType, Nonce: "7"}
	got.Reset()
	if err := proto.Unmarshal(ack.Marshal(), &got); err != nil {
		t.Fatal(err)
	}
	if got.GetErrorDetail() != nil || got.GetNode() != nil || len(got.GetResourceNamesSubscribe()) != 0 || got.GetResponseNonce() != "7" {
		t.Errorf("an acknowledgement decoded as %v", &got)
	}
}

func TestADeltaResponseGivesItsNamedResourcesOfItsTypeOnly(t *testing.T) {
	l, err := anypb.New(&listenerv3.Listener{Name: "a:1"})
	if err != nil {
		t.Fatal(err)
	}
	resp := &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: "s1", TypeUrl: ListenerType, Nonce: "x",
		Resources:        []*discoveryv3.Resource{{Name: "a:1", Version: "v1", Resource: l}, {Name: "b:1", Version: "v2", Resource: l}},
		RemovedResources: []string{"c:1"},
		ControlPlane:     &corev3.ControlPlane{Identifier: "someone else's field"}}
	b, err := proto.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseDeltaResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	if r.SystemVersion != "s1" || r.TypeURL != ListenerType || r.Nonce != "x" || len(r.Resources) != 2 ||
		r.Resources[1].Name != "b:1" || r.Resources[1].Version != "v2" || !proto.Equal(mustListener(t, r.Resources[0].Value), &listenerv3.Listener{Name: "a:1"}) ||
		strings.Join(r.Removed, ",") != "c:1" {
		t.Errorf("parsed %+v", r)
	}
	if _, err := ParseDeltaResponse(b[:len(b)-3]); err == nil {
		t.Error("a truncated response parsed")
	}
	for _, c := range []struct {
		name   string
		change func(*discoveryv3.DeltaDiscoveryResponse)
		want   string
	}{
		{"of another type", func(r *discoveryv3.DeltaDiscoveryResponse) { r.TypeUrl = ClusterType }, "holds a \"type.googleapis.com/envoy.config.listener.v3.Listener\""},
		{"unnamed", func(r *discoveryv3.DeltaDiscoveryResponse) { r.Resources[0].Name = "" }, "without a name"},
		{"twice", func(r *discoveryv3.DeltaDiscoveryResponse) { r.Resources[1].Name = "a:1" }, "names a:1 twice"},
		{"sent and removed", func(r *discoveryv3.DeltaDiscoveryResponse) { r.RemovedResources = []string{"b:1"} }, "both sends and removes b:1"},
	} {
		bad := proto.Clone(resp).(*discoveryv3.DeltaDiscoveryResponse)
		c.change(bad)
		b, _ := proto.Marshal(bad)
		if _, err := ParseDeltaResponse(b); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("a resource %s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
}

func mustListener(t *testing.T, b []byte) *listenerv3.Listener {
	var l listenerv3.Listener
	if err := proto.Unmarshal(b, &l); err != nil {
		t.Fatal(err)
	}
	return &l
}

func TestEndpointsOutOfRotationAreLeftOut(t *testing.T) {
	ep := func(ip string, h corev3.HealthStatus) *endpointv3.LbEndpoint {
		return &endpointv3.LbEndpoint{HealthStatus: h, LoadBalancingWeight: wrapperspb.UInt32(0),
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
				Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: ip,
					PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080}}}}}}}
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "web:80", Endpoints: []*endpointv3.LocalityLbEndpoints{{
		Locality: &corev3.Locality{Zone: "z1"},
		LbEndpoints: []*endpointv3.LbEndpoint{ep("10.0.0.1", corev3.HealthStatus_HEALTHY), ep("10.0.0.2", corev3.HealthStatus_UNHEALTHY),
			ep("10.0.0.3", corev3.HealthStatus_DRAINING), ep("10.0.0.4", corev3.HealthStatus_TIMEOUT), ep("::ffff:10.0.0.5", corev3.HealthStatus_UNKNOWN),
			{HealthStatus: corev3.HealthStatus_DRAINING}}, // no address, but out of rotation anyway
	}}}
	b, err := proto.Marshal(cla)
	if err != nil {
		t.Fatal(err)
	}
	name, eps, err := DecodeEndpoints(b)
	if err != nil {
		t.Fatal(err)
	}
	if name != "web:80" || len(eps) != 2 || eps[0].Address != netip.MustParseAddrPort("10.0.0.1:8080") || eps[1].Address != netip.MustParseAddrPort("10.0.0.5:8080") ||
		eps[0].Weight != 1 || eps[0].Zone != "z1" {
		t.Errorf("%s: %+v", name, eps)
	}
	cla.Endpoints[0].LbEndpoints = append(cla.Endpoints[0].LbEndpoints, &endpointv3.LbEndpoint{})
	b, _ = proto.Marshal(cla)
	if _, _, err := DecodeEndpoints(b); err == nil {
		t.Error("an endpoint in rotation without an address was accepted")
	}
}

func TestMetadataOfAnotherNamespaceIsNotMeshs(t *testing.T) {
	st, _ := structpb.NewStruct(map[string]any{"cluster": "evil:80"})
	ours, _ := structpb.NewStruct(map[string]any{"cluster": "web:80", "other": 3.5, "list": []any{"x"}})
	l := &listenerv3.Listener{Name: "web:80", Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.lb": st, MetadataKey: ours}}}
	b, _ := proto.Marshal(l)
	r, err := DecodeListener(b)
	if err != nil || r.Cluster != "web:80" {
		t.Errorf("route %+v, %v", r, err)
	}
}

// FuzzDecoders: whatever arrives from the network, the decoders return a
// value or an error, and never panic.
func FuzzDecoders(f *testing.F) {
	ours, _ := structpb.NewStruct(map[string]any{"cluster": "web:80", "opaque": true})
	l, _ := proto.Marshal(&listenerv3.Listener{Name: "web:80", Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataKey: ours}}})
	f.Add(l)
	a, _ := anypb.New(&listenerv3.Listener{Name: "a:1"})
	resp, _ := proto.Marshal(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: ListenerType, Resources: []*discoveryv3.Resource{{Name: "a:1", Resource: a}}, RemovedResources: []string{"b:1"}})
	f.Add(resp)
	f.Add([]byte{0x12, 0x80})
	policy, _ := structpb.NewStruct(map[string]any{"balancer": "peak-ewma", "retryLimit": "2", "retryHTTP": "500-599,429-429", "retryGRPC": "14",
		"retryBudgetRatio": "0.2", "retryBudgetMinPerSecond": "10", "retryBudgetTTL": "10s", "accrualFailures": "7", "accrualMinBackoff": "1s",
		"accrualMaxBackoff": "1m0s", "accrualJitter": "0.5", "maxRequestsPerEndpoint": "100", "requestTimeout": "2s"})
	c, _ := proto.Marshal(&clusterv3.Cluster{Name: "web:80", Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataKey: policy}}})
	f.Add(c)
	routes, _ := structpb.NewStruct(map[string]any{"routes": `[{"name":"shop/r/0","matches":[{"pathType":"PathPrefix","path":"/api"}],` +
		`"backends":[{"service":{"host":"web.shop.svc.cluster.local","port":80},"weight":1}],"redirect":{"statusCode":301}}]`})
	rc, _ := proto.Marshal(&routev3.RouteConfiguration{Name: "web:80", Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataKey: routes}}})
	f.Add(rc)
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseDeltaResponse(b)
		DecodeListener(b)
		DecodeCluster(b)
		DecodeEndpoints(b)
		if _, rs, err := DecodeRoutes(b); err == nil {
			for i := range rs {
				if err := rs[i].Validate(); err != nil {
					t.Fatalf("DecodeRoutes returned a route it should refuse: %v", err)
				}
				if rd := rs[i].Redirect; rd != nil {
					for _, m := range append(rs[i].Matches, discovery.RouteMatch{}) {
						rd.Location(httptest.NewRequest("GET", "http://web:8080/api/x?y=1", nil), m, "8080")
					}
				}
			}
		}
	})
}
