package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/meshproj/mesh/internal/kubetest"
)

// cluster wraps a real API server with the clients the tests need.
type cluster struct {
	t      *testing.T
	env    *kubetest.Env
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
	ctx    context.Context
}

func startCluster(t *testing.T) *cluster {
	env := kubetest.Start(t, kubetest.Options{})
	dc, err := discovery.NewDiscoveryClientForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{t: t, env: env, dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)), ctx: t.Context()}
}

// decodeObjects reads YAML documents (or a JSON List) into objects.
func decodeObjects(t *testing.T, data []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var o map[string]any
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decoding manifests: %v", err)
		}
		if len(o) == 0 {
			continue
		}
		if o["kind"] == "List" {
			for _, it := range o["items"].([]any) {
				out = append(out, &unstructured.Unstructured{Object: it.(map[string]any)})
			}
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: o})
	}
	return out
}

func (c *cluster) resource(u *unstructured.Unstructured) dynamic.ResourceInterface {
	c.t.Helper()
	gvk := u.GroupVersionKind()
	var m *meta.RESTMapping
	var err error
	for range 50 { // a new CRD takes a moment to appear in discovery
		if m, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err == nil {
			break
		}
		c.mapper.Reset()
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatalf("no resource for %s: %v", gvk, err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := u.GetNamespace()
		if ns == "" {
			ns = "default"
		}
		return c.dyn.Resource(m.Resource).Namespace(ns)
	}
	return c.dyn.Resource(m.Resource)
}

// apply creates or updates an object with server-side apply.
func (c *cluster) apply(u *unstructured.Unstructured) error {
	_, err := c.resource(u).Apply(c.ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: "mesh-e2e", Force: true})
	return err
}

func (c *cluster) waitEstablished(name string) {
	c.t.Helper()
	crd := &unstructured.Unstructured{}
	crd.SetAPIVersion("apiextensions.k8s.io/v1")
	crd.SetKind("CustomResourceDefinition")
	crd.SetName(name)
	waitFor(c.t, "CRD "+name+" to be Established", func() bool {
		got, err := c.resource(crd).Get(c.ctx, name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		for _, cond := range conds {
			m := cond.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return true
			}
		}
		return false
	})
}

