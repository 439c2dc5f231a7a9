package cluster

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshproj/mesh/internal/golden"
	"github.com/meshproj/mesh/inventory/kube"
	"github.com/meshproj/mesh/stat"
)

// volatile masks what changes from run to run in a rendered table: rates,
// latencies, and the count of open connections that ends each row. What
// must not change (MESHED 2/2, SUCCESS 100.00%) stays.
var volatile = regexp.MustCompile(`\b\d+(\.\d+)?(rps|ms|µs|s)\b|\b\d+$`)

func mask(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = volatile.ReplaceAllString(l, "N")
	}
	s = strings.Join(lines, "\n")
	// Columns line up on the widths of what was masked: squeeze them.
	return regexp.MustCompile(` {2,}`).ReplaceAllString(s, "  ")
}

func diagnosticsStep(t *testing.T) {
	const ns = "shop"
	// Traffic for the proxies' windows: 3,000 calls at 50 a second, a
	// minute for every command below.
	kubectl(t, clientJob(ns, "stat-load", 3000, 50), "apply", "-f", "-")
	kubectl(t, "", "-n", ns, "wait", "pod", "-l", "app=stat-load", "--for=condition=Ready", "--timeout=120s")
	time.Sleep(5 * time.Second)
	env := []string{"KUBECONFIG=" + cluster.Kubeconfig, "MESH_STATE_FILE=" + filepath.Join(t.TempDir(), "none.json")}

	out, stderr, err := meshRun("", env, "stat", "deploy", "-n", ns)
	if err != nil {
		t.Fatalf("mesh stat deploy -n shop: %v\n%s", err, stderr)
	}
	t.Logf("mesh stat deploy -n shop:\n%s%s", stderr, out)
	if !strings.Contains(stderr, `namespace shop`) {
		t.Errorf("mesh stat did not say which cluster and namespace it read: %q", stderr)
	}
	golden.Check(t, "testdata/stat_deploy.golden", []byte(mask(out)))

	out, stderr, err = meshRun("", env, "stat", "deploy/server", "-n", ns, "-o", "json")
	if err != nil {
		t.Fatalf("mesh stat -o json: %v\n%s", err, stderr)
	}
	var rows []struct {
		Name        string   `json:"name"`
		Meshed      int      `json:"meshedReady"`
		Instances   int      `json:"instances"`
		SuccessRate *float64 `json:"successRate"`
		RPS         float64  `json:"rps"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 1 {
		t.Fatalf("mesh stat -o json: %v\n%s", err, out)
	}
	if r := rows[0]; r.Meshed != 2 || r.Instances != 2 || r.RPS < 10 || r.SuccessRate == nil || *r.SuccessRate != 1 {
		t.Errorf("deploy/server under 50 calls a second, all answered: %s", out)
	}

	out, stderr, err = meshRun("", env, "tap", "deploy/server", "-n", ns, "--max", "5", "-o", "json")
	if err != nil {
		t.Fatalf("mesh tap: %v\n%s", err, stderr)
	}
	if n := strings.Count(strings.TrimSpace(out), "\n") + 1; n != 5 || !strings.Contains(out, `spiffe://cluster.local/ns/shop/sa/client`) {
		t.Errorf("mesh tap --max 5 gave %d events, want 5 naming the client's identity:\n%s", n, out)
	}
	mesh := func(args ...string) string {
		t.Helper()
		out, stderr, err := meshRun("", env, args...)
		if err != nil {
			t.Fatalf("mesh %s: %v\n%s%s", strings.Join(args, " "), err, stderr, out)
		}
		t.Logf("mesh %s:\n%s", strings.Join(args, " "), out)
		return out
	}

	// The same healthy mesh, checked from every side.
	out = mesh("check", "-n", ns)
	golden.Check(t, "testdata/check.golden", []byte(out))
	var report struct {
		Success bool `json:"success"`
		Checks  []struct {
			Status string `json:"status"`
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(mesh("check", "-n", ns, "-o", "json")), &report); err != nil || !report.Success || len(report.Checks) < 15 {
		t.Errorf("mesh check -o json: success %v with %d checks (%v)", report.Success, len(report.Checks), err)
	}

	// Who talks to whom: the client Job to the server, with both
	// identities proved.
	golden.Check(t, "testdata/edges_deploy.golden", []byte(mesh("edges", "job", "-n", ns)))

	// Edges from either side, and a Service's name for its workload.
	for _, args := range [][]string{
		{"stat", "deploy/server", "--from", "job/stat-load", "-n", ns, "-o", "json"},
		{"stat", "job/stat-load", "--to", "svc/server", "-n", ns, "-o", "json"},
		{"stat", "svc/server", "-n", ns, "-o", "json"},
	} {
		if err := json.Unmarshal([]byte(mesh(args...)), &rows); err != nil || len(rows) != 1 || rows[0].RPS < 10 || rows[0].SuccessRate == nil || *rows[0].SuccessRate != 1 {
			t.Errorf("mesh %s: want one row of 50 calls a second, all answered (%v)", strings.Join(args, " "), err)
		}
	}
	out = mesh("tap", "job/stat-load", "--to", "svc/server", "-n", ns, "--max", "4", "-o", "json")
	if n := strings.Count(out, `"direction":"outbound"`); n != 4 || !strings.Contains(out, `"serverID":"spiffe://cluster.local/ns/shop/sa/server"`) {
		t.Errorf("mesh tap --to svc/server gave %d outbound events, want 4 to the server's identity", n)
	}

	// The most frequent paths: the client's HTTP and gRPC calls.
	out = mesh("top", "deploy/server", "-n", ns, "--max", "40")
	if !strings.Contains(out, "SOURCE") || !strings.Contains(out, "job/stat-load") || !strings.Contains(out, "/grpc.health.v1.Health/Check") {
		t.Errorf("mesh top does not show the client's calls by path")
	}

	// What the controller serves for the server's Service.
	out = mesh("diagnostics", "endpoints", "server.shop:8080")
	if !strings.Contains(out, "server.shop.svc.cluster.local:8080") || strings.Count(out, "spiffe://cluster.local/ns/shop/sa/server") != 2 {
		t.Errorf("mesh diagnostics endpoints: want the Service's two endpoints with the server's identity")
	}
	if out = mesh("diagnostics", "endpoints", "server:9090", "-n", ns, "-o", "json"); !strings.Contains(out, `"identity": "spiffe://cluster.local/ns/shop/sa/server"`) {
		t.Errorf("mesh diagnostics endpoints -o json: no endpoint with the server's identity")
	}
	if _, stderr, err := meshRun("", env, "diagnostics", "endpoints", "nothing.shop:80"); err == nil || !strings.Contains(stderr, "knows no nothing.shop.svc.cluster.local:80") {
		t.Errorf("mesh diagnostics endpoints of no service: %v\n%s", err, stderr)
	}
	server := ""
	for name := range podsOf(t, ns, "server") {
		server = name
	}
	var dump struct {
		Ready    bool `json:"ready"`
		Identity struct {
			ID string `json:"id"`
		} `json:"identity"`
	}
	if err := json.Unmarshal([]byte(mesh("diagnostics", "config", "po/"+server, "-n", ns)), &dump); err != nil || !dump.Ready || dump.Identity.ID != "spiffe://cluster.local/ns/shop/sa/server" {
		t.Errorf("mesh diagnostics config po/%s: %+v (%v)", server, dump, err)
	}
	if _, stderr, err := meshRun("", env, "diagnostics", "config", "deploy/server", "-n", ns); err == nil || !strings.Contains(stderr, "has 2 pods: name one of po/server-") {
		t.Errorf("mesh diagnostics config of two pods: %v\n%s", err, stderr)
	}
	if out = mesh("diagnostics", "proxy-metrics", "deploy/server", "-n", ns); strings.Count(out, "# POD server-") != 2 || !strings.Contains(out, "request_total{") {
		t.Errorf("mesh diagnostics proxy-metrics deploy/server: want both pods' metrics")
	}
	dashboardOnTheCluster(t, env, ns)
	waitJob(t, ns, "stat-load", 2*time.Minute)
}

// dashboardOnTheCluster: mesh dashboard -n shop reads the cluster as mesh
// stat does, through port-forwards: the server's two meshed pods under the
// client's load, and the client's edge to it over mTLS.
func dashboardOnTheCluster(t *testing.T, env []string, ns string) {
	t.Helper()
	cmd := exec.Command(mesh, "dashboard", "--show", "url", "-n", ns)
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}()
	base, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("mesh dashboard -n %s printed %q (%v)\n%s", ns, base, err, stderr.String())
	}
	base = strings.TrimSpace(base)
	getJSON := func(path string, v any) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || json.Unmarshal(b, v) != nil {
			t.Fatalf("the dashboard's %s: %s\n%s", path, resp.Status, b)
		}
	}
	var rows []stat.Row
	getJSON("api/stat?resource=deploy/server", &rows)
	if len(rows) != 1 || rows[0].Namespace != ns || rows[0].MeshedReady != 2 || rows[0].RPS < 10 {
		t.Errorf("the dashboard's deploy/server: %+v", rows)
	}
	var edges []stat.Edge
	getJSON("api/edges?resource=deploy/server", &edges)
	found := false
	for _, e := range edges {
		found = found || e.Src == "job/stat-load" && e.Dst == "deploy/server" && e.MTLS && e.SuccessRate != nil && *e.SuccessRate == 1
	}
	if !found {
		t.Errorf("the dashboard's edges of deploy/server lack job/stat-load's, mTLS and all answered: %+v", edges)
	}
}

