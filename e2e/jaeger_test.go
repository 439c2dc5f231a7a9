package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshproj/mesh/internal/kubetest"
)

// jaegerConfig runs Jaeger v2 as one process on loopback: OTLP/HTTP in,
// spans kept in memory, the query API (what its UI reads) out, and no
// listener of its own telemetry.
const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: %s
    grpc:
      endpoint: %s
receivers:
  otlp:
    protocols:
      http:
        endpoint: %s
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`

// jaeger is a running Jaeger: proxies send it OTLP at otlp (host:port), and
// the test reads traces from its query API at query.
type jaeger struct {
	bin, config string
	otlp, query string
	proc        *process
}

func startJaeger(t *testing.T) *jaeger {
	t.Helper()
	bin, err := kubetest.Jaeger(func(s string) { t.Log(s) })
	if err != nil {
		t.Fatal(err)
	}
	j := &jaeger{bin: bin, otlp: freeAddr(t), query: freeAddr(t), config: filepath.Join(t.TempDir(), "jaeger.yaml")}
	if err := os.WriteFile(j.config, fmt.Appendf(nil, jaegerConfig, j.query, freeAddr(t), j.otlp), 0o644); err != nil {
		t.Fatal(err)
	}
	j.start(t)
	return j
}

// start runs Jaeger and waits until both its OTLP receiver and its query
// API answer.
func (j *jaeger) start(t *testing.T) {
	t.Helper()
	j.proc = startCmd(t, j.bin, "--config", j.config)
	waitFor(t, "Jaeger to listen", func() bool {
		c, err := net.Dial("tcp", j.otlp)
		if err != nil {
			return false
		}
		c.Close()
		resp, err := http.Get("http://" + j.query + "/api/services")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// trace asks Jaeger for one trace's spans; none if it has no such trace.
func (j *jaeger) trace(t *testing.T, id string) []kubetest.JaegerSpan {
	t.Helper()
	traces, err := kubetest.QueryJaeger(j.query, "/api/traces/"+id)
	if err != nil {
		t.Fatal(err)
	}
	if len(traces) == 0 {
		return nil
	}
	return traces[0]
}

// traces asks Jaeger for the IDs of the traces that have a span of service.
func (j *jaeger) traces(t *testing.T, service string) map[string]bool {
	t.Helper()
	traces, err := kubetest.QueryJaeger(j.query, "/api/traces?limit=1000&lookback=1h&service="+service)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, tr := range traces {
		for _, s := range tr {
			ids[s.TraceID] = true
		}
	}
	return ids
}

// tracedPair is a caller's proxy and a callee's, with mTLS between them,
// both sending spans to one Jaeger; the app behind the callee records what
// it was sent.
type tracedPair struct {
	jaeger         *jaeger
	app            *backend
	client, server *meshProxy
}

func startTracedPair(t *testing.T, j *jaeger, clientArgs ...string) *tracedPair {
	t.Helper()
	mi := startIdentity(t, "24h")
	app := startBackend(t, "app")
	server := startProxy(t, proxyOpts{discovery: appPolicy(t, app.addr, spiffe("client")),
		args: append(mi.proxyArgs(t, "server"), "--inbound-forward", app.addr, "--trace-collector", j.otlp, "--trace-service", "server")})
	disc := discoveryFile(meshedService("web", 80, "", spiffe("server"), server.inbound))
	client := startProxy(t, proxyOpts{discovery: disc,
		args: append(append(mi.proxyArgs(t, "client"), "--trace-collector", j.otlp, "--trace-service", "client"), clientArgs...)})
	return &tracedPair{jaeger: j, app: app, client: client, server: server}
}

// get sends GET /path for web through the client's proxy, with headers.
func (p *tracedPair) get(t *testing.T, path string, header ...string) {
	t.Helper()
	resp, _, err := newClient(p.client.outbound).get("web", path, header...)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %v %v", path, resp, err)
	}
}

// hop waits for Jaeger to hold trace id's two spans, the client proxy's and
// the server proxy's, and checks how they link: the client span is the
// child of parent (the caller's span; "" for a root) and names the server's
// identity, the server span is the client span's child and names the
// client's, and the app was told of the server span in header.
func (p *tracedPair) hop(t *testing.T, id, parent, path string) (out, in kubetest.JaegerSpan) {
	t.Helper()
	var spans []kubetest.JaegerSpan
	waitFor(t, "Jaeger to hold both proxies' spans of trace "+id, func() bool {
		spans = p.jaeger.trace(t, id)
		return len(spans) == 2
	})
	out, in = kubetest.Hop(spans)
	if out.SpanID == "" || in.SpanID == "" {
		t.Fatalf("trace %s: %+v; want a client and a server span", id, spans)
	}
	if out.Service != "client" || in.Service != "server" {
		t.Errorf("trace %s: the client span is of %q and the server span of %q; want client and server", id, out.Service, in.Service)
	}
	if out.Parent() != parent || in.Parent() != out.SpanID {
		t.Errorf("trace %s: the client span's parent %q (want %q), the server span's %q (want the client span %s)", id, out.Parent(), parent, in.Parent(), out.SpanID)
	}
	if got := out.Tag("mesh.peer.identity"); got != spiffe("server") {
		t.Errorf("trace %s: the client span's peer identity %q; want %s", id, got, spiffe("server"))
	}
	if got := in.Tag("mesh.peer.identity"); got != spiffe("client") {
		t.Errorf("trace %s: the server span's peer identity %q; want %s", id, got, spiffe("client"))
	}
	for _, s := range []kubetest.JaegerSpan{out, in} {
		if got := s.Tag("url.path"); got != path {
			t.Errorf("trace %s: a %s span's url.path %q; want %s", id, s.Tag("span.kind"), got, path)
		}
		if got := s.Tag("http.response.status_code"); got != "200" {
			t.Errorf("trace %s: a %s span's status %q; want 200", id, s.Tag("span.kind"), got)
		}
	}
	return out, in
}

// A request that carries W3C Trace Context or B3 through two proxies with
// mTLS is one trace in a real Jaeger: the caller's proxy's client span and
// the callee's server span, linked, each naming the identity the other side
// proved, and the app behind is told of the server span in the encoding it
// was sent. A request whose caller did not sample it, or that carries no
// context, is not traced.
func TestTracesInJaeger(t *testing.T) {
	p := startTracedPair(t, startJaeger(t))

	t.Run("W3C traceparent", func(t *testing.T) {
		const id, caller = "4bf92f3577b34da6a3ce929d0e0736aa", "00f067aa0ba902b7"
		p.get(t, "/w3c", "Traceparent", "00-"+id+"-"+caller+"-01")
		_, in := p.hop(t, id, caller, "/w3c")
		if got, want := p.app.lastRequest().Header.Get("Traceparent"), "00-"+id+"-"+in.SpanID+"-01"; got != want {
			t.Errorf("the app was sent traceparent %q; want %q (the server span as its parent)", got, want)
		}
	})
	t.Run("B3 single header", func(t *testing.T) {
		const id, caller = "5cf92f3577b34da6a3ce929d0e0736bb", "10f067aa0ba902b8"
		p.get(t, "/b3", "B3", id+"-"+caller+"-1")
		_, in := p.hop(t, id, caller, "/b3")
		if got, want := p.app.lastRequest().Header.Get("B3"), id+"-"+in.SpanID+"-1"; got != want {
			t.Errorf("the app was sent b3 %q; want %q", got, want)
		}
	})
	t.Run("B3 multiple headers", func(t *testing.T) {
		const id, caller = "6df92f3577b34da6a3ce929d0e0736cc", "20f067aa0ba902b9"
		p.get(t, "/b3-multi", "X-B3-TraceId", id, "X-B3-SpanId", caller, "X-B3-Sampled", "1")
		_, in := p.hop(t, id, caller, "/b3-multi")
		h := p.app.lastRequest().Header
		if h.Get("X-B3-TraceId") != id || h.Get("X-B3-SpanId") != in.SpanID || h.Get("X-B3-Sampled") != "1" {
			t.Errorf("the app was sent B3 headers %q %q %q; want %s, the server span %s and 1", h.Get("X-B3-TraceId"), h.Get("X-B3-SpanId"), h.Get("X-B3-Sampled"), id, in.SpanID)
		}
	})
	t.Run("not sampled, or no context", func(t *testing.T) {
		const unsampled, after = "7ef92f3577b34da6a3ce929d0e0736dd", "8ff92f3577b34da6a3ce929d0e0736ee"
		before := p.jaeger.traces(t, "client")
		p.get(t, "/unsampled", "Traceparent", "00-"+unsampled+"-30f067aa0ba902ba-00")
		for range 5 {
			p.get(t, "/no-context")
		}
		// Each proxy exports its spans in order: once a later sampled
		// request's spans are in Jaeger, any of the ones before would be.
		p.get(t, "/after", "Traceparent", "00-"+after+"-40f067aa0ba902bb-01")
		p.hop(t, after, "40f067aa0ba902bb", "/after")
		if spans := p.jaeger.trace(t, unsampled); len(spans) != 0 {
			t.Errorf("the unsampled request left %d spans in Jaeger; want none", len(spans))
		}
		now := p.jaeger.traces(t, "client")
		for id := range now {
			if !before[id] && id != after {
				t.Errorf("Jaeger has trace %s, which no sampled request started", id)
			}
		}
		if tp := p.app.lastRequest().Header.Get("Traceparent"); tp == "" {
			t.Errorf("the app was sent no traceparent for a sampled request")
		}
	})
}

// With a collector that is down, requests are served as before and the
// spans are counted as dropped; once it is back, spans arrive again.
func TestTracingWithJaegerDown(t *testing.T) {
	j := startJaeger(t)
	p := startTracedPair(t, j)
	j.proc.stop(9, 0)
	for i := range 20 {
		p.get(t, "/down", "Traceparent", fmt.Sprintf("00-9af92f3577b34da6a3ce929d0e0736%02x-50f067aa0ba902bc-01", i))
	}
	// An export gives up after 5 s of retries: the 20 spans may take two.
	waitForWithin(t, 30*time.Second, "the client proxy to count its spans as dropped", func() bool {
		n, _ := metricSum(p.client.metrics(t), "trace_spans_dropped_total", "reason", "export_failed")
		return n == 20
	})
	if n, _ := metricSum(p.client.metrics(t), "trace_spans_exported_total"); n != 0 {
		t.Errorf("the client proxy counts %v spans exported with Jaeger down", n)
	}

	j.start(t)
	const id = "abf92f3577b34da6a3ce929d0e0736ff"
	p.get(t, "/back", "Traceparent", "00-"+id+"-60f067aa0ba902bd-01")
	waitForWithin(t, 30*time.Second, "the spans after Jaeger is back", func() bool { return len(j.trace(t, id)) == 2 })
}
