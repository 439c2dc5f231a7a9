package controller

import (
	"testing"
	"time"
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
