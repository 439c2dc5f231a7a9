package controller

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/kubeapi"
)

// This file turns the Gateway API's mesh routes (HTTPRoute and GRPCRoute
// whose parent is a Service, the GAMMA profile) into the routes of the
// Service's discovery entries, and says for each route and parent whether
// it was accepted and its backends resolved, as route status must.

// Paths of the route kinds, served by the Gateway API's CRDs (which may
// not be installed: the informers are optional).
const (
	httpRoutesPath = "/apis/gateway.networking.k8s.io/v1/httproutes"
	grpcRoutesPath = "/apis/gateway.networking.k8s.io/v1/grpcroutes"
)

// ControllerName is what this controller writes as the controllerName of
// the route status it owns.
const ControllerName = "mesh.io/controller"

// httpRoute and grpcRoute are the routes as the informers hold them: the
// Gateway API's spec and status beside the metadata the controller reads.
type httpRoute struct {
	Metadata kubeapi.ObjectMeta        `json:"metadata"`
	Spec     gatewayv1.HTTPRouteSpec   `json:"spec"`
	Status   gatewayv1.HTTPRouteStatus `json:"status"`
}

type grpcRoute struct {
	Metadata kubeapi.ObjectMeta        `json:"metadata"`
	Spec     gatewayv1.GRPCRouteSpec   `json:"spec"`
	Status   gatewayv1.GRPCRouteStatus `json:"status"`
}

// routeObject is what both kinds share once their rules are read.
type routeObject struct {
	kind    string // HTTPRoute or GRPCRoute
	meta    *kubeapi.ObjectMeta
	parents []gatewayv1.ParentReference
	rules   []routeRule
	// current is the status the object has now.
	current []gatewayv1.RouteParentStatus
}

// routeRule is one rule in the discovery model, with its backend
// references still to resolve and what in it the mesh cannot do.
type routeRule struct {
	route       discovery.Route
	backendRefs []gatewayv1.BackendObjectReference
	unsupported []string
}

// RouteParentStatus is what the controller found for one route and one of
// its parents: the conditions it writes into the route's status.
type RouteParentStatus struct {
	Kind      string // HTTPRoute or GRPCRoute
	Namespace string
	Name      string
	Parent    gatewayv1.ParentReference
	// Generation is the route's metadata.generation the conditions are
	// for, and ResourceVersion the version they were computed from.
	Generation      int64
	ResourceVersion string
	// Accepted and ResolvedRefs, each with a reason and a message.
	Accepted, ResolvedRefs condition
	// Current is the route's status as the API server has it.
	Current []gatewayv1.RouteParentStatus
}

type condition struct {
	OK      bool
	Reason  string
	Message string
}

// routeSet is every mesh route attached to the cluster's Services: the
// routes of each service port and the status of each route's parents.
type routeSet struct {
	// byPort holds the routes of "namespace/name:port"; a route whose parent
	// names no port is under every port of its Service.
	byPort   map[string][]discovery.Route
	statuses []RouteParentStatus
}

// buildRoutes reads every route against the Services that exist. services
// is keyed by namespace/name; host names a Service's fully qualified name.
func buildRoutes(services map[string]*kubeapi.Service, https []*httpRoute, grpcs []*grpcRoute, host func(namespace, name string) string) routeSet {
	var objs []routeObject
	for _, r := range https {
		objs = append(objs, readHTTPRoute(r, host))
	}
	for _, r := range grpcs {
		objs = append(objs, readGRPCRoute(r, host))
	}
	// Among equally specific matches the oldest route wins, then the first
	// by namespace and name, as the Gateway API orders them: the proxy
	// keeps this order among equals.
	slices.SortFunc(objs, func(a, b routeObject) int {
		if c := a.meta.CreationTimestamp.Compare(b.meta.CreationTimestamp); c != 0 {
			return c
		}
		return cmp.Compare(a.meta.Key(), b.meta.Key())
	})
	set := routeSet{byPort: map[string][]discovery.Route{}}
	for _, o := range objs {
		for _, parent := range o.parents {
			st, ports := o.attach(parent, services, host)
			set.statuses = append(set.statuses, st)
			if !st.Accepted.OK {
				continue
			}
			for _, port := range ports {
				for _, rule := range o.rules {
					set.byPort[port] = append(set.byPort[port], rule.route)
				}
			}
		}
	}
	return set
}

