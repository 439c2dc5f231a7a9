package e2e

import (
	"encoding/hex"
	"testing"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/meshproj/mesh/internal/otlp/otlptest"
)

// A request that carries a sampled traceparent through two proxies with
// mTLS gets a client span from the caller's proxy and a server span from
// the callee's, one the child of the other, each naming the identity the
// other side proved; the app behind sees the server span as its parent.
func TestTracingThroughTwoProxiesWithMTLS(t *testing.T) {
	rc := otlptest.Start(t)
	mi := startIdentity(t, "24h")
	app := startBackend(t, "app")
	server := startProxy(t, proxyOpts{discovery: appPolicy(t, app.addr, spiffe("client")),
		args: append(mi.proxyArgs(t, "server"), "--inbound-forward", app.addr, "--trace-collector", rc.URL, "--trace-service", "server")})
	disc := discoveryFile(meshedService("web", 80, "", spiffe("server"), server.inbound))
	client := startProxy(t, proxyOpts{discovery: disc, args: append(mi.proxyArgs(t, "client"), "--trace-collector", rc.URL, "--trace-service", "client")})
	const traceID, callerSpan = "4bf92f3577b34da6a3ce929d0e0736aa", "00f067aa0ba902b7"
	resp, _, err := newClient(client.outbound).get("web", "/traced", "Traceparent", "00-"+traceID+"-"+callerSpan+"-01")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("traced request: %v %v", resp, err)
	}
	var spans []*tracepb.Span
	waitFor(t, "both proxies' spans", func() bool { spans = rc.Trace(traceID); return len(spans) == 2 })
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
	if rc.Service(out) != "client" || rc.Service(in) != "server" {
		t.Errorf("services %q and %q; want client and server", rc.Service(out), rc.Service(in))
	}
	if got := otlptest.Attr(out, "mesh.peer.identity"); got != spiffe("server") {
		t.Errorf("client span's peer identity %q; want %s", got, spiffe("server"))
	}
	if got := otlptest.Attr(in, "mesh.peer.identity"); got != spiffe("client") {
		t.Errorf("server span's peer identity %q; want %s", got, spiffe("client"))
	}
	if got, want := app.lastRequest().Header.Get("Traceparent"), "00-"+traceID+"-"+hex.EncodeToString(in.SpanId)+"-01"; got != want {
		t.Errorf("the app saw traceparent %q; want %q (the server span as its parent)", got, want)
	}
	if got := otlptest.Attr(in, "url.path"); got != "/traced" {
		t.Errorf("server span's path %q", got)
	}
}
