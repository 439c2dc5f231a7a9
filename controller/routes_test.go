package controller

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/kubeapi"
)

func testHost(ns, name string) string { return name + "." + ns + ".svc.cluster.local" }

func svc(ns, name string, ports ...int32) *kubeapi.Service {
	s := &kubeapi.Service{Metadata: kubeapi.ObjectMeta{Namespace: ns, Name: name}}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, kubeapi.ServicePort{Port: p})
	}
	return s
}

// httpRouteYAML reads a route as the informer would from the API server.
func readRoute[T any](t *testing.T, js string) *T {
	t.Helper()
	r := new(T)
	if err := json.Unmarshal([]byte(js), r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestMeshRoutesBecomeTheServicesRoutes(t *testing.T) {
	services := map[string]*kubeapi.Service{
		"shop/web": svc("shop", "web", 80, 8080), "shop/web-v2": svc("shop", "web-v2", 80), "shop/grpc": svc("shop", "grpc", 9090),
	}
	older := readRoute[httpRoute](t, `{"metadata":{"namespace":"shop","name":"split","generation":3,"creationTimestamp":"2026-01-01T00:00:00Z",
		"annotations":{"retry.mesh.io/budget-ratio":"0.5"}},
	"spec":{"parentRefs":[{"group":"","kind":"Service","name":"web","port":80},{"name":"some-gateway"}],
		"rules":[
			{"matches":[{"path":{"type":"PathPrefix","value":"/api"},"headers":[{"name":"x-canary","value":"1"}],"queryParams":[{"name":"v","value":"2"}],"method":"GET"}],
			 "backendRefs":[{"name":"web-v2","port":80}],
			 "timeouts":{"request":"2s"},"retry":{"attempts":2,"codes":[503,504]}},
			{"backendRefs":[{"name":"web","port":80,"weight":90},{"name":"web-v2","port":80,"weight":10}]}]}}`)
	newer := readRoute[httpRoute](t, `{"metadata":{"namespace":"shop","name":"all-ports","creationTimestamp":"2026-02-01T00:00:00Z"},
	"spec":{"parentRefs":[{"group":"","kind":"Service","name":"web"}],"rules":[{"name":"login","matches":[{"path":{"type":"Exact","value":"/login"}}]}]}}`)
	grpc := readRoute[grpcRoute](t, `{"metadata":{"namespace":"shop","name":"rpc","creationTimestamp":"2026-01-15T00:00:00Z"},
	"spec":{"parentRefs":[{"group":"","kind":"Service","name":"grpc"}],"rules":[
		{"matches":[{"method":{"service":"pkg.Users","method":"Get"}},{"method":{"service":"pkg.Orders"},"headers":[{"name":"x-tenant","value":"a"}]}],
		 "backendRefs":[{"name":"grpc","port":9090}]}]}}`)

	set := buildRoutes(services, []*httpRoute{newer, older}, []*grpcRoute{grpc}, testHost)
	web, v2 := discovery.Key{Host: "web.shop.svc.cluster.local", Port: 80}, discovery.Key{Host: "web-v2.shop.svc.cluster.local", Port: 80}
	budget := discovery.DefaultRetries()
	budget.BudgetRatio = 0.5
	routeRetries := budget
	routeRetries.MaxRetries, routeRetries.Statuses = 2, []discovery.StatusRange{{Min: 503, Max: 503}, {Min: 504, Max: 504}}
	login := discovery.Route{Name: "shop/all-ports/login", Matches: []discovery.RouteMatch{{PathType: discovery.PathExact, Path: "/login"}}}
	want := map[string][]discovery.Route{
		// The older route first: among equals it wins.
		"shop/web:80": {
			{Name: "shop/split/0", Matches: []discovery.RouteMatch{{PathType: discovery.PathPrefix, Path: "/api", Method: "GET",
				Headers: []discovery.NameValue{{Name: "x-canary", Value: "1"}}, QueryParams: []discovery.NameValue{{Name: "v", Value: "2"}}}},
				Backends: []discovery.RouteBackend{{Service: v2, Weight: 1}}, Timeouts: discovery.Timeouts{Request: 2 * time.Second}, Retries: &routeRetries},
			{Name: "shop/split/1", Backends: []discovery.RouteBackend{{Service: web, Weight: 90}, {Service: v2, Weight: 10}}, Retries: &budget},
			login,
		},
		// A parent without a port routes every port of its Service.
		"shop/web:8080": {login},
		"shop/grpc:9090": {{Name: "shop/rpc/0", Matches: []discovery.RouteMatch{
			{PathType: discovery.PathExact, Path: "/pkg.Users/Get"},
			{PathType: discovery.PathPrefix, Path: "/pkg.Orders", Headers: []discovery.NameValue{{Name: "x-tenant", Value: "a"}}}},
			Backends: []discovery.RouteBackend{{Service: discovery.Key{Host: "grpc.shop.svc.cluster.local", Port: 9090}, Weight: 1}}}},
	}
	if diff := cmp.Diff(want, set.byPort); diff != "" {
		t.Errorf("routes by service port (-want +got):\n%s", diff)
	}
	for _, st := range set.statuses {
		if !st.Accepted.OK || !st.ResolvedRefs.OK {
			t.Errorf("%s %s: %+v", st.Kind, st.Name, st)
		}
	}
	if len(set.statuses) != 3 {
		t.Errorf("%d parent statuses; want one per Service parent (the Gateway is another controller's)", len(set.statuses))
	}
}

func TestARouteTheMeshCannotServeSaysWhy(t *testing.T) {
	udp := svc("shop", "dns", 53)
	udp.Spec.Ports[0].Protocol = "UDP"
	services := map[string]*kubeapi.Service{"shop/web": svc("shop", "web", 80), "other/db": svc("other", "db", 5432), "shop/dns": udp}
	for _, tc := range []struct {
		name, spec       string
		accepted, reason string
		message          string
	}{
		{"no parent", `{"parentRefs":[{"group":"","kind":"Service","name":"gone"}],"rules":[{}]}`,
			"False", "NoMatchingParent", "no Service shop/gone"},
		{"no such port", `{"parentRefs":[{"group":"","kind":"Service","name":"web","port":81}],"rules":[{}]}`,
			"False", "NoMatchingParent", "has no TCP port 81"},
		{"no TCP port at all", `{"parentRefs":[{"group":"","kind":"Service","name":"dns"}],"rules":[{}]}`,
			"False", "NoMatchingParent", "Service shop/dns has no TCP port"},
		{"parent elsewhere", `{"parentRefs":[{"group":"","kind":"Service","name":"db","namespace":"other"}],"rules":[{}]}`,
			"False", "UnsupportedValue", "in another namespace"},
		{"filter", `{"parentRefs":[{"group":"","kind":"Service","name":"web"}],"rules":[{"filters":[{"type":"URLRewrite","urlRewrite":{"hostname":"x"}}]}]}`,
			"False", "UnsupportedValue", "rule 0: filter URLRewrite"},
		{"regex", `{"parentRefs":[{"group":"","kind":"Service","name":"web"}],"rules":[{"matches":[{"path":{"type":"RegularExpression","value":"/a.*"}}]}]}`,
			"False", "UnsupportedValue", "path match type RegularExpression"},
		{"too many retries", `{"parentRefs":[{"group":"","kind":"Service","name":"web"}],"rules":[{"retry":{"attempts":11}}]}`,
			"False", "UnsupportedValue", "retry.attempts 11"},
		{"bad annotation", ``, "False", "UnsupportedValue", "timeout.mesh.io/request"},
		{"missing backend", `{"parentRefs":[{"group":"","kind":"Service","name":"web"}],"rules":[{"backendRefs":[{"name":"nope","port":80}]}]}`,
			"True", "BackendNotFound", "rule 0: no Service shop/nope"},
		{"backend elsewhere", `{"parentRefs":[{"group":"","kind":"Service","name":"web"}],"rules":[{"backendRefs":[{"name":"db","namespace":"other","port":5432}]}]}`,
			"True", "RefNotPermitted", "backend other/db is in another namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			meta := `{"namespace":"shop","name":"r"}`
			spec := tc.spec
			if spec == "" {
				meta = `{"namespace":"shop","name":"r","annotations":{"timeout.mesh.io/request":"soon"}}`
				spec = `{"parentRefs":[{"group":"","kind":"Service","name":"web"}],"rules":[{}]}`
			}
			r := readRoute[httpRoute](t, `{"metadata":`+meta+`,"spec":`+spec+`}`)
			set := buildRoutes(services, []*httpRoute{r}, nil, testHost)
			if len(set.statuses) != 1 {
				t.Fatalf("%d statuses", len(set.statuses))
			}
			st := set.statuses[0]
			cond := st.Accepted
			if tc.accepted == "True" {
				if !st.Accepted.OK {
					t.Fatalf("not accepted: %+v", st.Accepted)
				}
				cond = st.ResolvedRefs
			}
			if cond.OK || cond.Reason != tc.reason || !strings.Contains(cond.Message, tc.message) {
				t.Errorf("condition %+v; want reason %s naming %q", cond, tc.reason, tc.message)
			}
			routes := set.byPort["shop/web:80"]
			if tc.accepted == "False" && len(routes) != 0 {
				t.Errorf("a route not accepted still routes: %+v", routes)
			}
			if tc.name == "backend elsewhere" && (len(routes) != 1 || !strings.HasPrefix(routes[0].Backends[0].Service.Host, "unresolved.")) {
				t.Errorf("a backend the route may not name must not resolve: %+v", routes)
			}
		})
	}
}

func TestRouteStatusKeepsOthersEntriesAndTransitionTimes(t *testing.T) {
	parent := gatewayv1.ParentReference{Name: "web"}
	then := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	now := metav1.NewTime(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC))
	other := gatewayv1.RouteParentStatus{ParentRef: parent, ControllerName: "example.com/gateway",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: "True", Reason: "Accepted", LastTransitionTime: then}}}
	ours := func(accepted metav1.ConditionStatus, reason string, at metav1.Time) gatewayv1.RouteParentStatus {
		return gatewayv1.RouteParentStatus{ParentRef: parent, ControllerName: ControllerName, Conditions: []metav1.Condition{
			{Type: "Accepted", Status: accepted, ObservedGeneration: 2, LastTransitionTime: at, Reason: reason, Message: "m"},
			{Type: "ResolvedRefs", Status: "True", ObservedGeneration: 2, LastTransitionTime: then, Reason: "ResolvedRefs", Message: "m"}}}
	}
	current := []gatewayv1.RouteParentStatus{other, ours("True", "Accepted", then)}
	st := RouteParentStatus{Parent: parent, Generation: 2, Accepted: condition{OK: true, Reason: "Accepted", Message: "m"},
		ResolvedRefs: condition{OK: true, Reason: "ResolvedRefs", Message: "m"}}
	got := wantedParents([]RouteParentStatus{st}, current, now)
	if !sameParents(got, current) {
		t.Errorf("an unchanged status would be written again:\n%s", cmp.Diff(current, got))
	}
	st.Accepted = condition{Reason: "UnsupportedValue", Message: "m"}
	got = wantedParents([]RouteParentStatus{st}, current, now)
	want := []gatewayv1.RouteParentStatus{other, ours("False", "UnsupportedValue", now)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("a changed condition (-want +got):\n%s", diff)
	}
}