// A pod made before its namespace asked for the mesh has no proxy, and a
// pod on the host's network cannot have one: mesh check names both, and
// why, and fails for the first.
func checkFindsUnmeshedPodsStep(t *testing.T) {
	const ns = "late"
	kubectl(t, fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s}
---
apiVersion: v1
kind: Pod
metadata: {name: early, namespace: %[1]s}
spec:
  containers: [{name: app, image: %[2]s, imagePullPolicy: Never, args: [server]}]
---
apiVersion: v1
kind: Pod
metadata: {name: hostnet, namespace: %[1]s, labels: {mesh.io/inject: enabled}}
spec:
  hostNetwork: true
  containers: [{name: app, image: %[2]s, imagePullPolicy: Never, args: [server, -http, "127.0.0.1:18999", -grpc, "127.0.0.1:18998"]}]
`, ns, appImage), "apply", "-f", "-")
	kubectl(t, "", "-n", ns, "wait", "pod", "--all", "--for=condition=Ready", "--timeout=120s")
	kubectl(t, "", "label", "namespace", ns, "mesh.io/inject=enabled")
	env := []string{"KUBECONFIG=" + cluster.Kubeconfig}
	out, _, err := meshRun("", env, "check", "--proxy", "-n", ns)
	if err == nil {
		t.Errorf("mesh check passed with a pod that has no proxy:\n%s", out)
	}
	t.Logf("mesh check --proxy -n %s:\n%s", ns, out)
	for _, want := range []string{
		"× every running pod in a namespace that asks for the mesh has a proxy",
		"late/early: no proxy; created ",
		"while the webhook was down or before late asked for the mesh",
		"late/hostnet: uses the host's network, which the mesh cannot intercept",
		"hint: a pod made while the webhook was down",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("mesh check does not say %q", want)
		}
	}
	kubectl(t, "", "delete", "namespace", ns, "--wait=true", "--timeout=120s")
}

// A user whose kubeconfig gets its token from an exec credential plugin
// (as EKS and GKE kubeconfigs do), and whose RBAC allows reading pods
// but not port-forwarding to them, is told what is missing.
func rbacStep(t *testing.T) {
	const ns = "shop"
	// What mesh stat reads, with or without the right to port-forward.
	role := func(extra string) string {
		return fmt.Sprintf(`apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: mesh-viewer, namespace: %s}
