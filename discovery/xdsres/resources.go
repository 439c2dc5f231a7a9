// Package xdsres is the protocol both sides of discovery share: how a
// service port becomes the xDS v3 resources the controller serves (a
// Listener, a Cluster and a ClusterLoadAssignment, readable by Envoy and by
// grpc-go's xds resolver too). The controller encodes with it; the
// proxy reads the result back with package xdswire, from the wire format,
// without linking the Envoy types. It does no I/O.
//
// What xDS has no field for (mesh's own balancers such as peak-EWMA, hash
// keys, opaque ports, the SPIFFE identity an endpoint must present) travels
// in filter metadata under the "mesh.io" key.
package xdsres

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/discovery/xdswire"
)

// Type URLs of the resources served, and the metadata key: xdswire's,
// which reads them back.
const (
	ListenerType = xdswire.ListenerType
	ClusterType  = xdswire.ClusterType
	EndpointType = xdswire.EndpointType
	RouteType    = xdswire.RouteType
	MetadataKey  = xdswire.MetadataKey
)

// Name is the name of a service port's Listener, Cluster and
// ClusterLoadAssignment: its fully qualified host and port, which is also
// what a proxyless gRPC client dials (xds:///web.shop.svc.cluster.local:80).
func Name(k discovery.Key) string { return xdswire.Name(k) }

// Resources are the four xDS resources of one service port.
type Resources struct {
	Listener   *listenerv3.Listener
	Routes     *routev3.RouteConfiguration
	Cluster    *clusterv3.Cluster
	Endpoints  *endpointv3.ClusterLoadAssignment
	ServiceKey discovery.Key
}

// Types are the resource types of a service port, in the order a change
// is best published: what a name leads to before the name.
var Types = []string{EndpointType, ClusterType, RouteType, ListenerType}

// Of is the resource of a type.
func (r *Resources) Of(typ string) proto.Message {
	switch typ {
	case ListenerType:
		return r.Listener
	case RouteType:
		return r.Routes
	case ClusterType:
		return r.Cluster
	case EndpointType:
		return r.Endpoints
	}
	return nil
}

// Encode turns a service port into its xDS resources.
func Encode(s *discovery.Service) (*Resources, error) {
	key := s.Key()
	name := Name(key)
	cluster, err := encodeCluster(s, name)
	if err != nil {
		return nil, err
	}
	cla, err := encodeEndpoints(s, name)
	if err != nil {
		return nil, err
	}
	listener, err := encodeListener(s, name)
	if err != nil {
		return nil, err
	}
	routes, err := encodeRoutes(s, name)
	if err != nil {
		return nil, err
	}
	return &Resources{Listener: listener, Routes: routes, Cluster: cluster, Endpoints: cla, ServiceKey: key}, nil
}

// encodeCluster is the service's Cluster: EDS over ADS, its balancer, and
// in metadata what xDS has no field for.
func encodeCluster(s *discovery.Service, name string) (*clusterv3.Cluster, error) {
	lb := s.LoadBalancer
	if lb == "" {
		lb = discovery.PeakEWMA
	}
	meta := map[string]any{"balancer": string(lb)}
	switch {
	case s.HashKey.Header != "":
		meta["hashHeader"] = s.HashKey.Header
	case s.HashKey.Cookie != "":
		meta["hashCookie"] = s.HashKey.Cookie
	case s.HashKey.SourceIP:
		meta["hashSourceIP"] = true
	}
	if s.Opaque {
		meta["opaque"] = true
	}
	if s.Timeouts.Request > 0 {
		meta["requestTimeout"] = s.Timeouts.Request.String()
	}
	failureMeta(s, meta)
	cmeta, err := metadata(meta)
	if err != nil {
		return nil, err
	}
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			ResourceApiVersion:    corev3.ApiVersion_V3,
		}},
		ConnectTimeout: durationpb.New(time.Second),
		LbPolicy:       lbPolicy(lb),
		Metadata:       cmeta,
	}, nil
}

