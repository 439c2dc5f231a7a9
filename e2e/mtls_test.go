package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// meshPair is a client proxy and a server proxy in front of app, with
// traffic between them passing through a relay the test can read.
type meshPair struct {
	client, server *meshProxy
	relay          *relay
}

func startMeshPair(t *testing.T, mi *meshIdentity, app string, expectedIdentity string, extraClient ...string) *meshPair {
	t.Helper()
	server := startProxy(t, proxyOpts{discovery: "services: []\n", args: append(mi.proxyArgs(t, "server"), "--inbound-forward", app)})
	r := startRelay(t, server.inbound)
	client := startProxy(t, proxyOpts{
		discovery: discoveryFile(meshedService("web", 80, "", expectedIdentity, r.addr)),
		args:      append(mi.proxyArgs(t, "client"), extraClient...),
	})
	return &meshPair{client: client, server: server, relay: r}
}

func TestMTLSBetweenProxiesEncryptsAndReportsPeerIdentities(t *testing.T) {
	mi := startIdentity(t, "24h")
	app := startBackend(t, "app")
	var gotBody, gotTrailer, gotQuery string
	var gotProto int
	var gotChunked bool
	app.handler = func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		gotBody, gotTrailer, gotProto, gotQuery = string(b), r.Trailer.Get("X-Checksum"), r.ProtoMajor, r.URL.RawQuery
		gotChunked = len(r.TransferEncoding) > 0 && r.TransferEncoding[0] == "chunked"
		w.Header().Set("X-App", "yes")
		w.Header()["Content-Type"] = nil // the app sends none; neither proxy may add one
		fmt.Fprintf(w, "%s %s", r.Method, r.URL.Path)
	}
	mp := startMeshPair(t, mi, app.addr, spiffe("server"))

	// An HTTP/1 POST with a chunked body and a trailer crosses the mesh as
	// HTTP/2 and must reach the app as the HTTP/1 request it was.
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("part one, "))
		pw.Write([]byte("part two"))
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", "http://"+mp.client.outbound+"/secret-path-4711?a=1;b=2&c", pr)
	req.Host = "web"
	req.Trailer = http.Header{"X-Checksum": {"abc123"}}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "POST /secret-path-4711" || resp.Header.Get("X-App") != "yes" {
		t.Fatalf("through the mesh: %s %q (mesh-error %q)", resp.Status, body, resp.Header.Get("mesh-error"))
	}
	if ct, ok := resp.Header["Content-Type"]; ok || gotQuery != "a=1;b=2&c" {
		t.Errorf("through the mesh the response gained Content-Type %q (present %v) and the app saw query %q; want neither changed", ct, ok, gotQuery)
	}
	if gotBody != "part one, part two" || gotTrailer != "abc123" || gotProto != 1 || !gotChunked {
		t.Errorf("app saw body %q trailer %q HTTP/%d chunked=%v; want the client's HTTP/1.1 chunked request with its trailer", gotBody, gotTrailer, gotProto, gotChunked)
	}

	wire := mp.relay.mu.String()
	if len(wire) == 0 || wire[0] != 0x16 {
		t.Errorf("traffic between proxies does not start with a TLS handshake: % x", wire[:min(8, len(wire))])
	}
	if strings.Contains(wire, "secret-path-4711") || strings.Contains(wire, "part one") {
		t.Error("request text visible between the proxies")
	}
	if m := mp.client.metrics(t); !has(m, "response_total", "direction", "outbound", "server_id", spiffe("server"), "tls", "true", "classification", "success") {
		t.Errorf("client proxy does not report the server's identity:\n%s", grep(m, "response_total"))
	}
	if m := mp.server.metrics(t); !has(m, "request_total", "direction", "inbound", "client_id", spiffe("client"), "tls", "true") {
		t.Errorf("server proxy does not report the client's identity:\n%s", grep(m, "request_total"))
	}
	if m := mp.client.metrics(t); !has(m, "identity_cert_expiration_timestamp_seconds") {
		t.Error("certificate expiry not exposed")
	}
}

func TestServerProxyWithWrongIdentityIsRefused(t *testing.T) {
	mi := startIdentity(t, "24h")
	app := startBackend(t, "app")
	mp := startMeshPair(t, mi, app.addr, spiffe("payments"))
	resp, _, err := newClient(mp.client.outbound).get("web", "/")
	if err != nil {
		t.Fatal(err)
	}
	want := "presented identity " + spiffe("server") + ", expected " + spiffe("payments")
	if resp.StatusCode != 502 || !strings.Contains(resp.Header.Get("mesh-error"), want) {
		t.Errorf("got %d with mesh-error %q; want 502 saying %q", resp.StatusCode, resp.Header.Get("mesh-error"), want)
	}
	if app.hits.Load() != 0 {
		t.Error("the request reached the app behind the wrong identity")
	}
	if !has(mp.client.metrics(t), "http_errors_total", "error", "identity_mismatch") {
		t.Error("identity mismatch not counted")
	}
}

