package inject

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/meshproj/mesh/internal/golden"
	"github.com/meshproj/mesh/wellknown"
)

func inputs(t *testing.T) []Input {
	t.Helper()
	paths, err := filepath.Glob("testdata/in/*")
	if err != nil {
		t.Fatal(err)
	}
	var ins []Input
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		ins = append(ins, Input{Name: p, Data: data})
	}
	if len(ins) < 9 {
		t.Fatalf("only %d inputs in the corpus", len(ins))
	}
	return ins
}

// opts are the default options with the test's trust anchors.
func opts() Options {
	o := DefaultOptions("v0.1.0")
	pem, err := os.ReadFile("testdata/trust-anchors.pem")
	if err != nil {
		panic(err)
	}
	o.TrustAnchors = string(pem)
	return o
}

func report(rs []Result) []byte {
	var b bytes.Buffer
	for _, r := range rs {
		b.WriteString(r.String() + "\n")
	}
	return b.Bytes()
}

func TestGoldenInject(t *testing.T) {
	for _, in := range inputs(t) {
		name := filepath.Base(in.Name)
		t.Run(name, func(t *testing.T) {
			out, rs, err := Transform([]Input{in}, func(o obj) ([]Result, error) { return Inject(o, opts()) })
			if err != nil {
				t.Fatal(err)
			}
			golden.Check(t, "testdata/out/"+name+".golden", out)
			golden.Check(t, "testdata/out/"+name+".report", report(rs))
			if isJSON(in.Data) != isJSON(out) {
				t.Error("output format differs from the input's")
			}
		})
	}
}

func TestGoldenNativeSidecarOff(t *testing.T) {
	in := Input{Name: "pod.yaml", Data: must(os.ReadFile("testdata/in/pod.yaml"))}
	o := opts()
	o.NativeSidecar = false
	o.Config = map[string]string{wellknown.SkipInboundPorts: "9090", wellknown.ProxyLogLevel: "debug"}
	out, _, err := Transform([]Input{in}, func(x obj) ([]Result, error) { return Inject(x, o) })
	if err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/out/pod-regular-container.golden", out)
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// decodeAll decodes every object of an input.
func decodeAll(t *testing.T, in Input) []obj {
	t.Helper()
	docs, err := decode(in)
	if err != nil {
		t.Fatal(err)
	}
	var out []obj
	for _, d := range docs {
		out = append(out, d.obj)
	}
	return out
}

func TestUninjectIsTheExactInverse(t *testing.T) {
	for _, in := range inputs(t) {
		for _, native := range []bool{true, false} {
			o := opts()
			o.NativeSidecar = native
			o.Config = map[string]string{wellknown.OpaquePorts: "5432", wellknown.SkipOutboundPorts: "443"} // overwrites an existing annotation in one case
			original := decodeAll(t, in)
			work := decodeAll(t, in)
			for _, x := range work {
				if _, err := Inject(x, o); err != nil {
					t.Fatal(err)
				}
				if _, err := Uninject(x); err != nil {
					t.Fatal(err)
				}
			}
			if !reflect.DeepEqual(original, work) {
				a, _ := json.MarshalIndent(original, "", " ")
				b, _ := json.MarshalIndent(work, "", " ")
				t.Errorf("%s (native=%v): uninject(inject(x)) != x\n--- x\n%s\n--- got\n%s", in.Name, native, a, b)
			}
		}
	}
}

func TestInjectingInjectedOutputChangesNothing(t *testing.T) {
	in := Input{Name: "d.yaml", Data: must(os.ReadFile("testdata/in/deployment-multi.yaml"))}
	inj := func(o obj) ([]Result, error) { return Inject(o, opts()) }
	once, _, err := Transform([]Input{in}, inj)
	if err != nil {
		t.Fatal(err)
	}
	twice, rs, err := Transform([]Input{{Name: "injected.yaml", Data: once}}, inj)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(once, twice) {
		t.Error("injecting injected output changed it")
	}
	if len(rs) != 1 || rs[0].String() != "deployment/web unchanged: already injected" {
		t.Errorf("report %v", rs)
	}
}

func TestBadInputNamesFileDocumentAndLine(t *testing.T) {
	tests := []struct{ name, data, want string }{
		{"broken.yaml", "apiVersion: v1\nkind: Service\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n", "broken.yaml: document 2, line "},
		{"nokind.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {name: b}\n", "nokind.yaml: document 2, line 5: object has no kind"},
		{"scalar.yaml", "just a string\n", "scalar.yaml: document 1, line 1: not a Kubernetes object"},
		{"bad.json", "{\"apiVersion\": \"v1\",\n \"kind\": \"Pod\",,}\n", "bad.json: document 1, line 2: invalid character"},
		{"nospec.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: 1}\n", "nospec.yaml: document 1, line 1: deployment/x has no pod template"},
	}
	for _, tt := range tests {
		out, _, err := Transform([]Input{{Name: tt.name, Data: []byte(tt.data)}}, func(o obj) ([]Result, error) { return Inject(o, opts()) })
		var ie *InputError
		if !errors.As(err, &ie) || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%s: error %v\nwant prefix %q", tt.name, err, tt.want)
		}
		if out != nil {
			t.Errorf("%s: partial output %q", tt.name, out)
		}
	}
}