// failureMeta adds a service's retries, failure accrual and limits to its
// cluster's metadata, as strings xdswire reads back. Envoy's own fields
// for them (retry policies, outlier detection) mean other things.
func failureMeta(s *discovery.Service, meta map[string]any) {
	num := func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
	if r := s.Retries; r != nil {
		meta["retryLimit"] = strconv.Itoa(r.MaxRetries)
		var statuses, codes []string
		for _, st := range r.Statuses {
			statuses = append(statuses, fmt.Sprintf("%d-%d", st.Min, st.Max))
		}
		for _, c := range r.GRPCCodes {
			codes = append(codes, strconv.FormatUint(uint64(c), 10))
		}
		meta["retryHTTP"] = strings.Join(statuses, ",")
		meta["retryGRPC"] = strings.Join(codes, ",")
		meta["retryBudgetRatio"] = num(r.BudgetRatio)
		meta["retryBudgetMinPerSecond"] = num(r.BudgetMinPerSecond)
		meta["retryBudgetTTL"] = r.BudgetTTL.String()
	}
	if a := s.FailureAccrual; a != nil {
		meta["accrualFailures"] = strconv.Itoa(a.ConsecutiveFailures)
		meta["accrualMinBackoff"] = a.MinBackoff.String()
		meta["accrualMaxBackoff"] = a.MaxBackoff.String()
		meta["accrualJitter"] = num(a.Jitter)
	}
	if n := s.Limits.MaxRequestsPerEndpoint; n > 0 {
		meta["maxRequestsPerEndpoint"] = strconv.Itoa(n)
	}
}

// grpcRetryOn names the gRPC codes a proxyless gRPC client retries on, in
// the words of Envoy's retry_on (the only ones gRPC understands).
var grpcRetryOn = map[uint32]string{1: "cancelled", 4: "deadline-exceeded", 8: "resource-exhausted", 13: "internal", 14: "unavailable"}

// encodeEndpoints is the service's ClusterLoadAssignment: one locality per
// zone, in a stable order, each endpoint with its weight and identity.
func encodeEndpoints(s *discovery.Service, name string) (*endpointv3.ClusterLoadAssignment, error) {
	zones := map[string]*endpointv3.LocalityLbEndpoints{}
	for _, e := range s.Endpoints {
		loc := zones[e.Zone]
		if loc == nil {
			loc = &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Zone: e.Zone}, LoadBalancingWeight: wrapperspb.UInt32(0)}
			zones[e.Zone] = loc
		}
		w := max(e.Weight, 1)
		lbe := &endpointv3.LbEndpoint{
			HostIdentifier:      &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(e.Address)}},
			HealthStatus:        corev3.HealthStatus_HEALTHY,
			LoadBalancingWeight: wrapperspb.UInt32(w),
		}
		if e.Identity != "" {
			var err error
			if lbe.Metadata, err = metadata(map[string]any{"identity": e.Identity}); err != nil {
				return nil, err
			}
		}
		loc.LbEndpoints = append(loc.LbEndpoints, lbe)
		// gRPC ignores localities without weight; weigh them by what they hold.
		loc.LoadBalancingWeight = wrapperspb.UInt32(loc.LoadBalancingWeight.GetValue() + w)
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	for _, zone := range slices.Sorted(maps.Keys(zones)) {
		cla.Endpoints = append(cla.Endpoints, zones[zone])
	}
	return cla, nil
}

// encodeListener maps the service's name and virtual IPs to the cluster;
// as an API listener it is also what gRPC's xds resolver asks for, and
// it names the service's routes (RDS, over ADS).
func encodeListener(s *discovery.Service, name string) (*listenerv3.Listener, error) {
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
				ResourceApiVersion:    corev3.ApiVersion_V3,
			},
			RouteConfigName: name,
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		return nil, err
	}
	lmeta, err := metadata(map[string]any{"cluster": name, "routeConfig": name})
	if err != nil {
		return nil, err
	}
	listener := &listenerv3.Listener{
		Name:        name,
		ApiListener: &listenerv3.ApiListener{ApiListener: hcm},
		Metadata:    lmeta,
	}
	for i, ip := range s.Addresses {
		addr := socketAddress(netip.AddrPortFrom(ip, s.Port))
		if i == 0 {
			listener.Address = addr
		} else {
			listener.AdditionalAddresses = append(listener.AdditionalAddresses, &listenerv3.AdditionalAddress{Address: addr})
		}
	}
	return listener, nil
}

