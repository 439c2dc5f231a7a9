package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// accessLine is what the test reads of an access log line.
type accessLine struct {
	Time          time.Time `json:"time"`
	Direction     string    `json:"direction"`
	Method        string    `json:"method"`
	Authority     string    `json:"authority"`
	Path          string    `json:"path"`
	Protocol      string    `json:"protocol"`
	Status        int       `json:"status"`
	DurationMS    float64   `json:"durationMs"`
	ResponseBytes int64     `json:"responseBytes"`
	Client        string    `json:"client"`
	Upstream      string    `json:"upstream"`
	TLS           bool      `json:"tls"`
	ClientID      string    `json:"clientID"`
	ServerID      string    `json:"serverID"`
	Route         string    `json:"route"`
	TraceID       string    `json:"traceID"`
	UserAgent     string    `json:"userAgent"`
	Error         string    `json:"error"`
}

// accessLines are the access log lines a proxy wrote so far.
func (mp *meshProxy) accessLines() []accessLine {
	var out []accessLine
	for _, l := range strings.Split(mp.out.String(), "\n") {
		var a accessLine
		if strings.HasPrefix(l, "{") && strings.Contains(l, `"durationMs"`) && json.Unmarshal([]byte(l), &a) == nil {
			out = append(out, a)
		}
	}
	return out
}

// With --access-log json the proxy writes a line per request, each way,
// with the trace it belongs to and, when the proxy answered itself, why;
// without it, none.
func TestAccessLogWritesALinePerRequest(t *testing.T) {
	api := startBackend(t, "api")
	routes := "    routes:\n      - name: all\n        backends: [{service: api:80}]\n"
	disc := discoveryFile(service("web", 80, "", routes), service("api", 80, "", "", api.addr))
	mp := startProxy(t, proxyOpts{discovery: disc, args: []string{"--access-log", "json", "--inbound-forward", api.addr}})
	cl := newClient(mp.outbound)
	trace := "4bf92f3577b34da6a3ce929d0e0736aa"
	if resp, _, err := cl.get("web", "/items", "Traceparent", "00-"+trace+"-00f067aa0ba902b7-01", "User-Agent", "e2e"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET web/items: %v %v", resp, err)
	}
	if resp, _, err := cl.get("nope", "/", "B3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"); err != nil || resp.StatusCode != 503 {
		t.Fatalf("GET nope: %v %v", resp, err)
	}
	if resp, _, err := newClient(mp.inbound).get("api", "/in"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET through the inbound side: %v %v", resp, err)
	}
	var lines []accessLine
	waitFor(t, "three access log lines", func() bool { lines = mp.accessLines(); return len(lines) >= 3 })
	for _, l := range strings.Split(mp.out.String(), "\n") {
		if strings.Contains(l, `"path":"/items"`) {
			t.Logf("an access log line: %s", l)
		}
	}
	byPath := map[string]accessLine{}
	for _, l := range lines {
		byPath[l.Direction+" "+l.Path] = l
	}
	if l := byPath["outbound /items"]; l.Method != "GET" || l.Authority != "web" || l.Status != 200 || l.Upstream != api.addr ||
		l.Route != "all" || l.TraceID != trace || l.UserAgent != "e2e" || l.ResponseBytes == 0 || l.DurationMS <= 0 || l.Protocol != "HTTP/1.1" ||
		time.Since(l.Time) > time.Minute || l.Error != "" {
		t.Errorf("the outbound request's line: %+v", l)
	}
	if l := byPath["outbound /"]; l.Status != 503 || l.Authority != "nope" || !strings.Contains(l.Error, "nope") || l.TraceID != "80f198ee56343ba864fe8b2a57d3eff7" {
		t.Errorf("the line of a request the proxy answered itself: %+v", l)
	}
	if l := byPath["inbound /in"]; l.Status != 200 || l.Upstream == "" || l.Client == "" {
		t.Errorf("the inbound request's line: %+v", l)
	}

	quiet := startProxy(t, proxyOpts{discovery: disc})
	if resp, _, err := newClient(quiet.outbound).get("web", "/items"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET without an access log: %v %v", resp, err)
	}
	time.Sleep(500 * time.Millisecond) // past a flush
	if n := len(quiet.accessLines()); n != 0 {
		t.Errorf("a proxy without --access-log wrote %d access log lines", n)
	}
}

// Between two proxies with mTLS, each side's line names the identity the
// other proved; a request the server's policy refuses is logged there
// with why.
func TestAccessLogNamesTheIdentitiesMTLSProved(t *testing.T) {
	mi := startIdentity(t, "24h")
	app := startBackend(t, "app")
	server := startProxy(t, proxyOpts{discovery: appPolicy(t, app.addr, spiffe("client")),
		args: append(mi.proxyArgs(t, "server"), "--inbound-forward", app.addr, "--access-log", "json")})
	disc := discoveryFile(meshedService("web", 80, "", spiffe("server"), server.inbound))
	client := startProxy(t, proxyOpts{discovery: disc, args: append(mi.proxyArgs(t, "client"), "--access-log", "json")})
	other := startProxy(t, proxyOpts{discovery: disc, args: mi.proxyArgs(t, "other")})
	if resp, _, err := newClient(client.outbound).get("web", "/named"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the named caller: %v %v", resp, err)
	}
	if resp, _, err := newClient(other.outbound).get("web", "/other"); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("another caller: %v %v", resp, err)
	}
	find := func(mp *meshProxy, dir, path string) (found accessLine) {
		t.Helper()
		waitFor(t, "the line of "+dir+" "+path, func() bool {
			for _, l := range mp.accessLines() {
				if l.Direction == dir && l.Path == path {
					found = l
					return true
				}
			}
			return false
		})
		return found
	}
	if w := find(client, "outbound", "/named"); !w.TLS || w.ServerID != spiffe("server") || w.Status != 200 {
		t.Errorf("the client's line: %+v", w)
	}
	if w := find(server, "inbound", "/named"); !w.TLS || w.ClientID != spiffe("client") || w.Status != 200 {
		t.Errorf("the server's line: %+v", w)
	}
	if w := find(server, "inbound", "/other"); w.ClientID != spiffe("other") || w.Status != 403 || !strings.Contains(w.Error, "no authorization admits the client") {
		t.Errorf("the server's line of a refused request: %+v", w)
	}
}
