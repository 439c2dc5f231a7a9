package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// appPolicy is a discovery file's policy for the server proxy: a Server on
// the app's port that admits the identities given.
func appPolicy(t *testing.T, appAddr string, identities ...string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(appAddr)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`services: []
policies:
  - identity: %s
    servers:
      - name: app-http
        port: %s
        authorizations:
          - name: from-named-callers
            identities: [%s]
`, spiffe("server"), port, strings.Join(identities, ", "))
}

// plainGet sends a request straight to a proxy's inbound listener, as a
// client without a proxy (and so without a mesh identity) would.
func plainGet(t *testing.T, inbound string) *http.Response {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + inbound + "/plain")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func TestAServerAdmitsOnlyTheCallersItsPolicyNames(t *testing.T) {
	mi := startIdentity(t, "24h")
	app := startBackend(t, "app")
	server := startProxy(t, proxyOpts{discovery: appPolicy(t, app.addr, spiffe("client")),
		args: append(mi.proxyArgs(t, "server"), "--inbound-forward", app.addr)})
	disc := discoveryFile(meshedService("web", 80, "", spiffe("server"), server.inbound))
	client := startProxy(t, proxyOpts{discovery: disc, args: mi.proxyArgs(t, "client")})
	other := startProxy(t, proxyOpts{discovery: disc, args: mi.proxyArgs(t, "other")})

	if resp, body, err := newClient(client.outbound).get("web", "/named"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the named caller: %v %v %s", resp, err, body)
	}
	resp, body, err := newClient(other.outbound).get("web", "/other")
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("another caller: %v %v; want 403", resp, err)
	}
	_, port, _ := net.SplitHostPort(app.addr)
	want := "refused by server app-http on port " + port + ": no authorization admits the client (" + spiffe("other") + " from 127.0.0.1)"
	if got := resp.Header.Get("Mesh-Error"); got != want {
		t.Errorf("mesh-error %q\nwant        %q", got, want)
	}
	if !strings.Contains(body, want) {
		t.Errorf("body %q does not say why", body)
	}
	if r := plainGet(t, server.inbound); r.StatusCode != http.StatusForbidden || !strings.Contains(r.Header.Get("Mesh-Error"), "a client without a mesh identity from 127.0.0.1") {
		t.Errorf("a client without a proxy: %s %q", r.Status, r.Header.Get("Mesh-Error"))
	}
	// A refused request shows in tap, with its status and why. The tap's
	// headers arrive once it is subscribed.
	tap, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + server.admin + "/tap?max=2&path=/tapped")
	if err != nil {
		t.Fatal(err)
	}
	newClient(other.outbound).get("web", "/tapped")
	events, _ := io.ReadAll(tap.Body)
	tap.Body.Close()
	if !strings.Contains(string(events), `"type":"end"`) || !strings.Contains(string(events), `"status":403`) || !strings.Contains(string(events), "no authorization admits the client") {
		t.Errorf("tap of a refused request:\n%s", events)
	}
	if got := app.lastRequest(); got == nil || got.URL.Path != "/named" {
		t.Errorf("the app saw %v; want only the named caller's request", got)
	}
	m := server.metrics(t)
	for _, series := range []string{
		`inbound_http_authz_allow_total{authorization_policy="from-named-callers",server="app-http"} 1`,
		`inbound_http_authz_deny_total{audit="false",reason="no authorization admits the client",server="app-http"} 3`,
		`http_errors_total{direction="inbound",error="unauthorized"} 3`,
	} {
		if !strings.Contains(m, series) {
			t.Errorf("the server proxy's metrics lack %s", series)
		}
	}

	// The policy changes live: the other caller is named, and gets in.
	server.writeDiscovery(t, appPolicy(t, app.addr, spiffe("client"), spiffe("other")), 0)
	if resp, _, err := newClient(other.outbound).get("web", "/other-now"); err != nil || resp.StatusCode != 200 {
		t.Errorf("after the policy named it, the other caller got %v %v", resp, err)
	}
	// A policy that does not parse is refused; the last one stays.
	server.writeDiscovery(t, strings.Replace(appPolicy(t, app.addr, spiffe("client")), "port:", "prot:", 1), -1)
	time.Sleep(500 * time.Millisecond)
	if resp, _, err := newClient(other.outbound).get("web", "/still"); err != nil || resp.StatusCode != 200 {
		t.Errorf("after a bad edit, the last good policy should stay: %v %v", resp, err)
	}
}