func FuzzInject(f *testing.F) {
	for _, name := range []string{"deployment-multi.yaml", "list.yaml", "deployment.json", "cronjob.yaml", "skipped.yaml"} {
		f.Add(must(os.ReadFile("testdata/in/" + name)))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		inj := func(o obj) ([]Result, error) { return Inject(o, opts()) }
		out, _, err := Transform([]Input{{Name: "f", Data: data}}, inj)
		if err != nil {
			if out != nil {
				t.Fatal("output despite an error")
			}
			return
		}
		// What inject printed is valid input again, and injecting it changes nothing.
		again, _, err := Transform([]Input{{Name: "out", Data: out}}, inj)
		if err != nil {
			t.Fatalf("inject's output does not parse: %v\n%s", err, out)
		}
		if !bytes.Equal(again, out) {
			t.Fatalf("re-injecting changed the output")
		}
	})
}

func TestInjectRefusesToInjectWithoutTrustAnchors(t *testing.T) {
	o := DefaultOptions("v0.1.0") // no anchors
	pod := map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "p"},
		"spec": map[string]any{"containers": []any{map[string]any{"name": "app", "image": "app:1"}}}}
	if _, err := Inject(pod, o); err == nil || !strings.Contains(err.Error(), "trust anchors") {
		t.Fatalf("Inject without trust anchors: %v; want it refused, naming the anchors", err)
	}
	svc := map[string]any{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "s"}}
	if _, err := Inject(svc, o); err != nil {
		t.Fatalf("a Service needs no anchors: %v", err)
	}
}

// proxyEnv injects a pod and returns its proxy's environment.
func proxyEnv(t *testing.T, pod string, o Options) map[string]string {
	t.Helper()
	out, _, err := Transform([]Input{{Name: "pod.yaml", Data: []byte(pod)}}, func(x obj) ([]Result, error) { return Inject(x, o) })
	if err != nil {
		t.Fatal(err)
	}
	docs := decodeAll(t, Input{Name: "out.yaml", Data: out})
	env := map[string]string{}
	inits, _ := get(docs[0], "spec", "initContainers").([]any)
	for _, c := range inits {
		if c := c.(obj); c["name"] == wellknown.ProxyContainer {
			for _, e := range c["env"].([]any) {
				e := e.(obj)
				env[str(e["name"])] = str(e["value"])
			}
		}
	}
	return env
}

