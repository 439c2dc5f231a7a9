package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests attack a pod set up exactly as injected (its namespace
// programmed by `mesh init`, the proxy as UID 2102) from a second network
// namespace, as a client on the pod network would.

// podDir is a directory the proxy, running as UID 2102, can read.
func podDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mesh-pod-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	return dir
}

// helloBin builds the example app once per test binary.
var helloBin = sync.OnceValues(func() (string, error) {
	hello := filepath.Join(filepath.Dir(meshBin), "hello")
	if out, err := exec.Command("go", "build", "-o", hello, "github.com/meshproj/mesh/examples/hello").CombinedOutput(); err != nil {
		return "", fmt.Errorf("building hello: %v\n%s", err, out)
	}
	return hello, nil
})

func startHello(t *testing.T, n netns, addr, name string) {
	t.Helper()
	hello, err := helloBin()
	if err != nil {
		t.Fatal(err)
	}
	startCmd(t, "ip", n.cmd(hello, "-addr", addr, "-name", name)...)
}

// startPodProxy runs a proxy in n as UID 2102, as the injected sidecar
// runs; in the memory cgroup cg, when given.
func startPodProxy(t *testing.T, n netns, cg string, args ...string) *process {
	t.Helper()
	proxy := append([]string{"setpriv", "--reuid=2102", "--regid=2102", "--clear-groups",
		meshBin, "proxy", "--log-level", "debug", "--inbound-addr", "0.0.0.0:4143", "--outbound-addr", "127.0.0.1:4140",
		"--admin-addr", "0.0.0.0:4191"}, args...)
	var p *process
	if cg == "" {
		p = startCmd(t, "ip", n.cmd(proxy...)...)
	} else {
		// The shell joins the cgroup and becomes nsenter, setpriv, then the
		// proxy. (Not ip netns exec: it remounts /sys, hiding the cgroup
		// from the proxy, which a pod's container does not.)
		p = startCmd(t, "sh", append([]string{"-c", `echo $$ > "$0/cgroup.procs" && ns=$1 && shift && exec nsenter --net=/run/netns/"$ns" "$@"`, cg, n.name}, proxy...)...)
	}
	waitFor(t, "the proxy in "+n.name, func() bool {
		out, err := n.in(t, "curl", "-sf", "http://127.0.0.1:4191/ready")
		return err == nil && strings.HasPrefix(out, "ready")
	})
	return p
}

func podMetrics(t *testing.T, n netns) string {
	t.Helper()
	out, err := n.in(t, "curl", "-sf", "http://127.0.0.1:4191/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", n.name, err)
	}
	return out
}

