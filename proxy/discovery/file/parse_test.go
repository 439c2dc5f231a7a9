package file

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/meshproj/mesh/discovery"
)

const good = `# two services
services:
  - name: web
    port: 80
    loadBalancer: round-robin
    addresses: [10.96.0.10, "fd00::10"]
    endpoints:
      - address: 127.0.0.1:8081
      - address: 127.0.0.1:8082
        weight: 3
        identity: spiffe://cluster.local/ns/default/sa/web
        zone: a
  - name: Cache.Default.svc.cluster.local.
    port: 6379
    opaque: true
    loadBalancer: ring-hash
    hashKey: {sourceIP: true}
    endpoints: []
`

func TestParseGood(t *testing.T) {
	svcs, err := Parse("d.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 2 {
		t.Fatalf("got %d services", len(svcs))
	}
	web := svcs[0]
	if web.Key() != (discovery.Key{Host: "web", Port: 80}) || web.LoadBalancer != discovery.RoundRobin || len(web.Endpoints) != 2 {
		t.Errorf("web = %+v", web)
	}
	if len(web.Addresses) != 2 || web.Addresses[1].String() != "fd00::10" {
		t.Errorf("addresses = %v", web.Addresses)
	}
	if e := web.Endpoints[1]; e.Weight != 3 || e.Zone != "a" || e.Identity == "" || web.Endpoints[0].Weight != 1 {
		t.Errorf("endpoints = %+v", web.Endpoints)
	}
	cache := svcs[1]
	if cache.Name != "cache.default.svc.cluster.local" || !cache.Opaque || !cache.HashKey.SourceIP {
		t.Errorf("cache = %+v", cache)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, in := range []string{"", "# nothing\n", "services: []\n"} {
		if svcs, err := Parse("d.yaml", []byte(in)); err != nil || len(svcs) != 0 {
			t.Errorf("Parse(%q) = %v, %v", in, svcs, err)
		}
	}
}

func TestParseErrorsNameFileAndLine(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"syntax", "services:\n  - name: web\n\tport: 80\n", "tab character"},
		{"unclosed flow", "services:\n  - {name: web, port: 80\n", "d.yaml:"},
		{"unknown field", "services:\n  - name: web\n    prot: 80\n", "d.yaml:3: field prot not found"},
		{"wrong type", "services:\n  - name: web\n    port: eighty\n", "d.yaml:3:"},
		{"missing name", "services:\n  - port: 80\n", "d.yaml:2: services[0].name is required"},
		{"bad name", "services:\n  - name: web_1\n    port: 80\n", "d.yaml:2: services[0].name \"web_1\" is not a DNS name"},
		{"bad port", "services:\n  - name: web\n    port: 0\n", "d.yaml:3: services[0].port must be 1-65535"},
		{"duplicate", "services:\n  - {name: web, port: 80}\n  - {name: WEB, port: 80}\n", "d.yaml:3: service web:80 is listed twice"},
		{"unknown balancer", "services:\n  - name: web\n    port: 80\n    loadBalancer: fastest\n", "d.yaml:4: services[0].loadBalancer \"fastest\" is unknown"},
		{"hash without key", "services:\n  - name: web\n    port: 80\n    loadBalancer: maglev\n", "d.yaml:4: services[0].loadBalancer maglev needs a hashKey"},
		{"key without hash", "services:\n  - name: web\n    port: 80\n    hashKey: {header: x}\n", "d.yaml:4: services[0].hashKey is only used by"},
		{"two keys", "services:\n  - name: web\n    port: 80\n    loadBalancer: ring-hash\n    hashKey: {header: x, sourceIP: true}\n", "d.yaml:5: services[0].hashKey must set exactly one"},
		{"bad address", "services:\n  - name: web\n    port: 80\n    endpoints:\n      - address: localhost:80\n", "d.yaml:5: services[0].endpoints[0].address \"localhost:80\" must be IP:port"},
		{"duplicate address", "services:\n  - name: web\n    port: 80\n    endpoints:\n      - address: 127.0.0.1:80\n      - address: 127.0.0.1:80\n", "d.yaml:6: services[0].endpoints[1].address 127.0.0.1:80 is listed twice"},
		{"bad weight", "services:\n  - name: web\n    port: 80\n    endpoints:\n      - address: 127.0.0.1:80\n        weight: 0\n", "d.yaml:6: services[0].endpoints[0].weight must be 1-10000"},
		{"bad identity", "services:\n  - name: web\n    port: 80\n    endpoints:\n      - address: 127.0.0.1:80\n        identity: web\n", "d.yaml:6: services[0].endpoints[0].identity \"web\" must be a SPIFFE ID"},
		{"bad address", "services:\n  - name: web\n    port: 80\n    addresses: [10.96.0.10, ten]\n", "d.yaml:4: services[0].addresses[1] \"ten\" is not an IP address"},
		{"route path type", "services:\n  - name: web\n    port: 80\n    routes:\n      - matches: [{path: {type: Regex, value: /a}}]\n", "d.yaml:5: services[0].routes[0].matches[0].path.type \"Regex\" is not Exact or PathPrefix"},
		{"route path", "services:\n  - name: web\n    port: 80\n    routes:\n      - matches: [{path: {value: api}}]\n", "services[0].routes[0].matches[0].path.value \"api\" must start with /"},
		{"route method", "services:\n  - name: web\n    port: 80\n    routes:\n      - matches: [{method: FETCH}]\n", "services[0].routes[0].matches[0].method \"FETCH\" is not an HTTP method"},
		{"route header", "services:\n  - name: web\n    port: 80\n    routes:\n      - matches: [{headers: [{name: 'x y', value: a}]}]\n", "services[0].routes[0].matches[0].headers[0].name \"x y\" is not a header name"},
		{"route backend", "services:\n  - name: web\n    port: 80\n    routes:\n      - backends: [{service: web-v2}]\n", "services[0].routes[0].backends[0].service \"web-v2\" is not a service as NAME:PORT"},
		{"route weights", "services:\n  - name: web\n    port: 80\n    routes:\n      - backends: [{service: 'a:80', weight: 0}]\n", "services[0].routes[0].backends all have weight 0"},
		{"route names", "services:\n  - name: web\n    port: 80\n    routes:\n      - {name: a}\n      - {name: a}\n", "d.yaml:6: services[0].routes[1].name \"a\" is also routes[0]'s name"},
		{"route retries", "services:\n  - name: web\n    port: 80\n    routes:\n      - retries: {maxRetries: 11}\n", "services[0].routes[0].retries.maxRetries must be 0-10"},
		{"route timeout", "services:\n  - name: web\n    port: 80\n    routes:\n      - timeouts: {request: soon}\n", "services[0].routes[0].timeouts.request \"soon\" must be a positive duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("d.yaml", []byte(tt.in))
			var fe *Error
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a file error", err)
			}
			if fe.Line == 0 {
				t.Errorf("error %q has no line", err)
			}
			if !strings.HasPrefix(err.Error(), tt.want) && !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("services:\n  - {name: a, port: 1, endpoints: [{address: '[::1]:80', weight: 2}]}\n"))
	f.Add([]byte("services: [{name: a, port: 1, loadBalancer: maglev, hashKey: {cookie: s}}]"))
	f.Add([]byte("services: [{name: a, port: 1, routes: [{name: r, matches: [{path: {type: Exact, value: /x}, method: GET, headers: [{name: h, value: v}], queryParams: [{name: q, value: '1'}]}], backends: [{service: 'b:80', weight: 9}], timeouts: {request: 1s}, retries: {statuses: [5xx]}}]}]"))
	f.Add([]byte("services: [{name: a, port: 1, retries: {statuses: [5xx, 500-502], grpcCodes: [UNAVAILABLE]}, failureAccrual: {minBackoff: 1s}, timeouts: {request: 2s}}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		svcs, err := Parse("f.yaml", data)
		if err != nil {
			if fe := (*Error)(nil); !errors.As(err, &fe) {
				t.Fatalf("error %v is not a file error", err)
			}
			return
		}
		seen := map[discovery.Key]bool{}
		for _, s := range svcs {
			if s.Port == 0 || s.Name == "" || !s.LoadBalancer.Valid() || seen[s.Key()] {
				t.Fatalf("accepted an invalid service %+v", s)
			}
			seen[s.Key()] = true
			if s.Timeouts.Request < 0 || s.QueueTimeout < 0 || (s.FailureAccrual != nil && s.FailureAccrual.MaxBackoff < s.FailureAccrual.MinBackoff) {
				t.Fatalf("accepted invalid failure handling: %+v", s)
			}
			if s.Retries != nil {
				for _, r := range s.Retries.Statuses {
					if r.Min < 100 || r.Max > 599 || r.Min > r.Max {
						t.Fatalf("accepted an invalid status range %+v", r)
					}
				}
			}
			if s.LoadBalancer.Hashing() == s.HashKey.IsZero() {
				t.Fatalf("hash key and balancer disagree: %+v", s)
			}
			for _, e := range s.Endpoints {
				if !e.Address.IsValid() || e.Weight == 0 || e.Weight > MaxWeight {
					t.Fatalf("accepted an invalid endpoint %+v", e)
				}
			}
		}
	})
}

