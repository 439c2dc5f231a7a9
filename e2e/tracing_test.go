package e2e

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver keeps the spans OTLP/HTTP exporters send it, with each
// one's service.name.
type otlpReceiver struct {
	srv     *httptest.Server
	mu      sync.Mutex
	spans   []*tracepb.Span
	service map[*tracepb.Span]string
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	rc := &otlpReceiver{service: map[*tracepb.Span]string{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req coltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil || r.URL.Path != "/v1/traces" {
			http.Error(w, "not an OTLP export", http.StatusBadRequest)
			return
		}
		rc.mu.Lock()
		for _, rs := range req.ResourceSpans {
			name := ""
			for _, a := range rs.GetResource().GetAttributes() {
				if a.Key == "service.name" {
					name = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					rc.spans = append(rc.spans, s)
					rc.service[s] = name
				}
			}
		}
		rc.mu.Unlock()
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *otlpReceiver) trace(id string) []*tracepb.Span {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range rc.spans {
		if hex.EncodeToString(s.TraceId) == id {
			out = append(out, s)
		}
	}
	return out
}

func spanAttr(s *tracepb.Span, key string) string {
	for _, a := range s.Attributes {
		if a.Key == key {
			return a.GetValue().GetStringValue()
		}
	}
	return ""
}

// A request that carries a sampled traceparent through two proxies with
// mTLS gets a client span from the caller's proxy and a server span from
// the callee's, one the child of the other, each naming the identity the
// other side proved; the app behind sees the server span as its parent.
func TestTracingThroughTwoProxiesWithMTLS(t *testing.T) {
	rc := startOTLPReceiver(t)
	mi := startIdentity(t, "24h")
	app := startBackend(t, "app")
	server := startProxy(t, proxyOpts{discovery: appPolicy(t, app.addr, spiffe("client")),
		args: append(mi.proxyArgs(t, "server"), "--inbound-forward", app.addr, "--trace-collector", rc.srv.URL, "--trace-service", "server")})
	disc := discoveryFile(meshedService("web", 80, "", spiffe("server"), server.inbound))
	client := startProxy(t, proxyOpts{discovery: disc, args: append(mi.proxyArgs(t, "client"), "--trace-collector", rc.srv.URL, "--trace-service", "client")})
	const traceID, callerSpan = "4bf92f3577b34da6a3ce929d0e0736aa", "00f067aa0ba902b7"
	resp, _, err := newClient(client.outbound).get("web", "/traced", "Traceparent", "00-"+traceID+"-"+callerSpan+"-01")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("traced request: %v %v", resp, err)
	}
	var spans []*tracepb.Span
	waitFor(t, "both proxies' spans", func() bool { spans = rc.trace(traceID); return len(spans) == 2 })
	var out, in *tracepb.Span
	for _, s := range spans {
		switch s.Kind {
		case tracepb.Span_SPAN_KIND_CLIENT:
			out = s
		case tracepb.Span_SPAN_KIND_SERVER:
			in = s
		}
	}
	if out == nil || in == nil {
		t.Fatalf("spans %v; want a client and a server span", spans)
	}
	if hex.EncodeToString(out.ParentSpanId) != callerSpan || string(in.ParentSpanId) != string(out.SpanId) {
		t.Errorf("client span's parent %x (want the caller's %s), server span's parent %x (want the client span %x)", out.ParentSpanId, callerSpan, in.ParentSpanId, out.SpanId)
	}
	if rc.service[out] != "client" || rc.service[in] != "server" {
		t.Errorf("services %q and %q; want client and server", rc.service[out], rc.service[in])
	}
	if got := spanAttr(out, "mesh.peer.identity"); got != spiffe("server") {
		t.Errorf("client span's peer identity %q; want %s", got, spiffe("server"))
	}
	if got := spanAttr(in, "mesh.peer.identity"); got != spiffe("client") {
		t.Errorf("server span's peer identity %q; want %s", got, spiffe("client"))
	}
	if got, want := app.lastRequest().Header.Get("Traceparent"), "00-"+traceID+"-"+hex.EncodeToString(in.SpanId)+"-01"; got != want {
		t.Errorf("the app saw traceparent %q; want %q (the server span as its parent)", got, want)
	}
	if got := spanAttr(in, "url.path"); got != "/traced" {
		t.Errorf("server span's path %q", got)
	}
}