// encodeRoutes is the service's RouteConfiguration. Without routes it
// sends everything to the service's own cluster. With routes it holds
// them twice, from the one model: as Envoy's routes, in the order the
// Gateway API's precedence gives (which is how Envoy and gRPC clients
// pick: the first that matches), and, for mesh proxies, as mesh's own
// routes in metadata. Envoy's fields need several shapes for what one
// mesh route says (a prefix of whole path segments is two routes; a
// weight-0 backend cannot be written; a retry budget has no field), and
// a proxy that read them back would have to undo each.
func encodeRoutes(s *discovery.Service, name string) (*routev3.RouteConfiguration, error) {
	vh := &routev3.VirtualHost{Name: name, Domains: []string{"*"}}
	rc := &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{vh}}
	if len(s.Routes) == 0 {
		vh.Routes = []*routev3.Route{{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: routeAction(s, s.Timeouts, s.Retries, name, nil)},
		}}
		return rc, nil
	}
	for _, e := range discovery.OrderRoutes(s.Routes) {
		r := &s.Routes[e.Route]
		action := routeAction(s, routeTimeouts(r.Timeouts, s.Timeouts), routeRetries(r.Retries, s.Retries), name, r.Backends)
		for _, m := range envoyMatches(e.Match) {
			er := &routev3.Route{Name: r.Name, Match: m, Action: &routev3.Route_Route{Route: action}}
			if r.Redirect != nil {
				er.Action = &routev3.Route_Redirect{Redirect: redirectAction(r.Redirect)}
			}
			if h := r.RequestHeaders; h != nil {
				er.RequestHeadersToAdd, er.RequestHeadersToRemove = headersToAdd(h), h.Remove
			}
			if h := r.ResponseHeaders; h != nil {
				er.ResponseHeadersToAdd, er.ResponseHeadersToRemove = headersToAdd(h), h.Remove
			}
			vh.Routes = append(vh.Routes, er)
		}
	}
	js, err := json.Marshal(s.Routes)
	if err != nil {
		return nil, err
	}
	if rc.Metadata, err = metadata(map[string]any{"routes": string(js)}); err != nil {
		return nil, err
	}
	return rc, nil
}

// headersToAdd are a modifier's set and add, in Envoy's words.
func headersToAdd(m *discovery.HeaderModifier) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	for _, nv := range m.Set {
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: strings.ToLower(nv.Name), Value: nv.Value},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
	}
	for _, nv := range m.Add {
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: strings.ToLower(nv.Name), Value: nv.Value},
			AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD})
	}
	return out
}

// redirectCodes are Envoy's names for redirect statuses.
var redirectCodes = map[int]routev3.RedirectAction_RedirectResponseCode{
	301: routev3.RedirectAction_MOVED_PERMANENTLY, 0: routev3.RedirectAction_FOUND, 302: routev3.RedirectAction_FOUND,
	303: routev3.RedirectAction_SEE_OTHER, 307: routev3.RedirectAction_TEMPORARY_REDIRECT, 308: routev3.RedirectAction_PERMANENT_REDIRECT,
}

// redirectAction is a redirect in Envoy's words (gRPC clients follow
// none: their calls on such a route fail).
func redirectAction(rd *discovery.Redirect) *routev3.RedirectAction {
	a := &routev3.RedirectAction{HostRedirect: rd.Hostname, PortRedirect: uint32(rd.Port), ResponseCode: redirectCodes[rd.StatusCode]}
	if rd.Scheme != "" {
		a.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: rd.Scheme}
	}
	switch {
	case rd.FullPath != nil:
		a.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: *rd.FullPath}
	case rd.PrefixMatch != nil:
		a.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: *rd.PrefixMatch}
	}
	return a
}

// routeTimeouts and routeRetries are a route's settings where it has them,
// else its service's.
func routeTimeouts(route, svc discovery.Timeouts) discovery.Timeouts {
	if route.Request > 0 {
		return route
	}
	return svc
}

func routeRetries(route, svc *discovery.Retries) *discovery.Retries {
	if route != nil {
		return route
	}
	return svc
}

