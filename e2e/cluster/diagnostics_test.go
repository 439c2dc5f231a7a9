package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshproj/mesh/internal/golden"
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
	// Traffic for the proxies' windows: 1,500 calls at 50 a second.
	kubectl(t, clientJob(ns, "stat-load", 1500, 50), "apply", "-f", "-")
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
	waitJob(t, ns, "stat-load", 2*time.Minute)
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
- {apiGroups: [""], resources: [pods], verbs: [get, list]}
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