// TestPodNetworkCannotBorrowTheProxysOwnListeners connects from the pod
// network to the pod's address at the proxy's own ports. Redirected to the
// inbound listener, such a connection would be forwarded to the proxy's
// outbound side (and into the mesh with the pod's identity) or to an
// outbound TCP port; it must be closed before anything is read from it,
// whether it speaks HTTP, opaque TCP or mesh TLS.
func TestPodNetworkCannotBorrowTheProxysOwnListeners(t *testing.T) {
	needNetns(t, "curl")
	a, b, subnet := twoPods(t, 'b')
	pod := subnet + ".2"
	initPod(t, b, "--inbound-port", "4143", "--outbound-port", "4140", "--proxy-uid", "2102", "--skip-inbound-ports", "4191")

	// One trust domain; an identity service in each namespace serves it.
	dir := podDir(t)
	idDir := filepath.Join(dir, "identity")
	runMesh(t, "identity", "init", "--dir", idDir)
	filepath.Walk(idDir, func(p string, _ os.FileInfo, _ error) error { return os.Chmod(p, 0o755) })
	idArgs := func(n netns, sa string) []string {
		startCmd(t, "ip", n.cmd(meshBin, "identity", "serve", "--dir", idDir, "--addr", "127.0.0.1:4990", "--cert-lifetime", "24h")...)
		token := filepath.Join(dir, sa+".token")
		writeFile(t, token, runMesh(t, "identity", "token", "--dir", idDir, "--namespace", "default", "--service-account", sa))
		return []string{"--identity", spiffe(sa), "--identity-addr", "127.0.0.1:4990",
			"--identity-trust-anchors", filepath.Join(idDir, "trust-anchors.pem"), "--identity-token-file", token}
	}

	// The pod: an app on 8080, a database the app reaches through an
	// outbound TCP port, and the proxy with mTLS.
	startHello(t, b, "0.0.0.0:8080", "app")
	startHello(t, b, "127.0.0.1:5433", "database")
	podDisc := filepath.Join(dir, "pod.yaml")
	writeFile(t, podDisc, "services:\n  - name: db\n    port: 5432\n    endpoints:\n      - address: 127.0.0.1:5433\n")
	startPodProxy(t, b, "", append(idArgs(b, "server"), "--discovery-file", podDisc, "--outbound-tcp", "127.0.0.1:15432=db:5432")...)

	// What the pod network sees. First, the app answers through the proxy.
	if out, err := a.in(t, "curl", "-sS", "--max-time", "10", "http://"+pod+":8080/ok"); err != nil || out != "app answered GET /ok\n" {
		t.Fatalf("a client on the pod network could not reach the app: %v %q", err, out)
	}
	// HTTP to the outbound port: before the fix, the outbound side answered
	// `503 unknown service nope:80`, from inside the pod.
	out, err := a.in(t, "curl", "-sS", "--max-time", "10", "-H", "Host: nope:80", "-D-", "http://"+pod+":4140/")
	if err == nil || strings.Contains(out, "mesh-error") || strings.Contains(out, "HTTP/1.1") {
		t.Errorf("HTTP to the pod's outbound port was answered (err %v):\n%s", err, out)
	}
	// Opaque TCP to the outbound TCP port: before the fix, it reached the
	// database (which answers anything with 400).
	if got := dialFrom(t, a, pod+":15432", "PING\r\n\r\n"); got != "" {
		t.Errorf("opaque TCP to the pod's outbound TCP port reached something behind it: %q", got)
	}
	// And the inbound port itself, at the pod's address.
	if got := dialFrom(t, a, pod+":4143", "GET / HTTP/1.1\r\nHost: app\r\n\r\n"); got != "" {
		t.Errorf("a connection to the inbound port itself was answered: %q", got)
	}

	// Mesh TLS: a meshed client whose discovery (wrongly, or on purpose)
	// names the pod's outbound port as an endpoint with the pod's identity.
	clientDisc := filepath.Join(dir, "client.yaml")
	writeFile(t, clientDisc, discoveryFile(
		meshedService("borrow", 80, "", spiffe("server"), pod+":4140"),
		meshedService("app", 80, "", spiffe("server"), pod+":8080")))
	// It takes its trust anchors from the environment, as an injected
	// proxy does (MESH_IDENTITY_TRUST_ANCHORS_PEM), not from a file.
	clientArgs := idArgs(a, "client")
	for i, arg := range clientArgs {
		if arg == "--identity-trust-anchors" {
			clientArgs = append(clientArgs[:i:i], clientArgs[i+2:]...)
			break
		}
	}
	anchorsEnv := "MESH_IDENTITY_TRUST_ANCHORS_PEM=" + readFile(t, filepath.Join(idDir, "trust-anchors.pem"))
	startCmd(t, "ip", a.cmd(append([]string{"env", anchorsEnv, meshBin, "proxy", "--discovery-file", clientDisc,
		"--outbound-addr", "127.0.0.1:4140", "--inbound-addr", "127.0.0.1:4143", "--admin-addr", "127.0.0.1:4191"}, clientArgs...)...)...)
	waitFor(t, "the client's proxy", func() bool {
		out, err := a.in(t, "curl", "-sf", "http://127.0.0.1:4191/ready")
		return err == nil && strings.HasPrefix(out, "ready")
	})
	out, _ = a.in(t, "curl", "-sS", "--max-time", "10", "-x", "http://127.0.0.1:4140", "http://app/ok")
	if out != "app answered GET /ok\n" {
		t.Fatalf("mesh TLS to the app through both proxies: %q", out)
	}
	out, err = a.in(t, "curl", "-sS", "--max-time", "10", "-D-", "-x", "http://127.0.0.1:4140", "http://borrow/")
	if strings.Contains(out, "not in discovery") || !strings.Contains(strings.ToLower(out), "mesh-error") {
		t.Errorf("mesh TLS to the pod's outbound port: want the client proxy's own error, got (%v):\n%s", err, out)
	}

	m := podMetrics(t, b)
	if n, _ := metricSum(m, "listener_connections_refused_total", "listener", "inbound", "reason", "proxy_port"); n < 3 {
		t.Errorf("refused for the proxy's own port: %v; want at least 3 (HTTP, TCP, mesh TLS)\n%s", n, grep(m, "listener_connections_refused_total"))
	}
	if has(m, "request_total", "direction", "outbound") || has(m, "tcp_open_total", "direction", "outbound") {
		t.Errorf("the pod's outbound side carried traffic from the pod network:\n%s", grep(m, "request_total")+grep(m, "tcp_open_total"))
	}
}

