package proxy

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshproj/mesh/proxy/authz"
	"github.com/meshproj/mesh/proxy/metrics"
)

func TestDecisionsAreCountedInTheWindowAndTheCounters(t *testing.T) {
	p := &Proxy{metrics: metrics.New(nil)}
	allow := authz.Decision{Allowed: true, Server: "app-http", Authorization: "web-only"}
	deny := authz.Decision{Server: "app-http", Reason: authz.NoAuthorization}
	audit := authz.Decision{Allowed: true, Audited: true, Reason: authz.Unauthenticated}
	for range 3 {
		p.countDecision("http", allow)
	}
	p.countDecision("http", deny)
	p.countDecision("tcp", audit)
	got := map[string]uint64{}
	for _, s := range p.authzStats.snapshot(10) {
		got[s.Protocol+" "+s.Verdict+" "+s.Server+" "+s.Authorization+s.Reason] = s.Count
	}
	want := map[string]uint64{
		"http allowed app-http web-only":                3,
		"http denied app-http " + authz.NoAuthorization: 1,
		"tcp audited  " + authz.Unauthenticated:         1,
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%q counted %d, want %d (all: %v)", k, got[k], n, got)
		}
	}
	if v := counterValue(t, p.metrics.HTTPAuthzAllow.WithLabelValues("app-http", "web-only")); v != 3 {
		t.Errorf("inbound_http_authz_allow_total = %v, want 3", v)
	}
	if v := counterValue(t, p.metrics.TCPAuthzDeny.WithLabelValues("", authz.Unauthenticated, "true")); v != 1 {
		t.Errorf("inbound_tcp_authz_deny_total{audit=true} = %v, want 1", v)
	}
}

// BenchmarkCountDecision is the cost the inbound policy's counting adds
// to every request.
func BenchmarkCountDecision(b *testing.B) {
	p := &Proxy{metrics: metrics.New(nil)}
	d := authz.Decision{Allowed: true, Server: "app-http", Authorization: "web-only"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p.countDecision("http", d)
		}
	})
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
