package stat

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/internal/golden"
	"github.com/meshproj/mesh/proxy/adminapi"
)

const webID = "spiffe://cluster.local/ns/demo/sa/web"

// apiPolicy is what api's proxies enforce: a Server on 8080 that admits
// web, and all-authenticated elsewhere.
var apiPolicy = discovery.InboundPolicy{Default: discovery.AllAuthenticated, Servers: []discovery.Server{
	{Name: "api-http", Port: 8080, Protocol: "http1", Authorizations: []discovery.Authorization{
		{Name: "web-only", Identities: []string{webID}},
		{Name: "office", Networks: []discovery.Network{{CIDR: netip.MustParsePrefix("10.8.0.0/16"), Except: []netip.Prefix{netip.MustParsePrefix("10.8.9.0/24")}}}},
	}},
	{Name: "api-admin", Port: 9000},
}}

func recordedDumps(_ context.Context, admin string) (*adminapi.ConfigDump, error) {
	switch admin {
	case "api-1", "api-2":
		return &adminapi.ConfigDump{Ready: true, InboundPolicy: apiPolicy}, nil
	case "web-1", "auth-1":
		return &adminapi.ConfigDump{Ready: true}, nil
	}
	return nil, errors.New("connection refused")
}

// recordedAuthz is what api's proxies counted: web admitted on both,
// traffic refused on one, an audited refusal on the default policy, probes,
// and a rule the policy lost within the window.
func recordedAuthz(ctx context.Context, admin string, seconds int) (bool, *adminapi.Stats, error) {
	ready, st, err := recorded(ctx, admin, seconds)
	if st == nil {
		return ready, st, err
	}
	switch admin {
	case "api-1":
		st.Authz = []adminapi.AuthzStat{
			{Protocol: "http", Verdict: "allowed", Server: "api-http", Authorization: "web-only", Count: 170},
			{Protocol: "http", Verdict: "denied", Server: "api-http", Reason: "no authorization admits the client", Count: 12},
			{Protocol: "http", Verdict: "allowed", Authorization: "probe", Count: 6},
			{Protocol: "http", Verdict: "allowed", Server: "api-http", Authorization: "everyone", Count: 3},
		}
	case "api-2":
		st.Authz = []adminapi.AuthzStat{
			{Protocol: "http", Verdict: "allowed", Server: "api-http", Authorization: "web-only", Count: 20},
			{Protocol: "tcp", Verdict: "audited", Reason: "the client proved no mesh identity", Count: 2},
			{Protocol: "http", Verdict: "allowed", Authorization: "probe", Count: 6},
		}
	}
	return ready, st, err
}

func renderAuthz(t *testing.T, resource, format string) []byte {
	t.Helper()
	rows, err := Authz(context.Background(), mesh, resource, 10, recordedAuthz, recordedDumps)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := RenderAuthz(&b, rows, format); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestGoldenAuthzTable(t *testing.T) {
	golden.Check(t, "testdata/authz_api.golden", renderAuthz(t, "deploy/api", Table))
}

func TestGoldenAuthzJSON(t *testing.T) {
	golden.Check(t, "testdata/authz_api_json.golden", renderAuthz(t, "deploy/api", JSON))
}

func TestAuthzSumsTheWorkloadsProxies(t *testing.T) {
	rows, err := Authz(context.Background(), mesh, "deploy/api", 10, recordedAuthz, recordedDumps)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]AuthzRow{}
	for _, r := range rows {
		got[r.Server+"/"+r.Authorization] = r
	}
	checks := []struct {
		key              string
		allowed, denied  uint64
		audited          uint64
		stale            bool
		admitsContaining string
	}{
		{"api-http/web-only", 190, 0, 0, false, webID},
		{"api-http/office", 0, 0, 0, false, "10.8.0.0/16 except 10.8.9.0/24"},
		{"api-http/", 0, 12, 0, false, "nobody else"},
		{"api-admin/", 0, 0, 0, false, "no AuthorizationPolicy"},
		{"/", 0, 0, 2, false, "all-authenticated"},
		{"/probe", 12, 0, 0, false, "probes"},
		{"api-http/everyone", 3, 0, 0, true, "no longer"},
	}
	for _, c := range checks {
		r, ok := got[c.key]
		if !ok {
			t.Errorf("no row for %s in %+v", c.key, rows)
			continue
		}
		if r.Allowed != c.allowed || r.Denied != c.denied || r.Audited != c.audited || r.Stale != c.stale || !strings.Contains(r.Admits, c.admitsContaining) {
			t.Errorf("%s: %+v", c.key, r)
		}
	}
}

func TestAuthzOfAWorkloadWithoutAnswerSaysSo(t *testing.T) {
	_, err := Authz(context.Background(), mesh, "deploy/idle", 10, recordedAuthz, recordedDumps)
	if err == nil || !strings.Contains(err.Error(), "deploy/idle: no proxy answered") {
		t.Fatalf("err = %v", err)
	}
}

func TestAuthzOfEveryWorkloadLeavesOutThoseWithoutAnswer(t *testing.T) {
	rows, err := Authz(context.Background(), mesh, "deploy", 10, recordedAuthz, recordedDumps)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range rows {
		seen[r.Workload] = true
	}
	if !seen["deploy/api"] || !seen["deploy/web"] || seen["deploy/idle"] {
		t.Errorf("workloads shown: %v", seen)
	}
}