func TestInstallAndInjectOutputAreValidKubernetes(t *testing.T) {
	c := startCluster(t)

	// Every object of the default install, then --ha applied over it.
	for _, args := range [][]string{{"install"}, {"install", "--ha"}} {
		out, code := meshCmd(t, args...)
		if code != 0 {
			t.Fatalf("mesh %s: %s", strings.Join(args, " "), out)
		}
		objs := decodeObjects(t, []byte(out))
		if len(objs) < 15 {
			t.Fatalf("mesh %s rendered only %d objects", strings.Join(args, " "), len(objs))
		}
		for _, o := range objs {
			if err := c.apply(o); err != nil {
				t.Fatalf("mesh %s: the API server refused %s/%s: %v", strings.Join(args, " "), o.GetKind(), o.GetName(), err)
			}
			if o.GetKind() == "CustomResourceDefinition" {
				c.waitEstablished(o.GetName())
				c.mapper.Reset()
			}
		}
	}

	// mesh inject, given no anchors file, reads the anchors the install put
	// in the cluster and writes them into the proxy's spec.
	kc, err := c.env.Kubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	cm, err := c.dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}).Namespace("mesh-system").
		Get(c.ctx, "mesh-identity-trust-anchors", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want, _, _ := unstructured.NestedString(cm.Object, "data", "trust-anchors.pem")
	injected := string(stdoutOf(t, "inject", "--kubeconfig", kc, "../inject/testdata/in/pod.yaml"))
	if want == "" || !strings.Contains(injected, "MESH_IDENTITY_TRUST_ANCHORS_PEM") || !strings.Contains(injected, strings.Split(strings.TrimSpace(want), "\n")[1]) {
		t.Errorf("mesh inject against the cluster did not write the cluster's trust anchors into the proxy's spec:\n%s", injected)
	}

	// Policy objects: valid ones are accepted, invalid ones refused by the schema.
	for _, ns := range []string{"shop", "monitoring"} {
		nsObj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}
		if err := c.apply(nsObj); err != nil {
			t.Fatal(err)
		}
	}
	valid := `apiVersion: policy.mesh.io/v1alpha1
kind: Server
metadata: {name: web-http, namespace: shop}
spec: {podSelector: {matchLabels: {app: web}}, port: http, proxyProtocol: HTTP/1}
---
apiVersion: policy.mesh.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: frontends, namespace: shop}
spec: {identities: ["spiffe://cluster.local/ns/shop/sa/frontend"]}
---
apiVersion: policy.mesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-from-frontends, namespace: shop}
spec:
  targetRef: {group: policy.mesh.io, kind: Server, name: web-http}
  requiredAuthenticationRefs: [{group: policy.mesh.io, kind: MeshTLSAuthentication, name: frontends}]
---
apiVersion: policy.mesh.io/v1alpha1
kind: NetworkAuthentication
metadata: {name: cluster, namespace: shop}
spec: {networks: [{cidr: 10.0.0.0/8}]}
`
	for _, o := range decodeObjects(t, []byte(valid)) {
		if err := c.apply(o); err != nil {
			t.Errorf("valid %s refused: %v", o.GetKind(), err)
		}
	}
	invalid := map[string]string{
		"port out of range":     "apiVersion: policy.mesh.io/v1alpha1\nkind: Server\nmetadata: {name: bad1, namespace: shop}\nspec: {podSelector: {}, port: 70000}\n",
		"unknown protocol":      "apiVersion: policy.mesh.io/v1alpha1\nkind: Server\nmetadata: {name: bad2, namespace: shop}\nspec: {podSelector: {}, port: 80, proxyProtocol: SMTP}\n",
		"no target":             "apiVersion: policy.mesh.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: bad3, namespace: shop}\nspec: {requiredAuthenticationRefs: []}\n",
		"not a SPIFFE identity": "apiVersion: policy.mesh.io/v1alpha1\nkind: MeshTLSAuthentication\nmetadata: {name: bad4, namespace: shop}\nspec: {identities: [frontend]}\n",
		"no networks":           "apiVersion: policy.mesh.io/v1alpha1\nkind: NetworkAuthentication\nmetadata: {name: bad5, namespace: shop}\nspec: {networks: []}\n",
	}
	for name, doc := range invalid {
		o := decodeObjects(t, []byte(doc))[0]
		if err := c.apply(o); err == nil || !apierrors.IsInvalid(err) {
			t.Errorf("%s: accepted, or refused for another reason: %v", name, err)
		}
	}

	// Every workload of the inject corpus, injected, passes a server-side dry run.
	for _, ns := range []string{"default", "shop", "monitoring"} {
		sa := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ServiceAccount",
			"metadata": map[string]any{"name": "default", "namespace": ns}}}
		if err := c.apply(sa); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	corpus, _ := filepath.Glob("../inject/testdata/in/*")
	checked := 0
	for _, file := range corpus {
		for _, native := range []string{"true", "false"} {
			cmd := []string{"inject", "--native-sidecar=" + native, "--identity-trust-anchors-file", "../inject/testdata/trust-anchors.pem", file}
			stdout := stdoutOf(t, cmd...)
			for _, o := range decodeObjects(t, stdout) {
				if o.GetNamespace() == "kube-system" {
					continue // skipped by inject; and not ours to touch
				}
				_, err := c.resource(o).Create(c.ctx, o, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
				if err != nil && !apierrors.IsAlreadyExists(err) {
					t.Errorf("%s (native sidecar %s): %s/%s refused: %v", filepath.Base(file), native, o.GetKind(), o.GetName(), err)
				}
				checked++
			}
		}
	}
	if checked < 20 {
		t.Errorf("only %d objects dry-run", checked)
	}
}

// stdoutOf runs mesh and returns its standard output alone.
func stdoutOf(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := execMesh(args...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mesh %s: %v", strings.Join(args, " "), err)
	}
	return out
}
