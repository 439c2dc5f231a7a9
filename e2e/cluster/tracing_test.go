package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshproj/mesh/internal/kubetest"
)

// jaegerImage is Jaeger built from its module (kubetest.Jaeger), as a
// one-program image.
const jaegerImage = "docker.io/meshtest/jaeger:" + kubetest.JaegerVersion

// With mesh install --set tracing.collector=jaeger.tracing:4318, a
// workload that asks for sampling has each of its calls traced through
// both proxies: Jaeger, running in the cluster, holds for every call the
// caller's proxy's client span and the server pod's proxy's server span,
// linked, each naming the identity the other side proved, and the pod it
// came from.
func tracingStep(t *testing.T) {
	// Jaeger as a user tries it first, as the README runs it: Jaeger's own
	// all-in-one configuration (spans kept in memory) listening on the
	// pod's address, behind a Service that takes OTLP/HTTP at
	// jaeger.tracing:4318, the collector mesh install was given.
	kubectl(t, "", "create", "namespace", "tracing")
	defer kubectl(t, "", "delete", "namespace", "tracing", "--timeout=120s")
	kubectl(t, "", "-n", "tracing", "create", "deployment", "jaeger", "--image="+jaegerImage)
	kubectl(t, "", "-n", "tracing", "set", "env", "deployment/jaeger", "JAEGER_LISTEN_HOST=0.0.0.0")
	kubectl(t, "", "-n", "tracing", "expose", "deployment", "jaeger", "--port=4318")
	kubectl(t, "", "-n", "tracing", "rollout", "status", "deploy/jaeger", "--timeout=180s")
	var query string
	const traces = "/api/traces?service=traced&limit=100&lookback=1h"
	if err := eventually(func() error {
		pods := podsOf(t, "tracing", "jaeger") // the one set env started
		if len(pods) != 1 {
			return fmt.Errorf("jaeger pods %v", pods)
		}
		for _, ip := range pods {
			query = ip + ":16686"
		}
		_, err := kubetest.QueryJaeger(query, traces)
		return err
	}); err != nil {
		t.Fatalf("Jaeger's query API: %v", err)
	}

	const ns = "shop"
	job := clientJob(ns, "traced", 20, 20)
	traced := strings.Replace(job, "metadata: {labels: {app: traced}}",
		`metadata: {labels: {app: traced}, annotations: {config.mesh.io/trace-sampling: "1"}}`, 1)
	if traced == job {
		t.Fatal("the client Job's pod template has no labels to annotate beside")
	}
	kubectl(t, traced, "apply", "-f", "-")
	defer kubectl(t, "", "-n", ns, "delete", "job", "traced", "--cascade=foreground", "--timeout=120s")
	r := waitJob(t, ns, "traced", 3*time.Minute)
	if r.HTTPOK != 20 || r.GRPCOK != 2 {
		t.Fatalf("the traced client got %d of 20 HTTP and %d of 2 gRPC answers: %+v", r.HTTPOK, r.GRPCOK, r)
	}
	servers := podsOf(t, ns, "server")

	// Every call is a trace of two spans; the client's proxy sends its last
	// ones as the Job's pod stops.
	const calls = 22
	var got [][]kubetest.JaegerSpan
	deadline := time.Now().Add(time.Minute)
	for {
		var err error
		got, err = kubetest.QueryJaeger(query, traces)
		whole := 0
		for _, tr := range got {
			if len(tr) == 2 {
				whole++
			}
		}
		if err == nil && len(got) == calls && whole == calls {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Jaeger holds %d traces of the traced client, %d of them with both spans (%v); want %d", len(got), whole, err, calls)
		}
		time.Sleep(time.Second)
	}
	for _, tr := range got {
		out, in := kubetest.Hop(tr)
		id := tr[0].TraceID
		if out.SpanID == "" || in.SpanID == "" {
			t.Errorf("trace %s: %+v; want a client and a server span", id, tr)
			continue
		}
		if out.Service != "traced" || in.Service != "server" {
			t.Errorf("trace %s: the client span is of %q and the server span of %q; want traced and server", id, out.Service, in.Service)
		}
		if out.Parent() != "" || in.Parent() != out.SpanID {
			t.Errorf("trace %s: the client span's parent %q (want none: its proxy started the trace), the server span's %q (want the client span %s)", id, out.Parent(), in.Parent(), out.SpanID)
		}
		if got, want := out.Tag("mesh.peer.identity"), "spiffe://cluster.local/ns/shop/sa/server"; got != want {
			t.Errorf("trace %s: the client span's peer identity %q; want %s", id, got, want)
		}
		if got, want := in.Tag("mesh.peer.identity"), "spiffe://cluster.local/ns/shop/sa/client"; got != want {
			t.Errorf("trace %s: the server span's peer identity %q; want %s", id, got, want)
		}
		if pod := in.ProcessTag("k8s.pod.name"); servers[pod] == "" {
			t.Errorf("trace %s: the server span is from pod %q; want one of the server pods %v", id, pod, servers)
		}
		if pod := out.ProcessTag("k8s.pod.name"); !strings.HasPrefix(pod, "traced-") {
			t.Errorf("trace %s: the client span is from pod %q; want the traced Job's", id, pod)
		}
	}
}