rules:
- {apiGroups: [""], resources: [pods, services], verbs: [get, list]}
- {apiGroups: [apps], resources: [replicasets], verbs: [get, list]}
%s`, ns, extra)
	}
	kubectl(t, role("")+fmt.Sprintf(`---
apiVersion: v1
kind: ServiceAccount
metadata: {name: viewer, namespace: %[1]s}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: mesh-viewer, namespace: %[1]s}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: mesh-viewer}
subjects: [{kind: ServiceAccount, name: viewer, namespace: %[1]s}]
`, ns), "apply", "-f", "-")
	token := strings.TrimSpace(kubectl(t, "", "-n", ns, "create", "token", "viewer"))
	dir := t.TempDir()
	plugin := filepath.Join(dir, "token-plugin")
	if err := os.WriteFile(plugin, []byte("#!/bin/sh\necho '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\""+token+"\"}}'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, cluster.CA, 0o644); err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, certificate-authority: %q}}]
users:
- name: viewer
  user:
    exec: {apiVersion: client.authentication.k8s.io/v1, command: %q, interactiveMode: Never}
contexts: [{name: viewer, context: {cluster: c, user: viewer, namespace: %s}}]
current-context: viewer
`, cluster.Config.Host, ca, plugin, ns)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := meshRun("", []string{"KUBECONFIG=" + kubeconfig}, "stat", "deploy/server")
	if err == nil {
		t.Fatal("mesh stat without the right to port-forward succeeded")
	}
	if !strings.Contains(stderr, "pods/portforward") || !strings.Contains(stderr, "forbidden") {
		t.Errorf("the error does not say that port-forwarding is forbidden:\n%s", stderr)
	}
	// The plugin's token reached the API server: listing pods worked, so
	// the refusal is the port-forward's alone. Granting it makes it work.
	kubectl(t, role(`- {apiGroups: [""], resources: [pods/portforward], verbs: [create, get]}
`), "apply", "-f", "-")
	out, stderr, err := meshRun("", []string{"KUBECONFIG=" + kubeconfig}, "stat", "deploy/server")
	if err != nil || !strings.Contains(out, "deploy/server") {
		t.Errorf("with pods/portforward granted, mesh stat through the exec plugin: %v\n%s%s", err, stderr, out)
	}
}