func TestDefaultInboundPolicies(t *testing.T) {
	mi := startIdentity(t, "24h")
	app := startBackend(t, "app")
	for _, c := range []struct {
		args          []string
		meshed, plain int
	}{
		{[]string{"--default-inbound-policy", "all-authenticated"}, 200, 403},
		// Loopback is not one of the private ranges cluster-authenticated
		// admits by default; named as the cluster's network, it is.
		{[]string{"--default-inbound-policy", "cluster-authenticated"}, 200, 403},
		{[]string{"--default-inbound-policy", "cluster-authenticated", "--cluster-networks", "127.0.0.0/8"}, 200, 200},
		{[]string{"--default-inbound-policy", "deny"}, 403, 403},
		{[]string{"--default-inbound-policy", "audit"}, 200, 200},
	} {
		name := strings.Join(c.args[1:], " ")
		server := startProxy(t, proxyOpts{discovery: "services: []\n",
			args: append(append(mi.proxyArgs(t, "server"), "--inbound-forward", app.addr), c.args...)})
		client := startProxy(t, proxyOpts{discovery: discoveryFile(meshedService("web", 80, "", spiffe("server"), server.inbound)),
			args: mi.proxyArgs(t, "client")})
		resp, _, err := newClient(client.outbound).get("web", "/")
		if err != nil || resp.StatusCode != c.meshed {
			t.Errorf("%s: a meshed caller got %v %v; want %d", name, resp, err, c.meshed)
		}
		if r := plainGet(t, server.inbound); r.StatusCode != c.plain {
			t.Errorf("%s: a caller without a proxy got %s; want %d (%s)", name, r.Status, c.plain, r.Header.Get("Mesh-Error"))
		}
		client.stop(15, 5*time.Second)
		server.stop(15, 5*time.Second)
	}
}

// Audit mode lets through what a Server would refuse, and counts it.
func TestAuditModeCountsWhatItWouldRefuse(t *testing.T) {
	mi := startIdentity(t, "24h")
	app := startBackend(t, "app")
	policy := strings.Replace(appPolicy(t, app.addr, spiffe("client")), "    servers:", "    default: audit\n    servers:", 1)
	server := startProxy(t, proxyOpts{discovery: policy, args: append(mi.proxyArgs(t, "server"), "--inbound-forward", app.addr)})
	if r := plainGet(t, server.inbound); r.StatusCode != 200 {
		t.Errorf("audit mode refused a request: %s", r.Status)
	}
	if m := server.metrics(t); !strings.Contains(m, `inbound_http_authz_deny_total{audit="true",reason="no authorization admits the client",server="app-http"} 1`) {
		t.Errorf("audit mode did not count what it let through")
	}
}

func TestARefusedGRPCCallGetsPermissionDenied(t *testing.T) {
	mi := startIdentity(t, "24h")
	backend := startGRPCBackend(t, "grpc")
	server := startProxy(t, proxyOpts{discovery: "services: []\n",
		args: append(mi.proxyArgs(t, "server"), "--inbound-forward", backend, "--default-inbound-policy", "deny")})
	client := startProxy(t, proxyOpts{discovery: discoveryFile(meshedService("greeter", 50051, "", spiffe("server"), server.inbound)),
		args: mi.proxyArgs(t, "client")})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := dialGRPC(t, client.outbound, "greeter:50051").UnaryCall(ctx, &testpb.SimpleRequest{})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "refused by the default policy deny") {
		t.Errorf("a call the policy refuses: %v; want PERMISSION_DENIED saying why", err)
	}
}

