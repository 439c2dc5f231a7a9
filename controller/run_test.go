package controller

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/status"

	"github.com/meshproj/mesh/discovery/xdswire"
)

func TestInjectedAddressesUseTheClustersDomain(t *testing.T) {
	c := Config{Namespace: "mesh-system", TrustDomain: "example.org", ClusterDomain: "corp.example", ProxyVersion: "v1.2.3"}
	opt := c.InjectOptions("PEM")
	if opt.IdentityAddr != "mesh-identity.mesh-system.svc.corp.example:8443" {
		t.Errorf("identity address %q; want it in the cluster's domain corp.example", opt.IdentityAddr)
	}
	if opt.DiscoveryAddr != "mesh-destination.mesh-system.svc.corp.example:8086" {
		t.Errorf("discovery address %q; want it in the cluster's domain corp.example", opt.DiscoveryAddr)
	}
	if opt.TrustDomain != "example.org" || opt.TrustAnchors != "PEM" {
		t.Errorf("trust domain %q, anchors %q", opt.TrustDomain, opt.TrustAnchors)
	}
}

func TestConfigValidate(t *testing.T) {
	good := func() Config {
		return Config{Client: nil, Namespace: "mesh-system", TrustDomain: "cluster.local", ClusterDomain: "cluster.local", CertLifetime: time.Hour}
	}
	for name, tc := range map[string]struct {
		edit func(*Config)
		ok   bool
	}{
		"no client":      {func(*Config) {}, false},
		"short lifetime": {func(c *Config) { c.CertLifetime = time.Second }, false},
		"no domain":      {func(c *Config) { c.ClusterDomain = "" }, false},
	} {
		c := good()
		tc.edit(&c)
		if err := c.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate = %v", name, err)
		}
	}
}

// The admin port's profiles answer this host only: the pod network gets a
// 403, whatever its headers say.
func TestProfilesAreForLoopbackOnly(t *testing.T) {
	mux := adminMux(prometheus.NewRegistry(), func() error { return nil })
	for remote, want := range map[string]int{"127.0.0.1:40000": 200, "10.1.2.3:40000": 403} {
		r := httptest.NewRequest("GET", "/debug/pprof/", nil)
		r.RemoteAddr = remote
		r.Header.Set("X-Forwarded-For", "127.0.0.1")
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		if w.Code != want || want == 200 && !strings.Contains(w.Body.String(), "goroutine") {
			t.Errorf("/debug/pprof/ from %s: %d, want %d", remote, w.Code, want)
		}
	}
}

// Streams and refusals are counted for both variants of the protocol:
// mesh proxies speak delta xDS, proxyless gRPC the state of the world.
func TestCallbacksCountDeltaAndStateOfTheWorldStreams(t *testing.T) {
	d := &Destination{Log: slog.New(slog.DiscardHandler)}
	cb := d.Callbacks()
	ctx := context.Background()
	cb.OnDeltaStreamOpen(ctx, 1, "")
	cb.OnStreamOpen(ctx, 2, "")
	if n := d.Streams.Load(); n != 2 {
		t.Errorf("%d streams open, want 2", n)
	}
	nack := &status.Status{Code: 3, Message: "bad balancer"}
	cb.OnStreamDeltaRequest(1, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: xdswire.ClusterType, ErrorDetail: nack})
	cb.OnStreamDeltaRequest(1, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: xdswire.ClusterType, ResponseNonce: "1"})
	cb.OnStreamRequest(2, &discoveryv3.DiscoveryRequest{TypeUrl: xdswire.ClusterType, ErrorDetail: nack})
	if n := d.Nacks.Load(); n != 2 {
		t.Errorf("%d refusals counted, want 2 (one of each variant)", n)
	}
	cb.OnDeltaStreamClosed(1, nil)
	cb.OnStreamClosed(2, nil)
	if n := d.Streams.Load(); n != 0 {
		t.Errorf("%d streams open after both closed", n)
	}
}