// serviceParent reports whether a parent reference names a Service (the
// mesh profile) rather than a Gateway.
func serviceParent(p gatewayv1.ParentReference) bool {
	return p.Group != nil && *p.Group == "" && p.Kind != nil && *p.Kind == "Service"
}

// attach resolves one parent of the route: whether the route is accepted
// there, whether its backends resolve, and the service ports it routes.
func (o *routeObject) attach(parent gatewayv1.ParentReference, services map[string]*kubeapi.Service, host func(ns, name string) string) (RouteParentStatus, []string) {
	st := RouteParentStatus{Kind: o.kind, Namespace: o.meta.Namespace, Name: o.meta.Name, Parent: parent,
		Generation: o.meta.Generation, ResourceVersion: o.meta.ResourceVersion, Current: o.current,
		Accepted:     condition{OK: true, Reason: string(gatewayv1.RouteReasonAccepted), Message: "routing the Service's requests"},
		ResolvedRefs: condition{OK: true, Reason: string(gatewayv1.RouteReasonResolvedRefs), Message: "every backend exists"}}
	ns := o.meta.Namespace
	if parent.Namespace != nil && *parent.Namespace != "" {
		ns = string(*parent.Namespace)
	}
	svc := services[ns+"/"+string(parent.Name)]
	var ports []string
	switch {
	case ns != o.meta.Namespace:
		// A producer route in another namespace would route every client's
		// requests to someone else's Service: only consumer routes, in the
		// client's namespace, could, and they are not served yet.
		st.Accepted = condition{Reason: string(gatewayv1.RouteReasonUnsupportedValue),
			Message: fmt.Sprintf("the parent Service %s/%s is in another namespace: routes for one namespace's clients only are not supported; put the route in the Service's namespace", ns, parent.Name)}
	case svc == nil:
		st.Accepted = condition{Reason: string(gatewayv1.RouteReasonNoMatchingParent),
			Message: fmt.Sprintf("no Service %s/%s", ns, parent.Name)}
	default:
		for _, p := range svc.Spec.Ports {
			if (p.Protocol == "" || p.Protocol == "TCP") && (parent.Port == nil || int32(*parent.Port) == p.Port) {
				ports = append(ports, ns+"/"+svc.Metadata.Name+":"+strconv.Itoa(int(p.Port)))
			}
		}
		if len(ports) == 0 {
			which := "no TCP port"
			if parent.Port != nil {
				which = fmt.Sprintf("no TCP port %d", *parent.Port)
			}
			st.Accepted = condition{Reason: string(gatewayv1.RouteReasonNoMatchingParent),
				Message: fmt.Sprintf("Service %s/%s has %s", ns, parent.Name, which)}
		}
	}
	if !st.Accepted.OK {
		return st, nil
	}
	var unsupported []string
	for i, rule := range o.rules {
		for _, u := range rule.unsupported {
			unsupported = append(unsupported, fmt.Sprintf("rule %d: %s", i, u))
		}
	}
	if len(unsupported) > 0 {
		st.Accepted = condition{Reason: string(gatewayv1.RouteReasonUnsupportedValue),
			Message: "not supported by the mesh: " + strings.Join(unsupported, "; ")}
		return st, nil
	}
	var missing []string
	reason := ""
	for i := range o.rules {
		rule := &o.rules[i]
		for j, ref := range rule.backendRefs {
			bns := ns
			if ref.Namespace != nil && *ref.Namespace != "" {
				bns = string(*ref.Namespace)
			}
			switch {
			case ref.Group != nil && *ref.Group != "" || ref.Kind != nil && *ref.Kind != "Service":
				missing = append(missing, fmt.Sprintf("rule %d: backend %s is not a Service", i, ref.Name))
				reason = cmp.Or(reason, string(gatewayv1.RouteReasonInvalidKind))
			case bns != ns:
				missing = append(missing, fmt.Sprintf("rule %d: backend %s/%s is in another namespace", i, bns, ref.Name))
				reason = cmp.Or(reason, string(gatewayv1.RouteReasonRefNotPermitted))
			case services[bns+"/"+string(ref.Name)] == nil:
				// The proxy answers 500 for this backend's share of
				// requests, as the Gateway API asks: it knows no such
				// service either.
				missing = append(missing, fmt.Sprintf("rule %d: no Service %s/%s", i, bns, ref.Name))
				reason = cmp.Or(reason, string(gatewayv1.RouteReasonBackendNotFound))
				continue
			default:
				continue
			}
			// A Service the route may not name: a name that never
			// resolves, so that its share is answered 500 too.
			rule.route.Backends[j].Service = discovery.Key{Host: "unresolved." + host(bns, string(ref.Name)), Port: rule.route.Backends[j].Service.Port}
		}
	}
	if len(missing) > 0 {
		st.ResolvedRefs = condition{Reason: reason, Message: strings.Join(missing, "; ")}
	}
	return st, ports
}