func TestARefusedOpaqueConnectionIsClosed(t *testing.T) {
	echo := serveTCP(t, func(c net.Conn) { io.Copy(c, c) })
	server := startProxy(t, proxyOpts{discovery: "services: []\n",
		args: []string{"--inbound-forward", echo, "--default-inbound-policy", "all-authenticated", "--detect-timeout", "200ms"}})
	c, err := net.DialTimeout("tcp", server.inbound, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// Not HTTP: opaque TCP, from a client without an identity.
	fmt.Fprintf(c, "\x00\x01hello\n")
	if line, err := bufio.NewReader(c).ReadString('\n'); err == nil {
		t.Errorf("a refused connection was echoed %q", line)
	}
	if m := server.metrics(t); !strings.Contains(m, `inbound_tcp_authz_deny_total{audit="false",reason="the client proved no mesh identity",server=""} 1`) {
		t.Errorf("the refusal was not counted")
	}
}

// From the pod network: a Server on the app's port admits the pod
// network's CIDR but not one address in it, which is the client's; once
// the exception goes, the same client gets in, with no restart. The
// proxy runs as injected (mesh init's rules, UID 2102).
func TestANetworkRuleSeesTheClientsPodNetworkAddress(t *testing.T) {
	needNetns(t, "curl")
	a, b, subnet := twoPods(t, 'z')
	pod, client := subnet+".2", subnet+".1"
	initPod(t, b, "--inbound-port", "4143", "--outbound-port", "4140", "--proxy-uid", "2102", "--skip-inbound-ports", "4191")
	startHello(t, b, "0.0.0.0:8080", "app")
	dir := podDir(t)
	disc := filepath.Join(dir, "pod.yaml")
	policy := func(except string) string {
		return fmt.Sprintf(`services: []
policies:
  - servers:
      - name: app-http
        port: 8080
        authorizations:
          - name: pod-network
            networks: [{cidr: %s.0/24, except: [%s]}]
`, subnet, except)
	}
	writeFile(t, disc, policy(client+"/32"))
	startPodProxy(t, b, "", "--discovery-file", disc)
	out, err := a.in(t, "curl", "-sS", "--max-time", "10", "-D-", "http://"+pod+":8080/")
	if !strings.Contains(out, "403 Forbidden") || !strings.Contains(out, "refused by server app-http on port 8080: no authorization admits the client (a client without a mesh identity from "+client+")") {
		t.Errorf("the excepted address got in, or was not told why (%v):\n%s", err, out)
	}
	tmp := disc + ".tmp"
	writeFile(t, tmp, policy("192.0.2.1/32"))
	if err := os.Rename(tmp, disc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new policy", func() bool {
		out, err := a.in(t, "curl", "-sS", "--max-time", "10", "http://"+pod+":8080/ok")
		return err == nil && out == "app answered GET /ok\n"
	})
}

// Under deny the kubelet's probes still reach the app: the paths inject
// read from the pod's probes, by GET or HEAD, and nothing else.
func TestProbesGetThroughADenyPolicy(t *testing.T) {
	app := startBackend(t, "app")
	_, port, _ := net.SplitHostPort(app.addr)
	server := startProxy(t, proxyOpts{discovery: "services: []\n",
		args: []string{"--inbound-forward", app.addr, "--default-inbound-policy", "deny", "--inbound-probes", port + ":/ready," + port + ":/live"}})
	hc := &http.Client{Timeout: 5 * time.Second}
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/ready", 200}, {"HEAD", "/live", 200}, {"GET", "/ready/more", 403}, {"POST", "/ready", 403}, {"GET", "/", 403},
	} {
		req, _ := http.NewRequest(c.method, "http://"+server.inbound+c.path, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s under deny: %s; want %d", c.method, c.path, resp.Status, c.want)
		}
	}
	if m := server.metrics(t); !strings.Contains(m, `inbound_http_authz_allow_total{authorization_policy="probe",server=""} 2`) {
		t.Errorf("the probes let through were not counted")
	}
}

