package file

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/meshproj/mesh/discovery"
)

const policyFile = `services: []
policies:
  - identity: spiffe://cluster.local/ns/demo/sa/api
    default: all-authenticated
    servers:
      - name: api-http
        port: 8080
        protocol: http1
        authorizations:
          - name: from-web
            identities: [spiffe://cluster.local/ns/demo/sa/web]
          - name: from-office
            networks: [{cidr: 192.0.2.7/24, except: [192.0.2.128/25]}]
`

func TestPoliciesReadAsTheyAreWritten(t *testing.T) {
	_, ps, err := ParseAll("d.yaml", []byte(policyFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 {
		t.Fatalf("policies %+v", ps)
	}
	p := ps[0]
	if p.Identity != "spiffe://cluster.local/ns/demo/sa/api" || p.Default != discovery.AllAuthenticated || len(p.Servers) != 1 {
		t.Fatalf("policy %+v", p)
	}
	s := p.Servers[0]
	if s.Name != "api-http" || s.Port != 8080 || s.Protocol != "http1" || len(s.Authorizations) != 2 ||
		s.Authorizations[0].Identities[0] != "spiffe://cluster.local/ns/demo/sa/web" ||
		s.Authorizations[1].Networks[0].CIDR != netip.MustParsePrefix("192.0.2.0/24") ||
		s.Authorizations[1].Networks[0].Except[0] != netip.MustParsePrefix("192.0.2.128/25") {
		t.Errorf("server %+v", s)
	}
}

func TestABadPolicyIsRefusedWithItsLine(t *testing.T) {
	for _, c := range []struct{ from, to, says string }{
		{"default: all-authenticated", "default: permissive", `d.yaml:4: policies[0].default "permissive" is unknown`},
		{"port: 8080", "port: 0", "d.yaml:7: policies[0].servers[0].port must be 1-65535, got 0"},
		{"protocol: http1", "protocol: sctp", `d.yaml:8: policies[0].servers[0].protocol "sctp" is unknown`},
		{"cidr: 192.0.2.7/24", "cidr: office", `policies[0].servers[0].authorizations[1].networks[0].cidr "office" is not a CIDR`},
		{"except: [192.0.2.128/25]", "except: [nope]", `networks[0].except[0] "nope" is not a CIDR`},
		{"          - name: from-office\n            networks: [{cidr: 192.0.2.7/24, except: [192.0.2.128/25]}]", "          - name: from-office", "d.yaml:12: policies[0].servers[0].authorizations[1] (from-office) names no identities and no networks"},
		{"  - identity: spiffe://cluster.local/ns/demo/sa/api\n", "  - identity: spiffe://cluster.local/ns/demo/sa/api\n    defualt: deny\n", "field defualt not found"},
	} {
		in := strings.Replace(policyFile, c.from, c.to, 1)
		if in == policyFile {
			t.Fatalf("%q is not in the file", c.from)
		}
		if _, _, err := ParseAll("d.yaml", []byte(in)); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s -> %s: %v; want %q", c.from, c.to, err, c.says)
		}
	}
	two := policyFile + strings.TrimPrefix(policyFile[strings.Index(policyFile, "  - identity"):], "")
	if _, _, err := ParseAll("d.yaml", []byte(two)); err == nil || !strings.Contains(err.Error(), "a second policy for") {
		t.Errorf("two policies for one identity: %v", err)
	}
}