// routeAction sends a route's requests to its backends by weight (the
// service's own cluster when it names none), with its timeout and the
// retries a gRPC client understands.
func routeAction(s *discovery.Service, timeouts discovery.Timeouts, retries *discovery.Retries, self string, backends []discovery.RouteBackend) *routev3.RouteAction {
	a := &routev3.RouteAction{}
	var weighted []*routev3.WeightedCluster_ClusterWeight
	for _, b := range backends {
		if b.Weight > 0 {
			weighted = append(weighted, &routev3.WeightedCluster_ClusterWeight{Name: Name(b.Service), Weight: wrapperspb.UInt32(b.Weight)})
		}
	}
	switch {
	case len(backends) == 0:
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: self}
	case len(weighted) == 0:
		// Every backend has weight 0: a cluster no one serves, which gRPC
		// clients fail as unavailable and mesh proxies answer 500 for.
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "weightless." + self}
	case len(weighted) == 1:
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: weighted[0].Name}
	default:
		a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: weighted}}
	}
	// For proxyless gRPC clients: the request timeout as the stream's
	// longest life, and retries of the gRPC codes they know.
	if timeouts.Request > 0 {
		a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(timeouts.Request)}
	}
	if r := retries; r != nil && r.MaxRetries > 0 {
		var on []string
		for _, c := range r.GRPCCodes {
			if name, ok := grpcRetryOn[c]; ok {
				on = append(on, name)
			}
		}
		if len(on) > 0 {
			a.RetryPolicy = &routev3.RetryPolicy{RetryOn: strings.Join(on, ","), NumRetries: wrapperspb.UInt32(uint32(r.MaxRetries))}
		}
	}
	if s.HashKey.Header != "" {
		a.HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: s.HashKey.Header}}}}
	}
	return a
}

// envoyMatches writes a mesh match as Envoy's: a prefix of whole segments
// is the exact path and the prefix with a slash, as gRPC clients know no
// path-separated prefix; the method is the :method header.
func envoyMatches(m discovery.RouteMatch) []*routev3.RouteMatch {
	var headers []*routev3.HeaderMatcher
	exact := func(name, value string) *routev3.HeaderMatcher {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value}}}}
	}
	if m.Method != "" {
		headers = append(headers, exact(":method", m.Method))
	}
	for _, h := range m.Headers {
		headers = append(headers, exact(strings.ToLower(h.Name), h.Value))
	}
	var query []*routev3.QueryParameterMatcher
	for _, q := range m.QueryParams {
		query = append(query, &routev3.QueryParameterMatcher{Name: q.Name, QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: q.Value}}}})
	}
	with := func(p *routev3.RouteMatch) *routev3.RouteMatch {
		p.Headers, p.QueryParameters = headers, query
		return p
	}
	prefix := strings.TrimSuffix(m.Path, "/")
	switch {
	case m.PathType == discovery.PathExact:
		return []*routev3.RouteMatch{with(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: m.Path}})}
	case m.PathType == discovery.PathPrefix && prefix != "":
		return []*routev3.RouteMatch{
			with(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: prefix}}),
			with(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix + "/"}}),
		}
	default:
		return []*routev3.RouteMatch{with(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}})}
	}
}

// lbPolicy is the nearest xDS policy, for Envoy and gRPC clients; mesh
// proxies read the exact algorithm from metadata.
func lbPolicy(lb discovery.LoadBalancer) clusterv3.Cluster_LbPolicy {
	switch lb {
	case discovery.RingHash:
		return clusterv3.Cluster_RING_HASH
	case discovery.Maglev:
		return clusterv3.Cluster_MAGLEV
	case discovery.Random:
		return clusterv3.Cluster_RANDOM
	case discovery.PeakEWMA, discovery.LeastRequest:
		return clusterv3.Cluster_LEAST_REQUEST
	default: // round-robin, weighted (weights are on the endpoints)
		return clusterv3.Cluster_ROUND_ROBIN
	}
}

func socketAddress(a netip.AddrPort) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       a.Addr().String(),
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(a.Port())},
	}}}
}

func metadata(fields map[string]any) (*corev3.Metadata, error) {
	st, err := structpb.NewStruct(fields)
	if err != nil {
		return nil, err
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataKey: st}}, nil
}