// TestAPolicyChangeAppliesUnderLoad takes a caller's authorization away
// while it sends requests: every request is answered 200 or 403, none
// fails otherwise, and each request sent after the first refusal came
// back is refused, from the same proxy process.
func TestAPolicyChangeAppliesUnderLoad(t *testing.T) {
	mi := startIdentity(t, "24h")
	app := startBackend(t, "app")
	server := startProxy(t, proxyOpts{discovery: appPolicy(t, app.addr, spiffe("client")),
		args: append(mi.proxyArgs(t, "server"), "--inbound-forward", app.addr)})
	client := startProxy(t, proxyOpts{discovery: discoveryFile(meshedService("web", 80, "", spiffe("server"), server.inbound)), args: mi.proxyArgs(t, "client")})
	pid := server.cmd.Process.Pid

	type outcome struct {
		sent, answered time.Time
		status         int
		err            error
	}
	// The load ends a second after the first refusal; the count only
	// bounds it, and is far more than a fast machine sends in the second
	// before the change.
	const workers, perWorker = 4, 50_000
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	results := make([][]outcome, workers)
	var firstRefusal atomic.Int64 // unix nanos of the first 403 answered
	var changedAt time.Time
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient(client.outbound)
			for range perWorker {
				if ctx.Err() != nil {
					return
				}
				o := outcome{sent: time.Now()}
				resp, _, err := c.get("web", "/load")
				o.answered, o.err = time.Now(), err
				if err == nil {
					o.status = resp.StatusCode
				}
				results[w] = append(results[w], o)
				if o.status == http.StatusForbidden {
					firstRefusal.CompareAndSwap(0, o.answered.UnixNano())
				}
				// Enough refusals after the change: stop.
				if f := firstRefusal.Load(); f != 0 && time.Since(time.Unix(0, f)) > time.Second {
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()
	time.Sleep(time.Second)
	changedAt = time.Now()
	server.writeDiscovery(t, appPolicy(t, app.addr, spiffe("other")), -1)
	<-done

	var ok, refused int
	first := time.Unix(0, firstRefusal.Load())
	for _, rs := range results {
		for _, o := range rs {
			switch {
			case o.err != nil || (o.status != 200 && o.status != http.StatusForbidden):
				t.Errorf("a request sent at %s failed otherwise: %d %v", o.sent.Format("15:04:05.000"), o.status, o.err)
			case o.status == 200 && firstRefusal.Load() != 0 && o.sent.After(first):
				t.Errorf("a request sent at %s, after the first refusal (%s), was admitted", o.sent.Format("15:04:05.000"), first.Format("15:04:05.000"))
			case o.status == 200:
				ok++
			default:
				refused++
			}
		}
	}
	if ok == 0 || refused == 0 {
		t.Fatalf("%d admitted and %d refused: the load did not span the change", ok, refused)
	}
	t.Logf("%d requests admitted, %d refused; the first refusal came %s after the file was written", ok, refused, first.Sub(changedAt).Round(time.Millisecond))
	select {
	case <-server.exited:
		t.Errorf("the server proxy (pid %d) exited", pid)
	default:
	}
}

// TestAServerThatSaysOpaqueSkipsDetection: a Server declaring its port
// opaque does what --opaque-ports does for that port, and is enforced on
// it: a server-speaks-first app greets an admitted client at once (the
// detect timeout is far longer than the test's patience), and a client
// the policy does not admit is closed.
func TestAServerThatSaysOpaqueSkipsDetection(t *testing.T) {
	app := startGreeter(t, "220 db ready\r\n")
	_, port, _ := net.SplitHostPort(app)
	policy := func(cidr string) string {
		return fmt.Sprintf(`services: []
policies:
  - servers:
      - name: db
        port: %s
        protocol: opaque
        authorizations:
          - name: local
            networks: [{cidr: %s}]
`, port, cidr)
	}
	mp := startProxy(t, proxyOpts{discovery: policy("127.0.0.0/8"), args: []string{"--inbound-forward", app, "--detect-timeout", "30s"}})
	greeting := func() (string, error) {
		c, err := net.Dial("tcp", mp.inbound)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		return bufio.NewReader(c).ReadString('\n')
	}
	if line, err := greeting(); err != nil || line != "220 db ready\r\n" {
		t.Fatalf("greeting %q, %v", line, err)
	}
	mp.writeDiscovery(t, policy("192.0.2.0/24"), -1)
	waitFor(t, "the new policy to close the client", func() bool {
		line, err := greeting()
		return line == "" && err != nil
	})
	if m := mp.metrics(t); !strings.Contains(m, `inbound_tcp_authz_deny_total{audit="false",reason="no authorization admits the client",server="db"}`) {
		t.Errorf("the refusal is not counted:\n%s", m)
	}
}