// A namespace that asks for deny: its pods still start, because the
// kubelet's probes get through, and every caller is refused, told why.
func denyNamespaceStep(t *testing.T) {
	const ns = "locked"
	kubectl(t, fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %s
  labels: {mesh.io/inject: enabled}
  annotations: {config.mesh.io/default-inbound-policy: deny}
`, ns), "apply", "-f", "-")
	kubectl(t, appManifest(ns), "apply", "-f", "-")
	// Ready means the readiness probe passed through the proxy.
	kubectl(t, "", "-n", ns, "rollout", "status", "deploy/server", "--timeout=180s")
	checkMeshed(t, ns, "server")
	env := kubectl(t, "", "-n", ns, "get", "pods", "-l", "app=server", "-o",
		`jsonpath={.items[0].spec.initContainers[?(@.name=="mesh-proxy")].env[?(@.name=="MESH_DEFAULT_INBOUND_POLICY")].value} {.items[0].spec.initContainers[?(@.name=="mesh-proxy")].env[?(@.name=="MESH_INBOUND_PROBES")].value}`)
	if env != "deny 8080:/ready" {
		t.Errorf("the server's proxy has policy and probes %q; want the namespace's deny and the app's readiness probe", env)
	}
	kubectl(t, clientJob(ns, "denied", 3, 5), "apply", "-f", "-")
	waitJobFailed(t, ns, "denied", 2*time.Minute)
	logs := kubectl(t, "", "-n", ns, "logs", "job/denied", "-c", "app")
	for _, want := range []string{"status 403: refused by the default policy deny on port 8080: the default policy denies it (spiffe://cluster.local/ns/locked/sa/client from 10.199.0.", "PermissionDenied"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the client was not told %q:\n%s", want, logs)
		}
	}
	// mesh check names the pods that admit nobody.
	kubeEnv := []string{"KUBECONFIG=" + cluster.Kubeconfig}
	if out, _, _ := meshRun("", kubeEnv, "check", "-n", ns); !strings.Contains(out, "namespace locked: pods server-") ||
		!strings.Contains(out, "default to deny and no AuthorizationPolicy admits a client: only the kubelet's probes get in") {
		t.Errorf("mesh check does not name the pods that deny every client:\n%s", out)
	}
	// Servers on both ports, and a policy for the namespace's Servers that
	// admits the client's ServiceAccount: the same client gets in, with
	// no pod restarted.
	kubectl(t, fmt.Sprintf(`apiVersion: policy.mesh.io/v1alpha1
kind: Server
metadata: {name: server-http, namespace: %[1]s}
spec: {podSelector: {matchLabels: {app: server}}, port: http, proxyProtocol: HTTP/1}
---
apiVersion: policy.mesh.io/v1alpha1
kind: Server
metadata: {name: server-grpc, namespace: %[1]s}
spec: {podSelector: {matchLabels: {app: server}}, port: grpc, proxyProtocol: gRPC}
---
apiVersion: policy.mesh.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: clients, namespace: %[1]s}
spec: {identityRefs: [{kind: ServiceAccount, name: client}]}
---
apiVersion: policy.mesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: clients-to-server, namespace: %[1]s}
spec:
  targetRef: {kind: Namespace, name: %[1]s}
  requiredAuthenticationRefs: [{group: policy.mesh.io, kind: MeshTLSAuthentication, name: clients}]
