package cluster

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serverV2 is a second version of the test application's server, behind
// a Service of its own: the canary an HTTPRoute sends a share to.
func serverV2(ns string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: server-v2, namespace: %[1]s}
spec:
  selector: {app: server-v2}
  ports:
  - {name: http, port: 8080, targetPort: 8080}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: server-v2, namespace: %[1]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: server-v2}}
  template:
    metadata: {labels: {app: server-v2}}
    spec:
      serviceAccountName: server
      containers:
      - name: app
        image: %[2]s
        imagePullPolicy: Never
        args: [server]
        ports:
        - {name: http, containerPort: 8080}
        readinessProbe:
          httpGet: {path: /ready, port: 8080}
          periodSeconds: 1
`, ns, appImage)
}

func splitRoute(ns string, v2 int) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: canary, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: server, port: 8080}]
  rules:
  - backendRefs:
    - {name: server, port: 8080, weight: %d}
    - {name: server-v2, port: 8080, weight: %d}
`, ns, 100-v2, v2)
}

// v2Share is the share of a client Job's HTTP answers that came from
// server-v2's pods.
func v2Share(r result) (float64, int) {
	v2, all := 0, 0
	for name, n := range r.Servers {
		all += n
		if strings.HasPrefix(name, "server-v2-") {
			v2 += n
		}
	}
	return float64(v2) / float64(max(all, 1)), all
}

// A user installs the Gateway API's CRDs and splits a Service's traffic
// with an HTTPRoute, as in README.md: the controller accepts the route,
// the client proxies send a tenth to the canary, then all of it once the
// weights move.
func routesStep(t *testing.T) {
	const ns = "shop2"
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		t.Fatalf("finding the Gateway API module: %v", err)
	}
	crds := filepath.Join(strings.TrimSpace(string(dir)), "config/crd/standard")
	for _, kind := range []string{"httproutes", "grpcroutes"} {
		kubectl(t, "", "apply", "--server-side", "-f", filepath.Join(crds, "gateway.networking.k8s.io_"+kind+".yaml"))
	}
	kubectl(t, "", "wait", "--for=condition=Established", "crd/httproutes.gateway.networking.k8s.io", "crd/grpcroutes.gateway.networking.k8s.io", "--timeout=60s")
	apply := func(m string) { kubectl(t, meshCmd(t, m, "inject", "-"), "apply", "-f", "-") }
	apply(serverV2(ns))
	kubectl(t, "", "-n", ns, "rollout", "status", "deploy/server-v2", "--timeout=180s")

	kubectl(t, splitRoute(ns, 10), "apply", "-f", "-")
	status := func() string {
		return kubectl(t, "", "-n", ns, "get", "httproute", "canary", "-o",
			`jsonpath={range .status.parents[*].conditions[*]}{.type}={.status} {end}`)
	}
	deadline := time.Now().Add(30 * time.Second)
	for status() != "Accepted=True ResolvedRefs=True " {
		if time.Now().After(deadline) {
			t.Fatalf("HTTPRoute canary: conditions %q; want Accepted and ResolvedRefs true", status())
		}
		time.Sleep(500 * time.Millisecond)
	}
	apply(clientJob(ns, "split", 2000, 100))
	kubectl(t, "", "-n", ns, "wait", "pod", "-l", "app=split", "--for=condition=Ready", "--timeout=120s")
	time.Sleep(5 * time.Second)
	// The client's view, by route, while it runs.
	env := []string{"KUBECONFIG=" + cluster.Kubeconfig, "MESH_STATE_FILE=" + filepath.Join(t.TempDir(), "none.json")}
	out, stderr, err := meshRun("", env, "routes", "job/split", "-n", ns, "-o", "json")
	if err != nil {
		t.Fatalf("mesh routes job/split: %v\n%s", err, stderr)
	}
	var routes []struct {
		Route    string   `json:"route"`
		Services []string `json:"services"`
		RPS      float64  `json:"rps"`
	}
	if err := json.Unmarshal([]byte(out), &routes); err != nil {
		t.Fatalf("mesh routes -o json: %v\n%s", err, out)
	}
	found := false
	for _, r := range routes {
		if r.Route == ns+"/canary/0" {
			found = true
			if strings.Join(r.Services, " ") != "server-v2.shop2.svc.cluster.local:8080 server.shop2.svc.cluster.local:8080" || r.RPS < 20 {
				t.Errorf("mesh routes: the canary route sent %.0f rps to %v; want tens a second to both Services", r.RPS, r.Services)
			}
		}
	}
	if !found {
		t.Errorf("mesh routes job/split shows no row for the canary route:\n%s", out)
	}
	if out, stderr, err = meshRun("", env, "routes", "job/split", "-n", ns); err != nil {
		t.Errorf("mesh routes job/split: %v\n%s", err, stderr)
	}
	t.Logf("mesh routes job/split -n %s:\n%s", ns, out)
	r := waitJob(t, ns, "split", 3*time.Minute)
	share, all := v2Share(r)
	t.Logf("90/10 split: %.1f%% of %d answers from server-v2 (%v)", 100*share, all, r.Servers)
	if r.HTTPOK != 2000 || share < 0.07 || share > 0.13 {
		t.Errorf("a 90/10 split: %d of 2000 answered, %.1f%% by server-v2; want all, 7-13%%", r.HTTPOK, 100*share)
	}

	kubectl(t, splitRoute(ns, 100), "apply", "-f", "-")
	time.Sleep(2 * time.Second) // the controller, then each client proxy, within a second
	apply(clientJob(ns, "all-v2", 100, 50))
	r = waitJob(t, ns, "all-v2", 3*time.Minute)
	if share, _ := v2Share(r); r.HTTPOK != 100 || share != 1 {
		t.Errorf("with every weight on server-v2: %d of 100 answered, %.0f%% by server-v2 (%v)", r.HTTPOK, 100*share, r.Servers)
	}
	kubectl(t, "", "-n", ns, "delete", "httproute", "canary")
	kubectl(t, "", "-n", ns, "delete", "job", "split", "all-v2")
}
