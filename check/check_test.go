package check

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meshproj/mesh/internal/golden"
	"github.com/meshproj/mesh/inventory"
)

func fixed(st Status, detail string) func(context.Context) (Status, string) {
	return func(context.Context) (Status, string) { return st, detail }
}

var checks = []Check{
	{Category: ControlPlane, Description: "identity service answers with its identity", Run: fixed(OK, "")},
	{Category: ControlPlane, Description: "discovery file is valid", Hint: "fix the file", Run: fixed(OK, "")},
	{Category: DataPlane, Description: "proxy of deploy/api (api-1) is live", Run: fixed(OK, "")},
	{Category: DataPlane, Description: "proxy of deploy/api (api-2) is live", Hint: "restart it and look at its log", Run: fixed(Fail, "Get \"http://127.0.0.1:4191/live\": connection refused")},
	{Category: DataPlane, Description: "proxy of deploy/web (web-1) has a valid certificate, not close to expiry", Hint: "check the identity service", Run: fixed(Warn, "certificate for spiffe://cluster.local/ns/demo/sa/web expires in 2m0s")},
}

func TestGoldenCheckOutput(t *testing.T) {
	var b bytes.Buffer
	rs := Run(context.Background(), checks)
	if err := Render(&b, rs, "table", false); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/check.golden", b.Bytes())
	b.Reset()
	if err := Render(&b, rs, "json", false); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/check_json.golden", b.Bytes())
	if !Failed(rs) {
		t.Error("a failed check did not fail the run")
	}
	b.Reset()
	Render(&b, Run(context.Background(), checks[:3]), "table", false)
	golden.Check(t, "testdata/check_ok.golden", b.Bytes())
}

func TestFatalCheckStopsItsCategory(t *testing.T) {
	rs := Run(context.Background(), []Check{
		{Category: "a", Description: "first", Fatal: true, Run: fixed(Fail, "down")},
		{Category: "a", Description: "second", Run: fixed(OK, "")},
		{Category: "b", Description: "third", Run: fixed(OK, "")},
	})
	if len(rs) != 2 || rs[1].Description != "third" {
		t.Fatalf("results %+v", rs)
	}
}

func TestCertificateFreshness(t *testing.T) {
	// Exercised against a real proxy in e2e; here only the missing-proxy path.
	st, detail := certificateFresh(context.Background(), "127.0.0.1:1", time.Now())
	if st != Fail || detail == "" {
		t.Fatalf("%v %q", st, detail)
	}
}

func TestDiscoveryFreshOnXDS(t *testing.T) {
	for _, tc := range []struct {
		backend string
		want    Status
		detail  string
	}{
		{`{"controller":"10.0.0.1:8086","connected":true}`, OK, ""},
		{`{"controller":"10.0.0.1:8086","connected":false,"lastError":"connection refused"}`, Fail, "not connected to the controller at 10.0.0.1:8086 (connection refused)"},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, `{"discovery":{"source":"xds 10.0.0.1:8086","backend":%s}}`, tc.backend)
		}))
		st, detail := discoveryFresh(context.Background(), strings.TrimPrefix(srv.URL, "http://"), "")
		srv.Close()
		if st != tc.want || !strings.Contains(detail, tc.detail) {
			t.Errorf("%s: %v %q", tc.backend, st, detail)
		}
	}
}

func TestLocalChecksCoverEveryProxy(t *testing.T) {
	m := &inventory.Mesh{Workloads: []inventory.Workload{{Kind: "deploy", Name: "api", Instances: []inventory.Instance{{Name: "a"}, {Name: "b"}}}}}
	if n := len(Local(m, true)); n != 8 {
		t.Fatalf("%d data-plane checks for 2 proxies, want 8", n)
	}
	if n := len(Local(m, false)); n != 10 {
		t.Fatalf("%d checks with the control plane, want 10", n)
	}
}
