package dashboard

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshproj/mesh/check"
	"github.com/meshproj/mesh/inventory"
	"github.com/meshproj/mesh/proxy/adminapi"
	"github.com/meshproj/mesh/stat"
	"github.com/meshproj/mesh/tap"
)

// A small mesh: web calls api over mTLS, and api fails one request in ten.
var mesh = &inventory.Mesh{Workloads: []inventory.Workload{
	{Kind: "deploy", Name: "web", Namespace: "shop", Identity: "spiffe://td/ns/shop/sa/web", Instances: []inventory.Instance{{Name: "web-1", Admin: "web-1:4191"}}},
	{Kind: "deploy", Name: "api", Namespace: "shop", Identity: "spiffe://td/ns/shop/sa/api", Service: "api:8080", Instances: []inventory.Instance{{Name: "api-1", Admin: "api-1:4191"}}},
}}

func fetch(_ context.Context, admin string, seconds int) (bool, *adminapi.Stats, error) {
	buckets := []uint64{0, 90, 10, 0}
	st := &adminapi.Stats{WindowSeconds: seconds, LatencyBuckets: []float64{1, 10, 100}, OpenConnections: map[string]int64{"inbound": 2, "outbound": 1}}
	switch admin {
	case "web-1:4191":
		st.Stats = []adminapi.WindowStat{{Direction: "outbound", Authority: "api:8080", Peer: "spiffe://td/ns/shop/sa/api", Requests: 100, Successes: 90, Latency: buckets}}
	case "api-1:4191":
		st.Stats = []adminapi.WindowStat{{Direction: "inbound", Authority: "api:8080", Peer: "spiffe://td/ns/shop/sa/web", Requests: 100, Successes: 90, Latency: buckets}}
	}
	return true, st, nil
}

func newServer(t *testing.T, m *inventory.Mesh) http.Handler {
	t.Helper()
	s := &Server{Fetch: fetch, Source: Source{Describe: "a test mesh",
		Mesh: func(context.Context) (*inventory.Mesh, error) { return m, nil },
		Checks: func(context.Context) ([]check.Check, error) {
			return []check.Check{
				{Category: "data-plane", Description: "proxies are ready", Run: func(context.Context) (check.Status, string) { return check.OK, "" }},
				{Category: "data-plane", Description: "certificates are valid", Hint: "restart the pod", Run: func(context.Context) (check.Status, string) { return check.Warn, "one expires in 1h" }},
			}, nil
		}}}
	return s.Handler()
}

func get(t *testing.T, h http.Handler, target string, host ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest("GET", target, nil)
	r.Host = "127.0.0.1:50750"
	if len(host) > 0 {
		r.Host = host[0]
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// The API answers exactly what the commands print with -o json.
func TestTheAPIIsTheCommandsJSON(t *testing.T) {
	h := newServer(t, mesh)
	ctx := context.Background()
	var want bytes.Buffer

	rows, err := stat.Collect(ctx, mesh, stat.Options{Window: 10 * time.Second}, fetch)
	if err != nil {
		t.Fatal(err)
	}
	stat.Render(&want, rows, "json", false)
	if got := get(t, h, "/api/stat"); got.Code != 200 || got.Body.String() != want.String() {
		t.Errorf("/api/stat: %d\n%s\nwant mesh stat -o json:\n%s", got.Code, got.Body, &want)
	}

	want.Reset()
	edges, err := stat.Edges(ctx, mesh, "deploy/web", 10, fetch)
	if err != nil {
		t.Fatal(err)
	}
	stat.RenderEdges(&want, edges, "json")
	if got := get(t, h, "/api/edges?resource=deploy/web"); got.Code != 200 || got.Body.String() != want.String() {
		t.Errorf("/api/edges: %d\n%s\nwant mesh edges -o json:\n%s", got.Code, got.Body, &want)
	}
	if len(edges) != 1 || edges[0].SuccessRate == nil || *edges[0].SuccessRate != 0.9 || !edges[0].MTLS {
		t.Errorf("the edge web -> api: %+v", edges)
	}

	want.Reset()
	routes, err := stat.Routes(ctx, mesh, stat.Options{Resource: "deploy/web", Window: 10 * time.Second}, fetch)
	if err != nil {
		t.Fatal(err)
	}
	stat.RenderRoutes(&want, routes, "json")
	if got := get(t, h, "/api/routes?resource=deploy/web"); got.Code != 200 || got.Body.String() != want.String() {
		t.Errorf("/api/routes: %d\n%s\nwant mesh routes -o json:\n%s", got.Code, got.Body, &want)
	}

	got := get(t, h, "/api/check")
	var res struct {
		Success bool           `json:"success"`
		Checks  []check.Result `json:"checks"`
	}
	if err := json.Unmarshal(got.Body.Bytes(), &res); err != nil || !res.Success || len(res.Checks) != 2 || res.Checks[1].Hint != "restart the pod" {
		t.Errorf("/api/check: %v %s", err, got.Body)
	}
}

func TestBadRequestsSayWhatIsWrong(t *testing.T) {
	h := newServer(t, mesh)
	for target, want := range map[string]string{
		"/api/stat?window=2h":                        "window \"2h\": want a duration from 1s to 60s",
		"/api/stat?resource=deploy/nope":             "nope",
		"/api/routes":                                "routes are a client's",
		"/api/tap":                                   "tap needs a workload",
		"/api/edges?resource=cm/x":                   "unknown kind",
		"/api/tap?resource=deploy/api&to=deploy/web": "deploy/web serves no traffic to tap",
	} {
		got := get(t, h, target)
		var e struct{ Error string }
		if got.Code != http.StatusBadRequest || json.Unmarshal(got.Body.Bytes(), &e) != nil || !strings.Contains(e.Error, want) {
			t.Errorf("%s: %d %s, want 400 saying %q", target, got.Code, got.Body, want)
		}
	}
}

// Only requests addressed to loopback are answered: a page on another
// site that rebinds its name to 127.0.0.1 sends its own name as the Host.
func TestOnlyLoopbackHostsAreAnswered(t *testing.T) {
	h := newServer(t, mesh)
	for host, want := range map[string]int{
		"127.0.0.1:50750":         200,
		"localhost:50750":         200,
		"[::1]:50750":             200,
		"dashboard.localhost":     200,
		"attacker.example":        403,
		"attacker.example:50750":  403,
		"127.0.0.1.attacker.test": 403,
		"10.0.0.5:50750":          403,
		"":                        403,
	} {
		if got := get(t, h, "/api/stat", host); got.Code != want {
			t.Errorf("Host %q: %d, want %d", host, got.Code, want)
		}
	}
	got := get(t, h, "/")
	if csp := got.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("the page's CSP: %q", csp)
	}
	if !strings.Contains(got.Body.String(), `<script src="app.js" defer>`) {
		t.Errorf("the page:\n%s", got.Body)
	}
}

func TestListenRefusesAddressesBeyondLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:8080", "10.1.2.3:80", ":8080", "nohost", "127.0.0.1:http"} {
		if ln, err := Listen(addr); err == nil {
			ln.Close()
			t.Errorf("Listen(%q) listened", addr)
		}
	}
	ln, err := Listen("")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
}