func TestShortLivedCertificatesRenewWhileTrafficFlows(t *testing.T) {
	mi := startIdentity(t, "3s")
	app := startBackend(t, "app")
	mp := startMeshPair(t, mi, app.addr, spiffe("server"))
	expiry := func(p *meshProxy) float64 {
		v, _ := metricSum(p.metrics(t), "identity_cert_expiration_timestamp_seconds")
		return v
	}
	first := expiry(mp.server)
	l := startLoad(t, newClient(mp.client.outbound), "web", 4, 50000, 30*time.Second)
	time.Sleep(7 * time.Second) // more than two lifetimes
	// A client that connects now handshakes with the renewed certificates.
	late := startProxy(t, proxyOpts{discovery: discoveryFile(meshedService("web", 80, "", spiffe("server"), mp.server.inbound)), args: mi.proxyArgs(t, "late")})
	if resp, _, err := newClient(late.outbound).get("web", "/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("new connection after renewals: %v %v", resp, err)
	}
	l.finish(t)
	if got := expiry(mp.server); got < first+4 {
		t.Errorf("server certificate expiry moved from %v to %v; want at least two renewals", first, got)
	}
	t.Logf("%d requests while certificates were renewed, none failed", l.ok.Load())
}

// HTTP/1.1 crosses the mesh hop as HTTP/1.1 (see proxy/mtls.go), so
// concurrent requests need a connection each, as they did from the app;
// what matters is that the proxies keep them: a second wave of requests,
// and requests one after another, open none.
func TestHTTP1RequestsBetweenProxiesReuseTheirConnections(t *testing.T) {
	mi := startIdentity(t, "24h")
	app := startBackend(t, "app")
	app.delay.Store(int64(200 * time.Millisecond))
	mp := startMeshPair(t, mi, app.addr, spiffe("server"))
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 100}}
	get := func() error {
		req, _ := http.NewRequest("GET", "http://"+mp.client.outbound+"/", nil)
		req.Host = "web"
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return errors.New(resp.Status)
		}
		return nil
	}
	wave := func() {
		var wg sync.WaitGroup
		failed := make(chan error, 50)
		for range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := get(); err != nil {
					failed <- err
				}
			}()
		}
		wg.Wait()
		close(failed)
		for err := range failed {
			t.Error(err)
		}
	}
	wave()
	first := len(mp.relay.conns)
	if first == 0 || first > 50 {
		t.Fatalf("50 concurrent requests used %d connections between the proxies; want at most one each", first)
	}
	wave()
	for range 20 {
		if err := get(); err != nil {
			t.Fatal(err)
		}
	}
	// The ALPN the client proxy offers is in the clear in each ClientHello:
	// a protocol list of 14 bytes, http/1.1 and the mesh marker. (A pattern
	// as short as "\x02h2" turns up by chance in the encrypted bytes.)
	wire := mp.relay.mu.String()
	if !strings.Contains(wire, "\x00\x0e\x08http/1.1\x04mesh") || strings.Contains(wire, "\x02h2\x04mesh") || strings.Contains(wire, "\x02h2\x08http/1.1") {
		t.Error("the client proxy did not offer HTTP/1.1 (and only it) for HTTP/1.1 requests")
	}
	if n := len(mp.relay.conns); n != first {
		t.Errorf("a second wave of 50 and 20 requests in a row opened %d more connections between the proxies; want them reused", n-first)
	}
	t.Logf("100 concurrent requests in two waves and 20 in a row used %d connections between the proxies", first)
}

func TestUpgradesAndOpaqueTCPCrossTheMeshOnTheirOwnConnections(t *testing.T) {
	mi := startIdentity(t, "24h")
	ws := startBackend(t, "ws")
	ws.handler = wsEcho("")
	mp := startMeshPair(t, mi, ws.addr, spiffe("server"))
	c, _, err := websocket.DefaultDialer.Dial("ws://"+mp.client.outbound+"/", http.Header{"Host": {"web"}})
	if err != nil {
		t.Fatalf("websocket across mTLS: %v", err)
	}
	c.WriteMessage(websocket.TextMessage, []byte("over mtls"))
	if _, got, err := c.ReadMessage(); err != nil || string(got) != "over mtls" {
		t.Fatalf("echo %q %v", got, err)
	}
	c.Close()

	echo := startTCPEcho(t)
	server := startProxy(t, proxyOpts{discovery: "services: []\n", args: append(mi.proxyArgs(t, "db"), "--inbound-forward", echo)})
	r := startRelay(t, server.inbound)
	local := freeAddr(t)
	client := startProxy(t, proxyOpts{
		discovery: discoveryFile(meshedService("db", 5432, "    opaque: true\n", spiffe("db"), r.addr)),
		args:      append(mi.proxyArgs(t, "client"), "--outbound-tcp", local+"=db:5432"),
	})
	conn, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("SELECT secret"))
	conn.(*net.TCPConn).CloseWrite()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, _ := io.ReadAll(conn)
	if string(got) != "echo:SELECT secret" {
		t.Fatalf("opaque TCP across mTLS: %q", got)
	}
	if strings.Contains(r.mu.String(), "SELECT secret") {
		t.Error("opaque bytes visible between the proxies")
	}
	waitFor(t, "TCP metrics with identities", func() bool {
		return has(client.metrics(t), "tcp_close_total", "server_id", spiffe("db"), "tls", "true") &&
			has(server.metrics(t), "tcp_close_total", "client_id", spiffe("client"), "tls", "true")
	})
}