// readHTTPRoute reads an HTTPRoute's rules into discovery routes.
func readHTTPRoute(r *httpRoute, host func(ns, name string) string) routeObject {
	o := routeObject{kind: "HTTPRoute", meta: &r.Metadata, current: r.Status.Parents}
	o.parents = meshParents(r.Spec.ParentRefs)
	defaults, problems := failureAnnotations(r.Metadata.Annotations)
	for i, rule := range r.Spec.Rules {
		rr := routeRule{route: discovery.Route{Name: ruleName(&r.Metadata, i, rule.Name)}, unsupported: problems}
		for _, m := range rule.Matches {
			dm, bad := httpMatch(m)
			rr.route.Matches = append(rr.route.Matches, dm)
			rr.unsupported = append(rr.unsupported, bad...)
		}
		for _, f := range rule.Filters {
			switch {
			case f.Type == gatewayv1.HTTPRouteFilterRequestHeaderModifier && f.RequestHeaderModifier != nil:
				rr.route.RequestHeaders = headerModifier(f.RequestHeaderModifier)
			case f.Type == gatewayv1.HTTPRouteFilterResponseHeaderModifier && f.ResponseHeaderModifier != nil:
				rr.route.ResponseHeaders = headerModifier(f.ResponseHeaderModifier)
			case f.Type == gatewayv1.HTTPRouteFilterRequestRedirect && f.RequestRedirect != nil:
				rr.route.Redirect = redirect(f.RequestRedirect)
				if len(rule.BackendRefs) > 0 {
					rr.unsupported = append(rr.unsupported, "a RequestRedirect beside backendRefs")
				}
			default:
				rr.unsupported = append(rr.unsupported, fmt.Sprintf("filter %s", f.Type))
			}
		}
		for _, b := range rule.BackendRefs {
			rr.addBackend(r.Metadata.Namespace, b.BackendRef, len(b.Filters), host)
		}
		rr.route.Timeouts, rr.route.Retries = defaults.timeouts, defaults.retries
		if t := rule.Timeouts; t != nil {
			if t.Request != nil {
				d, err := gatewayDuration(*t.Request)
				if err != nil {
					rr.unsupported = append(rr.unsupported, "timeouts.request: "+err.Error())
				}
				rr.route.Timeouts.Request = d
			}
			if t.BackendRequest != nil {
				d, err := gatewayDuration(*t.BackendRequest)
				if err != nil {
					rr.unsupported = append(rr.unsupported, "timeouts.backendRequest: "+err.Error())
				}
				rr.route.Timeouts.Attempt = d
			}
		}
		if rt := rule.Retry; rt != nil {
			retries := discovery.DefaultRetries()
			if defaults.retries != nil {
				retries = *defaults.retries
			}
			if rt.Attempts != nil {
				retries.MaxRetries = *rt.Attempts
				if retries.MaxRetries < 0 || retries.MaxRetries > 10 {
					rr.unsupported = append(rr.unsupported, fmt.Sprintf("retry.attempts %d (at most 10)", retries.MaxRetries))
				}
			}
			retries.Statuses = nil
			for _, c := range rt.Codes {
				retries.Statuses = append(retries.Statuses, discovery.StatusRange{Min: int(c), Max: int(c)})
			}
			if rt.Backoff != nil {
				d, err := gatewayDuration(*rt.Backoff)
				if err != nil {
					rr.unsupported = append(rr.unsupported, "retry.backoff: "+err.Error())
				}
				retries.Backoff = d
			}
			rr.route.Retries = &retries
		}
		rr.check()
		o.rules = append(o.rules, rr)
	}
	return o
}

