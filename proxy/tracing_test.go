package proxy

import (
	"context"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/meshproj/mesh/internal/otlp"
	"github.com/meshproj/mesh/internal/otlp/otlptest"
)

// tracedProxy is a proxy whose only part is its tracer, sending to
// endpoint, and the handler it wraps: one attempt to an upstream with an
// identity, answering status.
func tracedProxy(t *testing.T, endpoint string, sampling float64, status int) (*Proxy, http.Handler, *http.Header, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	endpoint, err := otlp.CollectorURL(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := newTracing(endpoint, sampling, "web", map[string]string{"namespace": "shop", "pod": "web-1"}, reg)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{tracing: tr}
	seen := &http.Header{}
	h := p.logged(outbound, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*seen = r.Header.Clone()
		p.noteAttempt(r.Context(), "10.0.0.1:8080", peer{tls: true, serverID: "spiffe://cluster.local/ns/shop/sa/api"})
		p.noteAttempt(r.Context(), "10.0.0.2:8080", peer{tls: true, serverID: "spiffe://cluster.local/ns/shop/sa/api"})
		w.WriteHeader(status)
	}))
	t.Cleanup(func() { tr.shutdown(context.Background()) })
	return p, h, seen, reg
}

func send(h http.Handler, headers ...string) {
	req := httptest.NewRequest("GET", "http://api.shop:80/items", nil)
	req.RemoteAddr = "127.0.0.1:40000"
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	h.ServeHTTP(httptest.NewRecorder(), req)
}

const callerTrace, callerSpan = "4bf92f3577b34da6a3ce929d0e0736aa", "00f067aa0ba902b7"

// A request in a sampled W3C trace gets a client span, child of the
// caller's, and the next hop is told the proxy's span is its parent.
func TestTracingJoinsTheCallersTrace(t *testing.T) {
	c := otlptest.Start(t)
	p, h, seen, _ := tracedProxy(t, c.URL, 0, 503)
	send(h, "Traceparent", "00-"+callerTrace+"-"+callerSpan+"-01", "Tracestate", "vendor=x")
	p.tracing.shutdown(context.Background())
	spans := c.Spans()
	if len(spans) != 1 {
		t.Fatalf("%d spans exported; want 1", len(spans))
	}
	s := spans[0]
	own := hex.EncodeToString(s.SpanId)
	if got := hex.EncodeToString(s.TraceId); got != callerTrace {
		t.Errorf("trace %s; want the caller's %s", got, callerTrace)
	}
	if got := hex.EncodeToString(s.ParentSpanId); got != callerSpan {
		t.Errorf("parent %s; want the caller's span %s", got, callerSpan)
	}
	if want := "00-" + callerTrace + "-" + own + "-01"; seen.Get("Traceparent") != want || seen.Get("Tracestate") != "vendor=x" {
		t.Errorf("the next hop saw traceparent %q tracestate %q; want %q and the caller's state", seen.Get("Traceparent"), seen.Get("Tracestate"), want)
	}
	if s.Kind != tracepb.Span_SPAN_KIND_CLIENT || s.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("kind %v status %v; want a client span in error (503)", s.Kind, s.Status)
	}
	for k, want := range map[string]any{"http.request.method": "GET", "http.response.status_code": int64(503), "server.address": "api.shop",
		"mesh.server.identity": "spiffe://cluster.local/ns/shop/sa/api", "network.peer.address": "10.0.0.2", "mesh.attempts": int64(2),
		"http.request.resend_count": int64(1)} {
		if got := otlptest.Attr(s, k); got != want {
			t.Errorf("%s = %v; want %v", k, got, want)
		}
	}
	if len(s.Events) != 2 || c.Service(s) != "web" {
		t.Errorf("%d attempt events, service %q; want 2 and web", len(s.Events), c.Service(s))
	}
}

