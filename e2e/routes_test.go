package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshproj/mesh/proxy/adminapi"
)

// split is a route sending web's requests to web-v1 and web-v2 by weight.
func split(v1, v2 int) string {
	return fmt.Sprintf("    routes:\n      - name: canary\n        backends:\n          - {service: web-v1:80, weight: %d}\n          - {service: web-v2:80, weight: %d}\n", v1, v2)
}

func TestARouteSplitsTrafficByWeightAndMovesWhenTheWeightsChange(t *testing.T) {
	v1, v2 := startBackend(t, "v1"), startBackend(t, "v2")
	disc := func(w1, w2 int) string {
		return discoveryFile(service("web", 80, "", split(w1, w2)), service("web-v1", 80, "", "", v1.addr), service("web-v2", 80, "", "", v2.addr))
	}
	mp := startProxy(t, proxyOpts{discovery: disc(90, 10)})
	cl := newClient(mp.outbound)
	send := func(n int) (int64, int64) {
		b1, b2 := v1.hits.Load(), v2.hits.Load()
		for i := range n {
			if resp, body, err := cl.get("web", "/"); err != nil || resp.StatusCode != 200 {
				t.Fatalf("request %d: %v %v %s", i, resp, err, body)
			}
		}
		return v1.hits.Load() - b1, v2.hits.Load() - b2
	}
	const n = 2000
	a, b := send(n)
	t.Logf("90/10: v1 %d, v2 %d", a, b)
	if share := float64(b) / n; share < 0.07 || share > 0.13 {
		t.Errorf("a 90/10 split sent %.1f%% of %d requests to v2", 100*share, n)
	}
	if m := mp.metrics(t); !has(m, "response_total", "authority", "web-v2:80", "route", "canary", "status_code", "200") {
		t.Errorf("responses are not counted by route:\n%s", grep(m, "response_total"))
	}
	// The window mesh stat --by route reads: both backends under the route.
	var st adminapi.Stats
	mp.adminJSON(t, "/stats?seconds=60", &st)
	byRoute := map[string]uint64{}
	for _, s := range st.Stats {
		if s.Direction == "outbound" {
			byRoute[s.Route+" "+s.Authority] += s.Requests
		}
	}
	if byRoute["canary web-v1:80"]+byRoute["canary web-v2:80"] != n || byRoute["canary web-v2:80"] != uint64(b) {
		t.Errorf("the proxy's window by route and service: %v; want %d under canary, %d of them to web-v2", byRoute, n, b)
	}
	for _, s := range mp.dump(t).Services {
		if s.Authority == "web:80" && (len(s.Routes) != 1 || s.Routes[0].Name != "canary") {
			t.Errorf("the config dump shows web's routes as %+v", s.Routes)
		}
	}
	// Live: the weights change, the proxy follows without a restart.
	mp.writeDiscovery(t, disc(0, 100), 2)
	if a, b := send(200); a != 0 || b != 200 {
		t.Errorf("after moving all weight to v2: v1 %d, v2 %d", a, b)
	}
}

func TestRoutesMatchPathsHeadersAndMethodsMostSpecificFirst(t *testing.T) {
	api, canary, legacy, rest := startBackend(t, "api"), startBackend(t, "canary"), startBackend(t, "legacy"), startBackend(t, "rest")
	routes := `    routes:
      - name: rest
        backends: [{service: rest:80}]
      - name: api
        matches: [{path: {type: PathPrefix, value: /api}}]
        backends: [{service: api:80}]
      - name: canary
        matches: [{path: {value: /api}, headers: [{name: x-canary, value: "yes"}]}]
        backends: [{service: canary:80}]
      - name: legacy
        matches: [{path: {type: Exact, value: /api/v1}, method: POST}, {queryParams: [{name: legacy, value: "1"}]}]
        backends: [{service: legacy:80}]
`
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("web", 80, "", routes),
		service("api", 80, "", "", api.addr), service("canary", 80, "", "", canary.addr),
		service("legacy", 80, "", "", legacy.addr), service("rest", 80, "", "", rest.addr))})
	cl := newClient(mp.outbound)
	for _, c := range []struct {
		method, path string
		header       []string
		want         string
	}{
		{"GET", "/", nil, "rest"},
		{"GET", "/apix", nil, "rest"}, // a prefix matches whole segments
		{"GET", "/api", nil, "api"},
		{"GET", "/api/items", nil, "api"},
		{"GET", "/api/items", []string{"X-Canary", "yes"}, "canary"}, // more headers: more specific
		{"GET", "/api/items", []string{"X-Canary", "no"}, "api"},
		{"POST", "/api/v1", nil, "legacy"}, // an exact path beats any prefix
		{"GET", "/api/v1", nil, "api"},     // ... but only for POST
		{"GET", "/other?legacy=1", nil, "legacy"},
	} {
		req, _ := http.NewRequest(c.method, "http://"+mp.outbound+c.path, nil)
		req.Host = "web"
		for i := 0; i+1 < len(c.header); i += 2 {
			req.Header.Set(c.header[i], c.header[i+1])
		}
		resp, err := cl.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Backend"); got != c.want {
			t.Errorf("%s %s %v went to %q (status %d, %s); want %s", c.method, c.path, c.header, got, resp.StatusCode, resp.Header.Get("mesh-error"), c.want)
		}
	}
}