`, ns), "apply", "-f", "-")
	// Beside them, a policy whose target is misspelt and a Server that
	// selects nothing: the controller and mesh check say so, and the rest
	// of the namespace's policy holds.
	kubectl(t, fmt.Sprintf(`apiVersion: policy.mesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: typo, namespace: %[1]s}
spec:
  targetRef: {kind: Server, name: server-htp}
  requiredAuthenticationRefs: [{kind: ServiceAccount, name: client}]
---
apiVersion: policy.mesh.io/v1alpha1
kind: Server
metadata: {name: orphan, namespace: %[1]s}
spec: {podSelector: {matchLabels: {app: nothing}}, port: 8080}
`, ns), "apply", "-f", "-")
	kubectl(t, clientJob(ns, "allowed", 40, 20), "apply", "-f", "-")
	if r := waitJob(t, ns, "allowed", 2*time.Minute); r.HTTPOK != 40 || r.GRPCOK != 4 {
		t.Errorf("the authorized client got %d of 40 HTTP and %d of 4 gRPC answers: %+v", r.HTTPOK, r.GRPCOK, r)
	}
	typo := "authorizationpolicy locked/typo: its target, Server locked/server-htp, does not exist"
	orphan := "server locked/orphan: its podSelector selects no pod"
	if logs := kubectl(t, "", "-n", "mesh-system", "logs", "deploy/mesh-controller"); !strings.Contains(logs, "inbound policy: "+typo) || !strings.Contains(logs, "inbound policy: "+orphan) {
		t.Errorf("the controller's log does not name the broken resources")
	}
	controller := kubectl(t, "", "-n", "mesh-system", "get", "pods", "-l", kube.ControllerSelector, "-o", "jsonpath={.items[0].metadata.name}")
	if m := kubectl(t, "", "get", "--raw", "/api/v1/namespaces/mesh-system/pods/"+controller+":9990/proxy/metrics"); !strings.Contains(m, "\npolicy_problems 2\n") {
		t.Errorf("the controller's metrics do not count the two problems:\n%s", grepLines(m, "policy_"))
	}
	out, _, _ := meshRun("", kubeEnv, "check", "-n", ns)
	if !strings.Contains(out, "‼ the policy resources refer to what exists") || !strings.Contains(out, typo) || !strings.Contains(out, orphan) || strings.Contains(out, "default to deny and no AuthorizationPolicy") {
		t.Errorf("mesh check on the namespace's policy:\n%s", out)
	}

	// Under load, the client's authorization is taken away: it is refused
	// from then on, still with no restart.
	kubectl(t, clientJob(ns, "revoked", 400, 20), "apply", "-f", "-")
	kubectl(t, "", "-n", ns, "wait", "pod", "-l", "app=revoked", "--for=condition=Ready", "--timeout=120s")
	time.Sleep(3 * time.Second)
	revokedAt := time.Now()
	kubectl(t, "", "-n", ns, "delete", "authorizationpolicy", "clients-to-server")
	r := waitJobFailed(t, ns, "revoked", 3*time.Minute)
	if r.HTTPOK == 0 || r.HTTPFailed == 0 || r.HTTPOK+r.HTTPFailed != 400 {
		t.Errorf("the revoked client: %+v; want answers, then refusals", r)
	}
	for _, f := range r.Failures {
		if !strings.Contains(f, "status 403: refused by server server-http on port 8080: no authorization admits the client") && !strings.Contains(f, "PermissionDenied") {
			t.Errorf("the revoked client failed otherwise: %s", f)
		}
	}
	if len(r.Failures) > 0 {
		if at, err := time.ParseInLocation("15:04:05.000", strings.Fields(r.Failures[0])[0], time.Local); err == nil {
			first := time.Date(revokedAt.Year(), revokedAt.Month(), revokedAt.Day(), at.Hour(), at.Minute(), at.Second(), at.Nanosecond(), time.Local)
			t.Logf("the first refusal came %s after kubectl delete began", first.Sub(revokedAt).Round(time.Millisecond))
		}
	}
	var rows []stat.AuthzRow
	out, _, _ = meshRun("", kubeEnv, "authz", "deploy/server", "-n", ns, "--window", "60s", "-o", "json")
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("mesh authz: %v\n%s", err, out)
	}
	var admitted, refused uint64
	for _, row := range rows {
		if row.Server == "server-http" && row.Authorization == "clients-to-server" {
			admitted += row.Allowed
		}
		if row.Server == "server-http" && row.Authorization == "" {
			refused += row.Denied
		}
	}
	if admitted == 0 || refused == 0 {
		t.Errorf("mesh authz deploy/server: %d admitted by clients-to-server and %d refused on server-http, want both: %+v", admitted, refused, rows)
	}
	restarts := kubectl(t, "", "-n", ns, "get", "pods", "-l", "app=server", "-o", `jsonpath={range .items[*]}{.status.initContainerStatuses[?(@.name=="mesh-proxy")].restartCount}{end}`)
	if strings.Trim(restarts, "0") != "" {
		t.Errorf("proxies restarted for the policy: %q", restarts)
	}
	kubectl(t, "", "delete", "namespace", ns, "--wait=true", "--timeout=120s")
}

// runningTap is a `mesh tap -o json` left running: its events counted by
// instance, its stderr kept.
type runningTap struct {
	cmd  *exec.Cmd
	done chan struct{}

	mu     sync.Mutex
	counts map[string]int
	stderr strings.Builder
}

func startTap(t *testing.T, args ...string) *runningTap {
	t.Helper()
	cmd := exec.Command(mesh, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+cluster.Kubeconfig, "MESH_STATE_FILE="+filepath.Join(t.TempDir(), "none.json"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	tp := &runningTap{cmd: cmd, done: make(chan struct{}), counts: map[string]int{}}
	cmd.Stderr = lockedWriter{&tp.mu, &tp.stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.stop(t) })
	go func() {
		defer close(tp.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var e struct {
				Instance string `json:"instance"`
			}
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				tp.mu.Lock()
				tp.counts[e.Instance]++
				tp.mu.Unlock()
			}
		}
	}()
	return tp
}

func (tp *runningTap) events(instance string) int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.counts[instance]
}

func (tp *runningTap) errors() string {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.stderr.String()
}

// waitEvents waits up to a minute for n events from instance, failing
// the test if the tap ends first.
func (tp *runningTap) waitEvents(t *testing.T, instance string, n int) {
	t.Helper()
	tp.waitFor(t, fmt.Sprintf("%d events from %s", n, instance), func() bool { return tp.events(instance) >= n })
}

// waitWarning waits up to a minute for the tap to say that instance's
// stream ended.
func (tp *runningTap) waitWarning(t *testing.T, instance string) {
	t.Helper()
	tp.waitFor(t, "a warning naming "+instance, func() bool {
		return strings.Contains(tp.errors(), "tapping "+instance) && strings.Contains(tp.errors(), "the proxy ended the tap (its pod stopped?) (the others go on)")
	})
}

func (tp *runningTap) waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !ok() {
		select {
		case <-tp.done:
			tp.cmd.Wait()
			t.Fatalf("mesh tap ended (%v) before %s; events %v; stderr:\n%s", tp.cmd.ProcessState, what, tp.snapshot(), tp.errors())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s from mesh tap within a minute; events %v; stderr:\n%s", what, tp.snapshot(), tp.errors())
		}
	}
}

func (tp *runningTap) snapshot() map[string]int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	m := map[string]int{}
	for k, v := range tp.counts {
		m[k] = v
	}
	return m
}

// stop ends the tap (the process this test started) and logs what it
// said on stderr.
func (tp *runningTap) stop(t *testing.T) {
	if tp.cmd.ProcessState != nil {
		return
	}
	tp.cmd.Process.Kill()
	<-tp.done
	tp.cmd.Wait()
	t.Logf("mesh tap: events %v; stderr:\n%s", tp.snapshot(), tp.errors())
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