// B3 comes in single or multi headers and goes on in the same encoding.
func TestTracingKeepsTheB3Encoding(t *testing.T) {
	c := otlptest.Start(t)
	p, h, seen, _ := tracedProxy(t, c.URL, 0, 200)
	send(h, "B3", callerTrace+"-"+callerSpan+"-1")
	single := *seen
	send(h, "X-B3-TraceId", callerTrace, "X-B3-SpanId", callerSpan, "X-B3-Sampled", "1")
	multi := *seen
	p.tracing.shutdown(context.Background())
	spans := c.Spans()
	if len(spans) != 2 {
		t.Fatalf("%d spans; want 2", len(spans))
	}
	if b3 := single.Get("B3"); !strings.HasPrefix(b3, callerTrace+"-"+hex.EncodeToString(spans[0].SpanId)) || single.Get("Traceparent") != "" {
		t.Errorf("single: next hop saw b3 %q traceparent %q", b3, single.Get("Traceparent"))
	}
	if multi.Get("X-B3-Spanid") != hex.EncodeToString(spans[1].SpanId) || multi.Get("X-B3-Traceid") != callerTrace || multi.Get("B3") != "" {
		t.Errorf("multi: next hop saw %v", multi)
	}
	for _, s := range spans {
		if hex.EncodeToString(s.ParentSpanId) != callerSpan {
			t.Errorf("parent %x; want %s", s.ParentSpanId, callerSpan)
		}
	}
}

// The caller's decision not to sample is followed, and passed on; a
// request without a context is left alone unless a ratio is set.
func TestTracingSampling(t *testing.T) {
	c := otlptest.Start(t)
	p, h, seen, _ := tracedProxy(t, c.URL, 0, 200)
	send(h, "Traceparent", "00-"+callerTrace+"-"+callerSpan+"-00")
	if tp := seen.Get("Traceparent"); !strings.HasPrefix(tp, "00-"+callerTrace+"-") || !strings.HasSuffix(tp, "-00") {
		t.Errorf("unsampled: next hop saw %q; want the trace, unsampled", tp)
	}
	send(h)
	if len(*seen) != 0 {
		t.Errorf("no context, no ratio: next hop saw headers %v; want none added", *seen)
	}
	p.tracing.shutdown(context.Background())
	if n := len(c.Spans()); n != 0 {
		t.Errorf("%d spans exported; want none", n)
	}

	p, h, seen, _ = tracedProxy(t, c.URL, 1, 200)
	send(h)
	p.tracing.shutdown(context.Background())
	spans := c.Spans()
	if len(spans) != 1 || len(spans[0].ParentSpanId) != 0 || !strings.Contains(seen.Get("Traceparent"), hex.EncodeToString(spans[0].SpanId)) {
		t.Errorf("ratio 1: %d spans, next hop saw %q; want one root span as its parent", len(spans), seen.Get("Traceparent"))
	}
}

// A collector that cannot be reached costs the request nothing, and what
// it would have been sent is counted as dropped.
func TestTracingCollectorDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p, h, _, reg := tracedProxy(t, "http://"+addr+"/v1/traces", 1, 200)
	began := time.Now()
	for range 100 {
		send(h)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("100 requests took %s with the collector down", d)
	}
	p.tracing.shutdown(context.Background())
	if got := counter(t, reg, "trace_spans_dropped_total", "export_failed"); got != 100 {
		t.Errorf("dropped (export_failed) %v; want 100", got)
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			if labelIs(m, "reason", reason) {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{reason=%q}", name, reason)
	return 0
}

func labelIs(m *dto.Metric, k, v string) bool {
	for _, l := range m.Label {
		if l.GetName() == k && l.GetValue() == v {
			return true
		}
	}
	return false
}

// BenchmarkTracedRequest is what a request in a sampled trace pays with
// tracing on: the span started, the headers rewritten, the span ended
// and queued for the collector.
func BenchmarkTracedRequest(b *testing.B) {
	c := otlptest.Start(b)
	endpoint, _ := otlp.CollectorURL(c.URL)
	tr, err := newTracing(endpoint, 0, "web", nil, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	defer tr.shutdown(context.Background())
	p := &Proxy{tracing: tr}
	h := p.logged(outbound, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.noteAttempt(r.Context(), "10.0.0.1:8080", peer{tls: true, serverID: "spiffe://cluster.local/ns/shop/sa/api"})
		w.WriteHeader(200)
	}))
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("GET", "http://api.shop:80/items", nil)
		req.Header.Set("Traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
		h.ServeHTTP(w, req)
	}
}
