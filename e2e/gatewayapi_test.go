package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
)

// installGatewayAPI installs the Gateway API's HTTPRoute and GRPCRoute
// CRDs, as released in the module the controller is built with.
func installGatewayAPI(t *testing.T, c *cluster) {
	t.Helper()
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		t.Fatalf("finding the Gateway API module: %v", err)
	}
	for _, kind := range []string{"httproutes", "grpcroutes"} {
		data, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(dir)), "config/crd/standard/gateway.networking.k8s.io_"+kind+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range decodeObjects(t, data) {
			if err := c.apply(o); err != nil {
				t.Fatalf("installing the %s CRD: %v", kind, err)
			}
			c.waitEstablished(o.GetName())
		}
	}
	c.mapper.Reset()
}

// createService makes a Service with one port and an EndpointSlice of
// one endpoint behind it.
func createService(t *testing.T, client kubernetes.Interface, ns, name, portName string, port, targetPort int, ip string) {
	t.Helper()
	if _, err := client.CoreV1().Services(ns).Create(t.Context(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: portName, Port: int32(port)}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.DiscoveryV1().EndpointSlices(ns).Create(t.Context(), endpointSlice(ns, name+"-1", name, portName, targetPort, ip), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

var httpRoutes = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}

// routeConditions are the mesh controller's conditions on a route, as
// "Type=Status/Reason" strings.
func routeConditions(t *testing.T, c *cluster, ns, name string) []string {
	t.Helper()
	u, err := c.dyn.Resource(httpRoutes).Namespace(ns).Get(c.ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	parents, _, _ := unstructured.NestedSlice(u.Object, "status", "parents")
	var out []string
	for _, p := range parents {
		pm := p.(map[string]any)
		if pm["controllerName"] != "mesh.io/controller" {
			continue
		}
		conds, _ := pm["conditions"].([]any)
		for _, cond := range conds {
			cm := cond.(map[string]any)
			out = append(out, fmt.Sprintf("%s=%s/%s", cm["type"], cm["status"], cm["reason"]))
		}
	}
	return out
}

func waitConditions(t *testing.T, c *cluster, ns, name string, want ...string) {
	t.Helper()
	var got []string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if got = routeConditions(t, c, ns, name); strings.Join(got, " ") == strings.Join(want, " ") {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("HTTPRoute %s/%s: conditions %v; want %v", ns, name, got, want)
}

// An HTTPRoute attached to a Service splits its traffic, picks backends by
// header, moves when its weights change, and gets a status from the
// controller that leads; a route that cannot be served says why; when the
// leader dies another replica goes on writing status.
func TestHTTPRoutesFromTheAPIServer(t *testing.T) {
	c := startCluster(t)
	installGatewayAPI(t, c)
	client := kubernetes.NewForConfigOrDie(c.env.Config)
	ctx := t.Context()
	ctrl := newKubeController(t, c.env, client)
	ctrl.extra = []string{"--identity", "replica-one", "--lease-duration", "3s"}
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := newPodNetwork(t)
	ips, bs := pods.backends(t, 2, 8080) // web, web-v2
	for i, name := range []string{"web", "web-v2"} {
		createService(t, client, "shop", name, "http", 80, 8080, ips[i])
	}
	ctrl.start(t)
	mp := xdsProxy(t, ctrl.xds, "shop")
	cl := newClient(mp.outbound)

	route := func(v2Weight int) string {
		return fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-split, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
    - matches: [{headers: [{name: x-canary, value: "1"}]}]
      backendRefs: [{name: web-v2, port: 80}]
    - backendRefs:
        - {name: web, port: 80, weight: %d}
        - {name: web-v2, port: 80, weight: %d}
`, 100-v2Weight, v2Weight)
	}
	apply := func(manifest string) {
		t.Helper()
		for _, o := range decodeObjects(t, []byte(manifest)) {
			if err := c.apply(o); err != nil {
				t.Fatalf("applying %s: %v", o.GetName(), err)
			}
		}
	}
	share := func(n int) float64 {
		t.Helper()
		got := hitsAfter(t, cl, "web", n, bs)
		return float64(got[1]) / float64(got[0]+got[1])
	}

	apply(route(10))
	waitConditions(t, c, "shop", "web-split", "Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs")
	waitFor(t, "the proxy to follow the canary header", func() bool {
		return hitsAfter(t, cl, "web", 5, bs, "x-canary", "1")[1] == 5
	})
	if got := hitsAfter(t, cl, "web", 100, bs, "x-canary", "1"); got[1] != 100 {
		t.Errorf("with x-canary: 1, web/web-v2 got %v; want all on web-v2", got)
	}
	if s := share(2000); s < 0.07 || s > 0.13 {
		t.Errorf("a 90/10 split sent %.1f%% of 2,000 requests to web-v2", 100*s)
	} else {
		t.Logf("90/10 split: %.1f%% to web-v2", 100*s)
	}
	apply(route(50))
	waitFor(t, "the split to move to 50/50", func() bool { s := share(100); return s > 0.3 })
	if s := share(1000); s < 0.42 || s > 0.58 {
		t.Errorf("a 50/50 split sent %.1f%% of 1,000 requests to web-v2", 100*s)
	}

	// Filters: a header set on the way in, and a redirect.
	apply(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: filters, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /tagged}}]
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-route, value: filters}]}}]
      backendRefs: [{name: web, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /old}}]
      filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, statusCode: 301}}]
`)
	waitConditions(t, c, "shop", "filters", "Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs")
	waitFor(t, "the header filter", func() bool {
		resp, _, err := cl.get("web", "/tagged")
		return err == nil && resp.StatusCode == 200 && bs[0].lastRequest().Header.Get("X-Route") == "filters"
	})
	noFollow := *cl.http
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, _ := http.NewRequest("GET", "http://"+mp.outbound+"/old/x", nil)
	req.Host = "web"
	if resp, err := noFollow.Do(req); err != nil || resp.StatusCode != 301 || resp.Header.Get("Location") != "http://web/new/x" {
		t.Errorf("the redirect route: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// What cannot be served says why, and changes nothing.
	apply(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-nothing, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web-v2, port: 80}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /nothing}}]
      backendRefs: [{name: nope, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: rewrites, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web-v2, port: 80}]
  rules:
    - filters: [{type: URLRewrite, urlRewrite: {hostname: elsewhere}}]
      backendRefs: [{name: web, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orphan, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: gone, port: 80}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
`)
	waitConditions(t, c, "shop", "to-nothing", "Accepted=True/Accepted", "ResolvedRefs=False/BackendNotFound")
	waitConditions(t, c, "shop", "rewrites", "Accepted=False/UnsupportedValue", "ResolvedRefs=True/ResolvedRefs")
	waitConditions(t, c, "shop", "orphan", "Accepted=False/NoMatchingParent", "ResolvedRefs=True/ResolvedRefs")
	waitFor(t, "the unresolved backend's share to be refused", func() bool {
		resp, _, err := cl.get("web-v2", "/nothing/x")
		return err == nil && resp.StatusCode == 500 && strings.Contains(resp.Header.Get("mesh-error"), "route shop/to-nothing/0 of web-v2.shop.svc.cluster.local:80: backend nope.shop.svc.cluster.local:80")
	})
	// With a route accepted, what no route of web-v2 matches is not found
	// (the rejected one adds no match).
	if resp, _, err := cl.get("web-v2", "/"); err != nil || resp.StatusCode != 404 || !strings.Contains(resp.Header.Get("mesh-error"), "no route of web-v2.shop.svc.cluster.local:80 matches GET /") {
		t.Errorf("GET / of web-v2, which no route matches: %v %v", resp, err)
	}

	// A proxyless gRPC client follows a GRPCRoute's weighted split from
	// the same xDS server.
	grpcIPs := append(pods.grpcBackends(t, 1, 50051), pods.grpcBackends(t, 1, 50051)...)
	for i, name := range []string{"greeter", "greeter-v2"} {
		createService(t, client, "shop", name, "grpc", 50051, 50051, grpcIPs[i])
	}
	apply(`
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: greeter-split, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: greeter, port: 50051}]
  rules:
    - matches: [{method: {service: grpc.health.v1.Health}}]
      backendRefs:
        - {name: greeter, port: 50051, weight: 80}
        - {name: greeter-v2, port: 50051, weight: 20}
`)
	conn := proxylessConn(t, ctrl.xds, "greeter.shop.svc.cluster.local:50051")
	var lastErr error
	waitFor(t, "the gRPC client to follow the split", func() bool {
		peers, err := tryGRPCPeers(t, conn, 20)
		if err != nil {
			if lastErr == nil || err.Error() != lastErr.Error() {
				t.Logf("while the split takes effect: %v", err)
			}
			lastErr = err
		}
		return peers[grpcIPs[1]] > 0
	})
	peers := grpcPeers(t, conn, 1000)
	if v2 := float64(peers[grpcIPs[1]]) / 1000; v2 < 0.15 || v2 > 0.25 {
		t.Errorf("a proxyless gRPC client's 80/20 split: %v; want 15-25%% on greeter-v2 (%s)", peers, grpcIPs[1])
	} else {
		t.Logf("proxyless gRPC 80/20 split: %.1f%% to greeter-v2", 100*v2)
	}

	// A second replica waits; the leader dies; the second writes status.
	two := *ctrl
	two.xds, two.identity, two.admin, two.webhook = freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	two.extra = []string{"--identity", "replica-two", "--lease-duration", "3s"}
	two.start(t)
	ctrl.proc.stop(9, 0) // SIGKILL: the lease is not released
	apply(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: after-failover, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
    - matches: [{path: {type: Exact, value: /v2}}]
      backendRefs: [{name: web-v2, port: 80}]
`)
	waitConditions(t, c, "shop", "after-failover", "Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs")
	lease, err := client.CoordinationV1().Leases("mesh-system").Get(ctx, "mesh-controller", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != "replica-two" {
		t.Errorf("the lease after the leader died: %v %v; want replica-two holding it", lease.Spec.HolderIdentity, err)
	}
}