func TestARequestNoRouteMatchesGets404SayingSo(t *testing.T) {
	api := startBackend(t, "api")
	routes := "    routes:\n      - name: api-only\n        matches: [{path: {value: /api}}]\n        backends: [{service: api:80}]\n"
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("web", 80, "", routes), service("api", 80, "", "", api.addr))})
	resp, _, err := newClient(mp.outbound).get("web", "/other")
	if err != nil || resp.StatusCode != 404 || !strings.Contains(resp.Header.Get("mesh-error"), "no route of web:80 matches GET /other") {
		t.Fatalf("unrouted request: %v %v (mesh-error %q)", resp, err, resp.Header.Get("mesh-error"))
	}
	if api.hits.Load() != 0 {
		t.Errorf("the unrouted request reached a backend")
	}
}

func TestARoutesRetriesHideAFlakyBackendAndItsTimeoutFires(t *testing.T) {
	flaky, slow := startBackend(t, "flaky"), startBackend(t, "slow")
	var n atomic.Int64
	flaky.handler = func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 1 {
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("X-Backend", "flaky")
	}
	slow.delay.Store(int64(time.Second))
	routes := `    routes:
      - name: flaky
        matches: [{path: {value: /flaky}}]
        retries: {statuses: ["503"], maxRetries: 2}
      - name: slow
        matches: [{path: {value: /slow}}]
        backends: [{service: slow:80}]
        timeouts: {request: 200ms}
`
	// web's own endpoint is the flaky one, with no retries of its own: only
	// the route's can hide its 503s.
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("web", 80, "round-robin", routes+
		"    failureAccrual: {consecutiveFailures: 0}\n", flaky.addr), service("slow", 80, "", "", slow.addr))})
	cl := newClient(mp.outbound)
	for i := range 50 {
		if resp, body, err := cl.get("web", "/flaky"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("request %d to a backend failing every other time, with route retries: %v %v %s", i, resp, err, body)
		}
	}
	if !has(mp.metrics(t), "retry_total", "authority", "web:80", "reason", "status") {
		t.Errorf("the route's retries are not counted")
	}
	start := time.Now()
	resp, _, err := cl.get("web", "/slow")
	if err != nil || resp.StatusCode != 504 || !strings.Contains(resp.Header.Get("mesh-error"), "timed out after 200ms (timeouts.request of route slow)") {
		t.Fatalf("a request on a route with a 200ms timeout to a backend answering in 1s: %v %v (mesh-error %q)", resp, err, resp.Header.Get("mesh-error"))
	}
	t.Logf("the route's timeout answered after %s", time.Since(start).Round(time.Millisecond))
}