// The tap streams each event as mesh tap -o json writes it.
func TestTapStreamsTheEventsOfMeshTap(t *testing.T) {
	events := []adminapi.TapEvent{
		{Type: "request", ID: 1, Direction: "inbound", Method: "GET", Authority: "api:8080", Path: "/items/<script>"},
		{Type: "end", ID: 1, Direction: "inbound", Method: "GET", Authority: "api:8080", Path: "/items/<script>", Status: 200, DurationMS: 1.5},
	}
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/tap" || r.URL.Query().Get("method") != "GET" {
			http.Error(w, "unexpected "+r.URL.String(), 400)
			return
		}
		enc := json.NewEncoder(w)
		for _, e := range events {
			enc.Encode(e)
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer proxy.Close()
	m := &inventory.Mesh{Workloads: []inventory.Workload{{Kind: "deploy", Name: "api", Namespace: "shop",
		Instances: []inventory.Instance{{Name: "api-1", Admin: strings.TrimPrefix(proxy.URL, "http://")}}}}}
	srv := httptest.NewServer(newServer(t, m))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/api/tap?resource=deploy/api&method=GET", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %q: %s", resp.Status, ct, b)
	}
	sc := bufio.NewScanner(resp.Body)
	for i := 0; i < len(events); {
		if !sc.Scan() {
			t.Fatalf("the stream ended after %d events: %v", i, sc.Err())
		}
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var line bytes.Buffer
		json.NewEncoder(&line).Encode(tap.Event{TapEvent: events[i], Workload: "deploy/api", Instance: "api-1"})
		if data+"\n" != line.String() {
			t.Errorf("event %d: %s\nwant mesh tap -o json's line:\n%s", i, data, &line)
		}
		i++
	}
}

// The page needs nothing from outside the binary: everything it links is
// served here, and its script fetches only this server's API. Its weight
// is logged (go test -v -run Page ./dashboard).
func TestThePageNeedsNothingFromOutside(t *testing.T) {
	h := newServer(t, mesh)
	page := get(t, h, "/").Body.String()
	links := regexp.MustCompile(`(?:src|href)="([^"#]+)"`).FindAllStringSubmatch(page, -1)
	if len(links) < 2 {
		t.Fatalf("the page links %v", links)
	}
	total := len(page)
	for _, l := range links {
		if strings.Contains(l[1], "//") {
			t.Errorf("the page links %s, outside the binary", l[1])
			continue
		}
		got := get(t, h, "/"+l[1])
		if got.Code != 200 {
			t.Errorf("%s: %d", l[1], got.Code)
		}
		total += got.Body.Len()
	}
	js := get(t, h, "/app.js").Body.String()
	for _, u := range regexp.MustCompile(`https?://[^"' ]+`).FindAllString(js, -1) {
		if u != "http://www.w3.org/2000/svg" {
			t.Errorf("app.js names %s", u)
		}
	}
	t.Logf("the page weighs %d bytes uncompressed", total)
}