func TestTrustAnchorRotationKeepsOldAndNewChainsTalking(t *testing.T) {
	old := startIdentity(t, "24h")
	next := startIdentity(t, "24h")
	// Both proxies trust both anchors, as during a rotation.
	bundle := t.TempDir() + "/bundle.pem"
	writeFile(t, bundle, readFile(t, old.anchors)+readFile(t, next.anchors))
	old.anchors, next.anchors = bundle, bundle

	app := startBackend(t, "app")
	// The server's certificate comes from the old chain, the client's from the new.
	server := startProxy(t, proxyOpts{discovery: "services: []\n", args: append(old.proxyArgs(t, "server"), "--inbound-forward", app.addr)})
	client := startProxy(t, proxyOpts{discovery: discoveryFile(meshedService("web", 80, "", spiffe("server"), server.inbound)), args: next.proxyArgs(t, "client")})
	if resp, _, err := newClient(client.outbound).get("web", "/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("new-chain client to old-chain server: %v %v", resp, err)
	}
	// And the other way round.
	app2 := startBackend(t, "app2")
	server2 := startProxy(t, proxyOpts{discovery: "services: []\n", args: append(next.proxyArgs(t, "server"), "--inbound-forward", app2.addr)})
	client2 := startProxy(t, proxyOpts{discovery: discoveryFile(meshedService("web", 80, "", spiffe("server"), server2.inbound)), args: old.proxyArgs(t, "client")})
	if resp, _, err := newClient(client2.outbound).get("web", "/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("old-chain client to new-chain server: %v %v", resp, err)
	}
	// A proxy that trusts only the new anchor refuses the old chain.
	only := t.TempDir() + "/only-new.pem"
	writeFile(t, only, readFile(t, next.dir+"/trust-anchors.pem"))
	strict := *next
	strict.anchors = only
	client3 := startProxy(t, proxyOpts{discovery: discoveryFile(meshedService("web", 80, "", spiffe("server"), server.inbound)), args: strict.proxyArgs(t, "client")})
	if resp, _, err := newClient(client3.outbound).get("web", "/"); err != nil || resp.StatusCode != 502 {
		t.Fatalf("client trusting only the new anchor reached an old-chain server: %v %v", resp, err)
	}
}

// TestAnOpaquePortOnBothSidesStillCarriesMTLS is a server-speaks-first
// database whose port both proxies treat as opaque (as a namespace's
// config.mesh.io/opaque-ports gives every pod): the client's proxy tunnels
// the connection in mTLS, and the server's proxy, which skips detection on
// the port, still recognizes and ends the mesh's TLS before the app.
func TestAnOpaquePortOnBothSidesStillCarriesMTLS(t *testing.T) {
	mi := startIdentity(t, "24h")
	db := startGreeter(t, "220 db ready\r\n")
	_, port, _ := net.SplitHostPort(db)
	server := startProxy(t, proxyOpts{discovery: "services: []\n",
		args: append(mi.proxyArgs(t, "db"), "--inbound-forward", db, "--opaque-ports", port)})
	local := freeAddr(t)
	client := startProxy(t, proxyOpts{
		discovery: discoveryFile(meshedService("db", 3306, "    opaque: true\n", spiffe("db"), server.inbound)),
		args:      append(mi.proxyArgs(t, "client"), "--outbound-tcp", local+"=db:3306"),
	})
	conn, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || line != "220 db ready\r\n" {
		t.Fatalf("greeting through both proxies: %q, %v", line, err)
	}
	conn.Close()
	waitFor(t, "TCP metrics with identities", func() bool {
		return has(client.metrics(t), "tcp_close_total", "server_id", spiffe("db"), "tls", "true") &&
			has(server.metrics(t), "tcp_close_total", "client_id", spiffe("client"), "tls", "true")
	})
}