// dialFrom connects from n, sends data, and returns what came back before
// the far side closed (or 3 s passed).
func dialFrom(t *testing.T, n netns, addr, data string) string {
	t.Helper()
	out, err := n.in(t, helper(t, "dial", addr, strconv.Quote(data))...)
	if err != nil {
		t.Fatalf("dialing %s from %s: %v\n%s", addr, n.name, err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n") // how the read ended, then what it got
	got, err := strconv.Unquote(lines[len(lines)-1])
	if err != nil {
		t.Fatalf("dial helper printed %q", out)
	}
	return got
}

// TestSlowClientFloodStaysBoundedAndRealRequestsGetThrough opens tens of
// thousands of connections from the pod network that each send half a
// request head and then nothing. The proxy must stay within the injected
// memory limit, give the memory back afterwards, and serve the requests of
// a real client all along.
func TestSlowClientFloodStaysBoundedAndRealRequestsGetThrough(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: opens tens of thousands of connections")
	}
	needNetns(t, "curl")
	a, b, subnet := twoPods(t, 's')
	pod := subnet + ".2"
	initPod(t, b, "--inbound-port", "4143", "--outbound-port", "4140", "--proxy-uid", "2102", "--skip-inbound-ports", "4191")
	// The attackers need more source ports than Linux lends by default.
	if out, err := a.in(t, "sh", "-c", "echo '1024 65000' > /proc/sys/net/ipv4/ip_local_port_range"); err != nil {
		t.Fatalf("widening the port range: %v %s", err, out)
	}
	startHello(t, b, "0.0.0.0:8080", "app")
	dir := podDir(t)
	disc := filepath.Join(dir, "discovery.yaml")
	writeFile(t, disc, "services: []\n")
	// The injected memory limit, 250Mi, enforced as the kubelet would, in a
	// memory cgroup of the proxy's own (an OOM kill fails the test).
	const limit = 250 << 20
	cg := memoryCgroup(t, limit)
	proxy := startPodProxy(t, b, cg, "--discovery-file", disc)
	pid := proxy.cmd.Process.Pid // ip and setpriv exec the proxy in place
	if cg != "" && !strings.Contains(proxy.out.String(), "soft memory limit from the container's") {
		t.Errorf("the proxy did not take its soft memory limit from its cgroup:\n%s", proxy.out.String())
	}
	baseline := memOf(t, pid)
	var peak memUse
	var mu sync.Mutex
	sample := func() memUse {
		m := memOf(t, pid)
		mu.Lock()
		peak.rss, peak.anon = max(peak.rss, m.rss), max(peak.anon, m.anon)
		mu.Unlock()
		return m
	}

	// Two attackers (each process may hold 20,000 descriptors here), each
	// opening 14,000 slow connections and holding them for 8 s.
	const attackers, perAttacker = 2, 14000
	var wg sync.WaitGroup
	reports := make([]string, attackers)
	for i := range attackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := a.in(t, helper(t, "slow", pod+":8080", strconv.Itoa(perAttacker), "8s")...)
			if err != nil {
				t.Errorf("attacker %d: %v\n%s", i, err, out)
			}
			reports[i] = strings.TrimSpace(out)
		}()
	}
	attackDone := make(chan struct{})
	go func() { wg.Wait(); close(attackDone) }()

	// Meanwhile, a real client makes a request on a new connection every
	// 100 ms (at most 200), and the proxy's memory is sampled.
	var served, failed int
	var failures []string