func TestHeaderFiltersAndRedirectsBecomeTheRoutes(t *testing.T) {
	services := map[string]*kubeapi.Service{"shop/web": svc("shop", "web", 80)}
	r := readRoute[httpRoute](t, `{"metadata":{"namespace":"shop","name":"f"},"spec":{"parentRefs":[{"group":"","kind":"Service","name":"web"}],"rules":[
		{"filters":[{"type":"RequestHeaderModifier","requestHeaderModifier":{"set":[{"name":"x-a","value":"1"}],"add":[{"name":"x-b","value":"2"}],"remove":["x-c"]}},
		            {"type":"ResponseHeaderModifier","responseHeaderModifier":{"set":[{"name":"x-d","value":"4"}]}}]},
		{"matches":[{"path":{"type":"PathPrefix","value":"/old"}}],
		 "filters":[{"type":"RequestRedirect","requestRedirect":{"scheme":"https","hostname":"new.example","port":8443,"statusCode":301,"path":{"type":"ReplacePrefixMatch","replacePrefixMatch":"/new"}}}]},
		{"filters":[{"type":"RequestRedirect","requestRedirect":{"hostname":"x"}}],"backendRefs":[{"name":"web","port":80}]}]}}`)
	set := buildRoutes(services, []*httpRoute{r}, nil, testHost)
	if st := set.statuses[0]; st.Accepted.OK || !strings.Contains(st.Accepted.Message, "rule 2: a RequestRedirect beside backendRefs") {
		t.Fatalf("a redirect beside backends: %+v", st.Accepted)
	}
	r.Spec.Rules = r.Spec.Rules[:2]
	set = buildRoutes(services, []*httpRoute{r}, nil, testHost)
	newPath := "/new"
	want := []discovery.Route{
		{Name: "shop/f/0", RequestHeaders: &discovery.HeaderModifier{Set: []discovery.NameValue{{Name: "x-a", Value: "1"}}, Add: []discovery.NameValue{{Name: "x-b", Value: "2"}}, Remove: []string{"x-c"}},
			ResponseHeaders: &discovery.HeaderModifier{Set: []discovery.NameValue{{Name: "x-d", Value: "4"}}}},
		{Name: "shop/f/1", Matches: []discovery.RouteMatch{{PathType: discovery.PathPrefix, Path: "/old"}},
			Redirect: &discovery.Redirect{Scheme: "https", Hostname: "new.example", Port: 8443, StatusCode: 301, PrefixMatch: &newPath}},
	}
	if diff := cmp.Diff(want, set.byPort["shop/web:80"]); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
}