// readGRPCRoute reads a GRPCRoute's rules: a method match is a match on
// the request's path (/package.Service/Method).
func readGRPCRoute(r *grpcRoute, host func(ns, name string) string) routeObject {
	o := routeObject{kind: "GRPCRoute", meta: &r.Metadata, current: r.Status.Parents}
	o.parents = meshParents(r.Spec.ParentRefs)
	defaults, problems := failureAnnotations(r.Metadata.Annotations)
	for i, rule := range r.Spec.Rules {
		rr := routeRule{route: discovery.Route{Name: ruleName(&r.Metadata, i, rule.Name), Timeouts: defaults.timeouts, Retries: defaults.retries},
			unsupported: problems}
		for _, m := range rule.Matches {
			var dm discovery.RouteMatch
			if mm := m.Method; mm != nil {
				if mm.Type != nil && *mm.Type != gatewayv1.GRPCMethodMatchExact {
					rr.unsupported = append(rr.unsupported, fmt.Sprintf("method match type %s", *mm.Type))
				}
				switch service, method := deref(mm.Service), deref(mm.Method); {
				case service != "" && method != "":
					dm.PathType, dm.Path = discovery.PathExact, "/"+service+"/"+method
				case service != "":
					dm.PathType, dm.Path = discovery.PathPrefix, "/"+service
				case method != "":
					rr.unsupported = append(rr.unsupported, "a method match without a service")
				}
			}
			for _, h := range m.Headers {
				if h.Type != nil && *h.Type != gatewayv1.GRPCHeaderMatchExact {
					rr.unsupported = append(rr.unsupported, fmt.Sprintf("header match type %s", *h.Type))
				}
				dm.Headers = append(dm.Headers, discovery.NameValue{Name: string(h.Name), Value: h.Value})
			}
			rr.route.Matches = append(rr.route.Matches, dm)
		}
		for _, f := range rule.Filters {
			switch {
			case f.Type == gatewayv1.GRPCRouteFilterRequestHeaderModifier && f.RequestHeaderModifier != nil:
				rr.route.RequestHeaders = headerModifier(f.RequestHeaderModifier)
			case f.Type == gatewayv1.GRPCRouteFilterResponseHeaderModifier && f.ResponseHeaderModifier != nil:
				rr.route.ResponseHeaders = headerModifier(f.ResponseHeaderModifier)
			default:
				rr.unsupported = append(rr.unsupported, fmt.Sprintf("filter %s", f.Type))
			}
		}
		for _, b := range rule.BackendRefs {
			rr.addBackend(r.Metadata.Namespace, b.BackendRef, len(b.Filters), host)
		}
		rr.check()
		o.rules = append(o.rules, rr)
	}
	return o
}

// check refuses what a proxy would refuse, so that one route cannot
// make every proxy reject the Service's routes.
func (rr *routeRule) check() {
	if len(rr.unsupported) == 0 {
		if err := rr.route.Validate(); err != nil {
			rr.unsupported = append(rr.unsupported, err.Error())
		}
	}
}

// headerModifier is a header filter in the mesh's words.
func headerModifier(f *gatewayv1.HTTPHeaderFilter) *discovery.HeaderModifier {
	m := &discovery.HeaderModifier{Remove: f.Remove}
	for _, h := range f.Set {
		m.Set = append(m.Set, discovery.NameValue{Name: string(h.Name), Value: h.Value})
	}
	for _, h := range f.Add {
		m.Add = append(m.Add, discovery.NameValue{Name: string(h.Name), Value: h.Value})
	}
	return m
}

// redirect is a RequestRedirect filter in the mesh's words.
func redirect(f *gatewayv1.HTTPRequestRedirectFilter) *discovery.Redirect {
	rd := &discovery.Redirect{Scheme: deref(f.Scheme), Hostname: deref(f.Hostname)}
	if f.Port != nil {
		rd.Port = uint16(*f.Port)
	}
	if f.StatusCode != nil {
		rd.StatusCode = *f.StatusCode
	}
	if p := f.Path; p != nil {
		switch p.Type {
		case gatewayv1.FullPathHTTPPathModifier:
			rd.FullPath = p.ReplaceFullPath
		case gatewayv1.PrefixMatchHTTPPathModifier:
			rd.PrefixMatch = p.ReplacePrefixMatch
		}
	}
	return rd
}