func TestTheAppsProbesAndTheDefaultPolicyReachTheProxy(t *testing.T) {
	pod := `apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations: {%s}
spec:
  containers:
  - name: app
    image: web:1
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {path: /ready, port: http}}
    livenessProbe: {httpGet: {path: /live, port: 8081}}
    startupProbe: {tcpSocket: {port: 8080}}
`
	o := opts()
	o.DefaultInboundPolicy = "all-authenticated"
	env := proxyEnv(t, strings.Replace(pod, "%s", "", 1), o)
	if got := env["MESH_INBOUND_PROBES"]; got != "8081:/live,8080:/ready" {
		t.Errorf("probes %q; want the HTTP probes, named ports resolved", got)
	}
	if got := env["MESH_DEFAULT_INBOUND_POLICY"]; got != "all-authenticated" {
		t.Errorf("default policy %q; want the install's", got)
	}
	o.NamespaceConfig = map[string]string{wellknown.DefaultInboundPolicy: "cluster-authenticated"}
	if got := proxyEnv(t, strings.Replace(pod, "%s", "", 1), o)["MESH_DEFAULT_INBOUND_POLICY"]; got != "cluster-authenticated" {
		t.Errorf("default policy %q; want the namespace's over the install's", got)
	}
	annotated := strings.Replace(pod, "%s", `config.mesh.io/default-inbound-policy: deny`, 1)
	if got := proxyEnv(t, annotated, o)["MESH_DEFAULT_INBOUND_POLICY"]; got != "deny" {
		t.Errorf("default policy %q; want the pod's own over the namespace's", got)
	}
	o.DefaultInboundPolicy, o.NamespaceConfig = "", nil
	if _, set := proxyEnv(t, strings.Replace(pod, "%s", "", 1), o)["MESH_DEFAULT_INBOUND_POLICY"]; set {
		t.Error("with no default anywhere, the proxy's own should stand")
	}
}

func TestABadDefaultPolicyIsRefusedWhereverItIsWritten(t *testing.T) {
	pod := `apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations: {%s}
spec:
  containers: [{name: app, image: web:1}]
`
	inject := func(p string, o Options) error {
		_, _, err := Transform([]Input{{Name: "pod.yaml", Data: []byte(p)}}, func(x obj) ([]Result, error) { return Inject(x, o) })
		return err
	}
	o := opts()
	err := inject(strings.Replace(pod, "%s", "config.mesh.io/default-inbound-policy: denny", 1), o)
	if err == nil || !strings.Contains(err.Error(), `pod.yaml: document 1, line 1: pod/web: the pod template's annotation config.mesh.io/default-inbound-policy is "denny": want one of all-unauthenticated, all-authenticated, cluster-authenticated, deny, audit`) {
		t.Errorf("a bad annotation: %v", err)
	}
	o.NamespaceConfig = map[string]string{wellknown.DefaultInboundPolicy: "open"}
	if err := inject(strings.Replace(pod, "%s", "", 1), o); err == nil || !strings.Contains(err.Error(), `the namespace's annotation config.mesh.io/default-inbound-policy is "open"`) {
		t.Errorf("a bad namespace annotation: %v", err)
	}
	// The webhook tells this error from its own faults by its type.
	docs := decodeAll(t, Input{Name: "pod.yaml", Data: []byte(strings.Replace(pod, "%s", "", 1))})
	var ce *ConfigError
	if _, err := Inject(docs[0], o); !errors.As(err, &ce) {
		t.Errorf("Inject's error %v is not a ConfigError", err)
	}
	// The pod's own good setting stands above the namespace's bad one.
	if err := inject(strings.Replace(pod, "%s", "config.mesh.io/default-inbound-policy: deny", 1), o); err != nil {
		t.Errorf("a good pod setting under a bad namespace one: %v", err)
	}
}

