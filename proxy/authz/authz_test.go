package authz

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/meshproj/mesh/discovery"
)

const (
	web   = "spiffe://cluster.local/ns/shop/sa/web"
	admin = "spiffe://cluster.local/ns/ops/sa/admin"
	other = "spiffe://cluster.local/ns/shop/sa/other"
)

var (
	inCluster  = netip.MustParseAddr("10.1.2.3")
	outside    = netip.MustParseAddr("203.0.113.9")
	officeHost = netip.MustParseAddr("192.0.2.77")
)

func policy(t *testing.T, def discovery.DefaultPolicy) *Policy {
	t.Helper()
	p, err := Compile(&discovery.InboundPolicy{Default: def, Servers: []discovery.Server{
		{Name: "api", Port: 8080, Authorizations: []discovery.Authorization{
			{Name: "from-web", Identities: []string{web}},
			{Name: "from-ops", Identities: []string{"spiffe://cluster.local/ns/ops/sa/*"}},
		}},
		{Name: "metrics", Port: 9100, Authorizations: []discovery.Authorization{
			{Name: "office", Networks: []discovery.Network{{CIDR: netip.MustParsePrefix("192.0.2.0/24"), Except: []netip.Prefix{netip.MustParsePrefix("192.0.2.128/25")}}}},
		}},
		{Name: "locked", Port: 9999},
	}}, discovery.AllUnauthenticated, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAServedPortAdmitsOnlyWhatAnAuthorizationAllows(t *testing.T) {
	p := policy(t, discovery.AllUnauthenticated)
	for _, c := range []struct {
		port      uint16
		id        string
		src       netip.Addr
		allowed   bool
		server    string
		authz     string
		reason    string
		nameOfCas string
	}{
		{8080, web, inCluster, true, "api", "from-web", "", "the named identity"},
		{8080, admin, outside, true, "api", "from-ops", "", "an identity matching a pattern"},
		{8080, other, inCluster, false, "api", "", NoAuthorization, "another identity"},
		{8080, "", inCluster, false, "api", "", NoAuthorization, "no identity at all"},
		{9100, "", officeHost, true, "metrics", "office", "", "a network"},
		{9100, web, netip.MustParseAddr("192.0.2.200"), false, "metrics", "", NoAuthorization, "an excepted address"},
		{9100, "", netip.MustParseAddr("::ffff:192.0.2.5"), true, "metrics", "office", "", "an IPv4-mapped address"},
		{9999, web, inCluster, false, "locked", "", NoAuthorization, "a server without authorizations"},
		{7000, "", outside, true, "", "", "", "an unselected port under all-unauthenticated"},
	} {
		d := p.Decide(c.port, c.id, c.src)
		if d.Allowed != c.allowed || d.Server != c.server || d.Authorization != c.authz || d.Reason != c.reason || d.Audited {
			t.Errorf("%s: %+v", c.nameOfCas, d)
		}
	}
}

func TestDefaultPoliciesForUnselectedPorts(t *testing.T) {
	for _, c := range []struct {
		def     discovery.DefaultPolicy
		id      string
		src     netip.Addr
		allowed bool
		audited bool
		reason  string
	}{
		{discovery.AllUnauthenticated, "", outside, true, false, ""},
		{discovery.AllAuthenticated, web, outside, true, false, ""},
		{discovery.AllAuthenticated, "", inCluster, false, false, Unauthenticated},
		{discovery.ClusterAuthenticated, "", inCluster, true, false, ""},
		{discovery.ClusterAuthenticated, web, outside, true, false, ""},
		{discovery.ClusterAuthenticated, "", outside, false, false, NotInCluster},
		{discovery.Deny, web, inCluster, false, false, DeniedByDefault},
		{discovery.Audit, "", outside, true, false, ""},
	} {
		p := policy(t, c.def)
		d := p.Decide(7000, c.id, c.src)
		if d.Allowed != c.allowed || d.Audited != c.audited || d.Reason != c.reason {
			t.Errorf("%s, id %q from %s: %+v", c.def, c.id, c.src, d)
		}
	}
}

func TestAuditAdmitsWhatTheServersWouldRefuseAndSaysSo(t *testing.T) {
	p := policy(t, discovery.Audit)
	if d := p.Decide(8080, other, inCluster); !d.Allowed || !d.Audited || d.Server != "api" || d.Reason != NoAuthorization {
		t.Errorf("audit, an identity the server does not authorize: %+v", d)
	}
	if d := p.Decide(8080, web, inCluster); !d.Allowed || d.Audited {
		t.Errorf("audit, an authorized identity: %+v", d)
	}
}

func TestNoPolicyIsTheProxysOwnDefault(t *testing.T) {
	p, err := Compile(nil, discovery.Deny, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := p.Decide(80, web, inCluster); d.Allowed || d.Reason != DeniedByDefault {
		t.Errorf("no policy yet under deny (fail closed): %+v", d)
	}
	p, _ = Compile(&discovery.InboundPolicy{}, discovery.AllAuthenticated, nil)
	if p.Default() != discovery.AllAuthenticated {
		t.Errorf("a policy without a default keeps the proxy's: %s", p.Default())
	}
}

func TestCompileRefusesWhatItCannotEnforce(t *testing.T) {
	for _, c := range []struct {
		ip   discovery.InboundPolicy
		says string
	}{
		{discovery.InboundPolicy{Default: "permissive"}, `default policy "permissive"`},
		{discovery.InboundPolicy{Servers: []discovery.Server{{Name: "a"}}}, `server "a": no port`},
		{discovery.InboundPolicy{Servers: []discovery.Server{{Name: "a", Port: 1}, {Name: "b", Port: 1}}}, `servers "a" and "b" both select port 1`},
		{discovery.InboundPolicy{Servers: []discovery.Server{{Name: "a", Port: 1, Authorizations: []discovery.Authorization{{Name: "x"}}}}}, "would admit everyone"},
		{discovery.InboundPolicy{Servers: []discovery.Server{{Name: "a", Port: 1, Authorizations: []discovery.Authorization{{Name: "x", Identities: []string{""}}}}}}, "an empty identity"},
		{discovery.InboundPolicy{Servers: []discovery.Server{{Name: "a", Port: 1, Authorizations: []discovery.Authorization{{Name: "x", Networks: []discovery.Network{{}}}}}}}, "a network without a CIDR"},
	} {
		if _, err := Compile(&c.ip, discovery.AllUnauthenticated, nil); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%+v: %v; want an error saying %q", c.ip, err, c.says)
		}
	}
}

func TestPatternsMatchWithinAPathSegment(t *testing.T) {
	for _, c := range []struct {
		pattern, id string
		want        bool
	}{
		{"spiffe://cluster.local/ns/shop/sa/*", "spiffe://cluster.local/ns/shop/sa/web", true},
		{"spiffe://cluster.local/ns/shop/sa/*", "spiffe://cluster.local/ns/shop/sa/web/extra", false},
		{"spiffe://cluster.local/ns/*/sa/web", "spiffe://cluster.local/ns/shop/sa/web", true},
		{"spiffe://cluster.local/ns/*/sa/web", "spiffe://cluster.local/ns/a/b/sa/web", false},
		{"spiffe://cluster.local/ns/shop/sa/web-*", "spiffe://cluster.local/ns/shop/sa/web-canary", true},
		{"spiffe://cluster.local/ns/shop/sa/web-*", "spiffe://cluster.local/ns/shop/sa/api", false},
		{"spiffe://*/ns/*/sa/*", "spiffe://example.org/ns/x/sa/y", true},
		{"spiffe://cluster.local/ns/shop/sa/*", "spiffe://cluster.local/ns/shop/sa/", true},
		{"spiffe://cluster.local/ns/shop/sa/web", "spiffe://cluster.local/ns/shop/sa/web", true},
	} {
		if got := Match(c.pattern, c.id); got != c.want {
			t.Errorf("Match(%q, %q) = %v", c.pattern, c.id, got)
		}
	}
}

func TestDecidingAllocatesNothing(t *testing.T) {
	p := policy(t, discovery.ClusterAuthenticated)
	if n := testing.AllocsPerRun(100, func() {
		p.Decide(8080, admin, inCluster)
		p.Decide(8080, other, outside)
		p.Decide(7000, "", outside)
	}); n != 0 {
		t.Errorf("%v allocations per decision", n)
	}
}

// FuzzMatch: any pattern against any identity gives an answer, a pattern
// without a star matches itself alone, and a star matches within a segment.
func FuzzMatch(f *testing.F) {
	f.Add("spiffe://cluster.local/ns/*/sa/*", "spiffe://cluster.local/ns/shop/sa/web")
	f.Add("a*b*c", "axxbyyc")
	f.Fuzz(func(t *testing.T, pattern, id string) {
		// SPIFFE IDs are at most 2,048 bytes; patterns are written by hand.
		if len(pattern) > 256 || len(id) > 2048 {
			return
		}
		got := Match(pattern, id)
		if !strings.Contains(pattern, "*") && got != (pattern == id) {
			t.Fatalf("Match(%q, %q) = %v without a star", pattern, id, got)
		}
		if got && !strings.Contains(pattern, "/") && strings.Contains(id, "/") {
			t.Fatalf("Match(%q, %q): a star crossed a /", pattern, id)
		}
	})
}

func BenchmarkDecide(b *testing.B) {
	p, _ := Compile(&discovery.InboundPolicy{Servers: []discovery.Server{{Name: "api", Port: 8080, Authorizations: []discovery.Authorization{
		{Name: "a", Identities: []string{web, "spiffe://cluster.local/ns/ops/sa/*"}}}}}}, discovery.AllAuthenticated, nil)
	b.ReportAllocs()
	for b.Loop() {
		p.Decide(8080, admin, inCluster)
	}
}

func TestAServerCanDeclareItsPortOpaque(t *testing.T) {
	p, err := Compile(&discovery.InboundPolicy{Servers: []discovery.Server{
		{Name: "db", Port: 3306, Protocol: "opaque", Authorizations: []discovery.Authorization{{Name: "any", Identities: []string{"*"}}}},
		{Name: "web", Port: 8080, Protocol: "http1"},
	}}, discovery.AllUnauthenticated, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Opaque(3306) || p.Opaque(8080) || p.Opaque(9999) {
		t.Errorf("opaque 3306 %v, 8080 %v, 9999 %v; want only 3306", p.Opaque(3306), p.Opaque(8080), p.Opaque(9999))
	}
}