// addBackend adds a weighted backend (weight 1 unless given; a Service
// backend names its port). Filters on a backend are not supported.
func (rr *routeRule) addBackend(namespace string, b gatewayv1.BackendRef, filters int, host func(ns, name string) string) {
	if filters > 0 {
		rr.unsupported = append(rr.unsupported, fmt.Sprintf("filters on backend %s", b.Name))
	}
	ns := namespace
	if b.Namespace != nil && *b.Namespace != "" {
		ns = string(*b.Namespace)
	}
	weight := uint32(1)
	if b.Weight != nil {
		weight = uint32(max(*b.Weight, 0))
	}
	var port uint16
	if b.Port != nil {
		port = uint16(*b.Port)
	} else if b.Kind == nil || *b.Kind == "Service" {
		rr.unsupported = append(rr.unsupported, fmt.Sprintf("backend %s without a port", b.Name))
	}
	rr.backendRefs = append(rr.backendRefs, b.BackendObjectReference)
	rr.route.Backends = append(rr.route.Backends, discovery.RouteBackend{Service: discovery.Key{Host: host(ns, string(b.Name)), Port: port}, Weight: weight})
}

// httpMatch reads one HTTPRoute match; what it cannot express is named.
func httpMatch(m gatewayv1.HTTPRouteMatch) (discovery.RouteMatch, []string) {
	var dm discovery.RouteMatch
	var bad []string
	if p := m.Path; p != nil {
		typ := gatewayv1.PathMatchPathPrefix
		if p.Type != nil {
			typ = *p.Type
		}
		switch typ {
		case gatewayv1.PathMatchExact:
			dm.PathType = discovery.PathExact
		case gatewayv1.PathMatchPathPrefix:
			dm.PathType = discovery.PathPrefix
		default:
			bad = append(bad, fmt.Sprintf("path match type %s", typ))
		}
		dm.Path = cmp.Or(deref(p.Value), "/")
	}
	for _, h := range m.Headers {
		if h.Type != nil && *h.Type != gatewayv1.HeaderMatchExact {
			bad = append(bad, fmt.Sprintf("header match type %s", *h.Type))
		}
		dm.Headers = append(dm.Headers, discovery.NameValue{Name: string(h.Name), Value: h.Value})
	}
	for _, q := range m.QueryParams {
		if q.Type != nil && *q.Type != gatewayv1.QueryParamMatchExact {
			bad = append(bad, fmt.Sprintf("query parameter match type %s", *q.Type))
		}
		dm.QueryParams = append(dm.QueryParams, discovery.NameValue{Name: string(q.Name), Value: q.Value})
	}
	if m.Method != nil {
		dm.Method = string(*m.Method)
	}
	return dm, bad
}

// meshParents are the parents that are Services; a route may also name
// Gateways, which are some other controller's to serve.
func meshParents(refs []gatewayv1.ParentReference) []gatewayv1.ParentReference {
	var out []gatewayv1.ParentReference
	for _, p := range refs {
		if serviceParent(p) {
			out = append(out, p)
		}
	}
	return out
}

// ruleName names a rule in metrics, tap and errors: namespace/route/rule,
// the rule by its name when it has one, else by its index.
func ruleName(m *kubeapi.ObjectMeta, i int, name *gatewayv1.SectionName) string {
	if name != nil && *name != "" {
		return m.Key() + "/" + string(*name)
	}
	return m.Key() + "/" + strconv.Itoa(i)
}

// gatewayDuration reads the Gateway API's duration (GEP-2257: "1h", "2s",
// "500ms"); zero means none.
func gatewayDuration(d gatewayv1.Duration) (time.Duration, error) {
	v, err := time.ParseDuration(string(d))
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%q is not a duration", d)
	}
	return v, nil
}

func deref[T ~string](p *T) string {
	if p == nil {
		return ""
	}
	return string(*p)
}