func TestTheAccessLogAnnotationReachesTheProxy(t *testing.T) {
	pod := `apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations: {%s}
spec:
  containers: [{name: app, image: web:1}]
`
	o := opts()
	if _, set := proxyEnv(t, strings.Replace(pod, "%s", "", 1), o)["MESH_ACCESS_LOG"]; set {
		t.Error("no access log unless asked for")
	}
	if got := proxyEnv(t, strings.Replace(pod, "%s", "config.mesh.io/access-log: json", 1), o)["MESH_ACCESS_LOG"]; got != "json" {
		t.Errorf("MESH_ACCESS_LOG %q; want the pod's json", got)
	}
	o.NamespaceConfig = map[string]string{wellknown.AccessLog: "json"}
	if got := proxyEnv(t, strings.Replace(pod, "%s", "", 1), o)["MESH_ACCESS_LOG"]; got != "json" {
		t.Errorf("MESH_ACCESS_LOG %q; want the namespace's json", got)
	}
	_, _, err := Transform([]Input{{Name: "pod.yaml", Data: []byte(strings.Replace(pod, "%s", "config.mesh.io/access-log: text", 1))}},
		func(x obj) ([]Result, error) { return Inject(x, opts()) })
	if err == nil || !strings.Contains(err.Error(), `the pod template's annotation config.mesh.io/access-log is "text": want one of json`) {
		t.Errorf("a bad access log annotation: %v", err)
	}
}

func TestTracingReachesTheProxy(t *testing.T) {
	pod := `apiVersion: v1
kind: Pod
metadata:
  name: server-7d9f8c6b5-x2x9z
  labels: {pod-template-hash: 7d9f8c6b5}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: server-7d9f8c6b5, uid: u1, controller: true}]
  annotations: {%s}
spec:
  containers: [{name: app, image: web:1}]
`
	o := opts()
	if env := proxyEnv(t, strings.Replace(pod, "%s", "", 1), o); env["MESH_TRACE_COLLECTOR"] != "" || env["MESH_TRACE_SERVICE"] != "" {
		t.Errorf("tracing without a collector: %v", env)
	}
	o.TraceCollector, o.TraceSampling = "jaeger.tracing:4318", "0.25"
	env := proxyEnv(t, strings.Replace(pod, "%s", "", 1), o)
	if env["MESH_TRACE_COLLECTOR"] != "jaeger.tracing:4318" || env["MESH_TRACE_SAMPLING"] != "0.25" || env["MESH_TRACE_SERVICE"] != "server" {
		t.Errorf("the install's tracing: %v; want its collector and sampling, and the Deployment's name", env)
	}
	o.NamespaceConfig = map[string]string{wellknown.TraceCollector: "otel.ns:4318"}
	if got := proxyEnv(t, strings.Replace(pod, "%s", "config.mesh.io/trace-sampling: '1'", 1), o); got["MESH_TRACE_COLLECTOR"] != "otel.ns:4318" || got["MESH_TRACE_SAMPLING"] != "1" {
		t.Errorf("namespace's collector and pod's sampling: %v", got)
	}
	for ann, want := range map[string]string{
		"config.mesh.io/trace-collector: jaeger": `the pod template's annotation config.mesh.io/trace-collector is "jaeger": want host:port`,
		"config.mesh.io/trace-sampling: '2'":     `config.mesh.io/trace-sampling is "2": want a share from 0 to 1`,
	} {
		_, _, err := Transform([]Input{{Name: "pod.yaml", Data: []byte(strings.Replace(pod, "%s", ann, 1))}},
			func(x obj) ([]Result, error) { return Inject(x, o) })
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want %q", ann, err, want)
		}
	}
}

func TestServiceNameOfAWorkload(t *testing.T) {
	for want, o := range map[string]obj{
		"web":   {"kind": "Deployment", "metadata": obj{"name": "web"}},
		"shop":  {"kind": "Deployment", "metadata": obj{"name": "web"}, "tmpl": obj{"metadata": obj{"labels": obj{"app": "shop"}}}},
		"db":    {"kind": "Pod", "metadata": obj{"name": "db-0", "ownerReferences": []any{obj{"kind": "StatefulSet", "name": "db", "controller": true}}}},
		"alone": {"kind": "Pod", "metadata": obj{"name": "alone"}},
	} {
		tmpl, _ := o["tmpl"].(obj)
		if tmpl == nil {
			tmpl = obj{}
		}
		if got := serviceName(o, tmpl); got != want {
			t.Errorf("%v: %q; want %q", o, got, want)
		}
	}
}