func TestBackendFollowsEditsAndKeepsLastGoodState(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "discovery.yaml")
	write := func(s string) {
		t.Helper()
		// Write and rename, as editors and ConfigMap volumes do.
		tmp := filepath.Join(dir, ".tmp")
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("services: [{name: web, port: 80, endpoints: [{address: 127.0.0.1:1}]}]\n")

	var mu sync.Mutex
	var states []discovery.State
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b := &Backend{Path: path, Debounce: 10 * time.Millisecond}
	go func() {
		done <- b.Run(ctx, func(s discovery.State) { mu.Lock(); states = append(states, s); mu.Unlock() })
	}()
	waitFor := func(n int) discovery.State {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			if len(states) >= n {
				s := states[n-1]
				mu.Unlock()
				return s
			}
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("no update %d within 5s", n)
		return discovery.State{}
	}
	if s := waitFor(1); len(s.Services[0].Endpoints) != 1 {
		t.Fatalf("first state %+v", s)
	}
	write("services: [{name: web, port: 80, endpoints: [{address: 127.0.0.1:1}, {address: 127.0.0.1:2}]}]\n")
	if s := waitFor(2); len(s.Services[0].Endpoints) != 2 {
		t.Fatalf("second state %+v", s)
	}
	write("services: [{name: web, port: 80, endpoints: [{address: nowhere}]}]\n")
	time.Sleep(200 * time.Millisecond)
	write("services: [{name: web, port: 80, endpoints: []}]\n")
	s := waitFor(3)
	if len(s.Services[0].Endpoints) != 0 {
		t.Fatalf("third state %+v", s)
	}
	mu.Lock()
	n := len(states)
	mu.Unlock()
	if n != 3 {
		t.Fatalf("the invalid edit produced an update: %d updates", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestBackendRefusesInvalidFileAtStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.yaml")
	os.WriteFile(path, []byte("services:\n  - name: web\n    port: 99999\n"), 0o644)
	err := (&Backend{Path: path}).Run(context.Background(), func(discovery.State) { t.Fatal("update for an invalid file") })
	if err == nil || !strings.Contains(err.Error(), path+":3:") {
		t.Fatalf("error = %v; want it to name %s:3", err, path)
	}
}

func TestParseRoutes(t *testing.T) {
	svcs, err := Parse("d.yaml", []byte(`services:
  - name: web
    port: 80
    routes:
      - name: canary
        matches: [{path: {type: Exact, value: /x}, method: get, headers: [{name: h, value: v}], queryParams: [{name: q, value: "1"}]}, {}]
        backends: [{service: "web-v2:80", weight: 9}, {service: web-v1.shop:8080}]
        timeouts: {request: 1s}
        retries: {statuses: [5xx]}
      - matches: [{path: {value: /api}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []discovery.Route{{
		Name: "canary",
		Matches: []discovery.RouteMatch{{PathType: discovery.PathExact, Path: "/x", Method: "GET",
			Headers: []discovery.NameValue{{Name: "h", Value: "v"}}, QueryParams: []discovery.NameValue{{Name: "q", Value: "1"}}}, {}},
		Backends: []discovery.RouteBackend{{Service: discovery.Key{Host: "web-v2", Port: 80}, Weight: 9}, {Service: discovery.Key{Host: "web-v1.shop", Port: 8080}, Weight: 1}},
		Timeouts: discovery.Timeouts{Request: time.Second},
		Retries:  &discovery.Retries{MaxRetries: 2, Statuses: []discovery.StatusRange{{Min: 500, Max: 599}}, BudgetRatio: 0.2, BudgetMinPerSecond: 10, BudgetTTL: 10 * time.Second},
	}, {
		Name:    "web:80/1",
		Matches: []discovery.RouteMatch{{PathType: discovery.PathPrefix, Path: "/api"}},
	}}
	if diff := cmp.Diff(want, svcs[0].Routes); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
}