real:
	for range 200 {
		select {
		case <-attackDone:
			break real
		case <-time.After(100 * time.Millisecond):
		}
		sample()
		out, err := a.in(t, "curl", "-sS", "--max-time", "5", "http://"+pod+":8080/real")
		if err != nil || out != "app answered GET /real\n" {
			failed++
			failures = append(failures, fmt.Sprintf("%v %q", err, out))
			continue
		}
		served++
	}
	<-attackDone
	t.Logf("attackers: %v; real requests served %d, failed %d", reports, served, failed)
	m := podMetrics(t, b)
	evicted, _ := metricSum(m, "listener_connections_evicted_total", "listener", "inbound")
	t.Logf("proxy memory: baseline %s, peak %s; evicted %v", baseline, peak, evicted)
	if failed > 0 || served < 20 {
		t.Errorf("real requests during the flood: %d served, %d failed; want none failed (and at least 20 made): %v", served, failed, failures)
	}
	if evicted == 0 {
		t.Errorf("no connection was evicted; the flood did not reach the bound:\n%s", grep(m, "listener_"))
	}
	if peak.rss >= limit {
		t.Errorf("peak RSS %d MiB, over the injected limit of 250 MiB", peak.rss>>20)
	}
	// Afterwards the memory goes back: within 30 s, the proxy's private
	// memory is within 24 MiB of what it was before the flood.
	deadline := time.Now().Add(30 * time.Second)
	for {
		now := sample()
		if now.anon <= baseline.anon+24<<20 {
			t.Logf("after the flood: %s", now)
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("30 s after the flood the proxy still holds %s (before: %s)", now, baseline)
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	select {
	case <-proxy.exited:
		t.Fatalf("the proxy died during the flood (%v); was it killed for memory?", proxy.err)
	default:
	}
	// And it still serves.
	if out, err := a.in(t, "curl", "-sS", "--max-time", "10", "http://"+pod+":8080/after"); err != nil || out != "app answered GET /after\n" {
		t.Errorf("after the flood: %v %q", err, out)
	}
}

// memoryCgroup makes a cgroup v1 memory cgroup with the given limit, or
// returns "" where this machine has none to give (the test then measures
// memory without the kernel enforcing the limit).
func memoryCgroup(t *testing.T, limit int64) string {
	t.Helper()
	cg := fmt.Sprintf("/sys/fs/cgroup/memory/mesh-e2e-%d", os.Getpid())
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Logf("no memory cgroup (%v); the limit is checked, not enforced", err)
		return ""
	}
	t.Cleanup(func() { os.Remove(cg) })
	if err := os.WriteFile(filepath.Join(cg, "memory.limit_in_bytes"), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		t.Fatalf("setting the cgroup's limit: %v", err)
	}
	return cg
}

// memUse is a process's resident memory: all of it, and its private
// (anonymous) part.
type memUse struct{ rss, anon int64 }

func (m memUse) String() string {
	return fmt.Sprintf("%d MiB resident (%d MiB private)", m.rss>>20, m.anon>>20)
}

func memOf(t *testing.T, pid int) memUse {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("reading the proxy's memory: %v (has it exited? killed for memory?)", err)
	}
	var m memUse
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			m.rss = kb << 10
		case "RssAnon:":
			m.anon = kb << 10
		}
	}
	return m
}