// A route's filters: headers changed on the way to the backend and back,
// and a route that answers with a redirect instead.
func TestARoutesFiltersChangeHeadersAndRedirect(t *testing.T) {
	api := startBackend(t, "api")
	routes := `    routes:
      - name: headers
        matches: [{path: {value: /api}}]
        backends: [{service: api:80}]
        requestHeaders: {set: [{name: x-env, value: canary}], add: [{name: x-hop, value: mesh}], remove: [x-secret]}
        responseHeaders: {set: [{name: x-served-by, value: mesh}], remove: [x-backend]}
      - name: moved
        matches: [{path: {type: PathPrefix, value: /old}}]
        redirect: {hostname: new.example, prefixMatch: /new, statusCode: 301}
      - name: secure
        matches: [{path: {type: Exact, value: /login}}]
        redirect: {scheme: https}
`
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("web", 80, "", routes), service("api", 80, "", "", api.addr))})
	cl := newClient(mp.outbound)
	resp, _, err := cl.get("web", "/api/items", "X-Env", "prod", "X-Hop", "app", "X-Secret", "s3cret")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /api/items: %v %v", resp, err)
	}
	got := api.lastRequest().Header
	if got.Get("X-Env") != "canary" || strings.Join(got.Values("X-Hop"), ",") != "app,mesh" || got.Get("X-Secret") != "" {
		t.Errorf("the backend got X-Env %q, X-Hop %q, X-Secret %q; want canary, app,mesh and none", got.Get("X-Env"), got.Values("X-Hop"), got.Get("X-Secret"))
	}
	if resp.Header.Get("X-Served-By") != "mesh" || resp.Header.Get("X-Backend") != "" {
		t.Errorf("the response's X-Served-By %q and X-Backend %q; want mesh and none", resp.Header.Get("X-Served-By"), resp.Header.Get("X-Backend"))
	}

	noFollow := *cl.http
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	before := api.hits.Load()
	for _, c := range []struct {
		path, code, location string
	}{
		{"/old/a/b?x=1", "301", "http://new.example/new/a/b?x=1"},
		{"/old", "301", "http://new.example/new"},
		{"/login", "302", "https://web/login"},
	} {
		req, _ := http.NewRequest("GET", "http://"+mp.outbound+c.path, nil)
		req.Host = "web"
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := fmt.Sprint(resp.StatusCode); got != c.code || resp.Header.Get("Location") != c.location {
			t.Errorf("GET %s: %s to %q; want %s to %q", c.path, got, resp.Header.Get("Location"), c.code, c.location)
		}
	}
	if api.hits.Load() != before {
		t.Error("a redirect reached a backend")
	}
}

// A route's timeout per attempt: an attempt at a replica that hangs is
// cut short and retried at the other; without retries the client gets a
// 504 naming that timeout.
func TestARoutesAttemptTimeoutRetriesAHangingReplica(t *testing.T) {
	hung, fast := startBackend(t, "hung"), startBackend(t, "fast")
	hung.delay.Store(int64(5 * time.Second))
	routes := `    routes:
      - name: retried
        matches: [{path: {value: /retried}}]
        backends: [{service: api:80}]
        timeouts: {request: 3s, backendRequest: 100ms}
        retries: {maxRetries: 2}
      - name: once
        matches: [{path: {value: /once}}]
        backends: [{service: api:80}]
        timeouts: {backendRequest: 100ms}
        retries: {maxRetries: 0}
`
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("web", 80, "", routes),
		service("api", 80, "round-robin", "    failureAccrual: {consecutiveFailures: 0}\n", hung.addr, fast.addr))})
	cl := newClient(mp.outbound)
	for i := range 10 {
		if resp, body, err := cl.get("web", "/retried"); err != nil || resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "fast" {
			t.Fatalf("request %d, an attempt at the hung replica cut at 100ms and retried: %v %v %s", i, resp, err, body)
		}
	}
	if hung.hits.Load() == 0 {
		t.Fatal("round-robin never tried the hung replica: the test proves nothing")
	}
	if !has(mp.metrics(t), "retry_total", "authority", "api:80", "reason", "attempt_timeout") {
		t.Errorf("the retries after an attempt timed out are not counted")
	}
	saw504 := false
	for range 4 {
		resp, _, err := cl.get("web", "/once")
		if err != nil {
			t.Fatal(err)
		}
		switch resp.StatusCode {
		case 200:
		case 504:
			saw504 = true
			if !strings.Contains(resp.Header.Get("mesh-error"), "an attempt timed out after 100ms (timeouts.backendRequest of route once)") {
				t.Errorf("the 504 says %q", resp.Header.Get("mesh-error"))
			}
		default:
			t.Errorf("GET /once: %d %s", resp.StatusCode, resp.Header.Get("mesh-error"))
		}
	}
	if !saw504 {
		t.Error("no request without retries met the hung replica")
	}
}
