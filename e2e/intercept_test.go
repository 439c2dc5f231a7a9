package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// netns runs commands inside a network namespace the test made.
type netns struct{ name string }

func (n netns) cmd(args ...string) []string {
	return append([]string{"netns", "exec", n.name}, args...)
}

func ipCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// in runs a command in the namespace and returns its output.
func (n netns) in(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("ip", n.cmd(args...)...).CombinedOutput()
	return string(out), err
}

// needNetns skips a test that needs network namespaces this machine cannot give.
func needNetns(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: network namespaces need root")
	}
	for _, tool := range append([]string{"ip", "setpriv"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipped: %s is not installed", tool)
		}
	}
}

// twoPods makes two network namespaces joined by a veth pair, as two pods
// on one network: a at SUBNET.1, b at SUBNET.2. tag tells the namespaces of
// one test from another's.
func twoPods(t *testing.T, tag byte) (a, b netns, subnet string) {
	t.Helper()
	id := os.Getpid() % 10000
	subnet = fmt.Sprintf("10.%d.%d", 231+int(tag)%20, id%250)
	a, b = netns{fmt.Sprintf("mesh-e2e-%ca-%d", tag, id)}, netns{fmt.Sprintf("mesh-e2e-%cb-%d", tag, id)}
	vethA, vethB := fmt.Sprintf("vm%ca%d", tag, id), fmt.Sprintf("vm%cb%d", tag, id)
	for _, n := range []netns{a, b} {
		ipCmd(t, "netns", "add", n.name)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", n.name).Run() })
	}
	ipCmd(t, "link", "add", vethA, "type", "veth", "peer", "name", vethB)
	ipCmd(t, "link", "set", vethA, "netns", a.name)
	ipCmd(t, "link", "set", vethB, "netns", b.name)
	for _, x := range []struct {
		n    netns
		dev  string
		addr string
	}{{a, vethA, subnet + ".1/24"}, {b, vethB, subnet + ".2/24"}} {
		ipCmd(t, "-n", x.n.name, "addr", "add", x.addr, "dev", x.dev)
		ipCmd(t, "-n", x.n.name, "link", "set", x.dev, "up")
		ipCmd(t, "-n", x.n.name, "link", "set", "lo", "up")
	}
	return a, b, subnet
}

// initPod programs a pod's namespace as the injected init container does;
// a kernel without nftables NAT is the one reason to skip.
func initPod(t *testing.T, n netns, args ...string) {
	t.Helper()
	if out, err := n.in(t, append([]string{meshBin, "init"}, args...)...); err != nil {
		if strings.Contains(out, "not supported") || strings.Contains(out, "no such file") {
			t.Skipf("skipped: this kernel lacks nftables NAT: %s", out)
		}
		t.Fatalf("mesh init in %s: %v\n%s", n.name, err, out)
	}
}

// TestInterceptedTrafficFlowsThroughBothProxies builds two pods as network
// namespaces joined by a veth pair, runs `mesh init` and a proxy in each,
// and shows that a plain client in one reaches a server in the other
// through both proxies, while a skipped port goes around them.
func TestInterceptedTrafficFlowsThroughBothProxies(t *testing.T) {
	needNetns(t, "curl")
	a, b, subnet := twoPods(t, 'i')
	server := subnet + ".2"

	// The pods' init step.
	initPod(t, b, "--skip-inbound-ports", "4191,9090")
	if out, err := a.in(t, meshBin, "init", "--skip-inbound-ports", "4191", "--skip-outbound-ports", "9090"); err != nil {
		t.Fatalf("mesh init in the client pod: %v\n%s", err, out)
	}
	// Running it again changes nothing (the table is replaced whole).
	if out, err := a.in(t, meshBin, "init", "--skip-inbound-ports", "4191", "--skip-outbound-ports", "9090"); err != nil {
		t.Fatalf("mesh init again: %v\n%s", err, out)
	}

	// The apps: a server on 8080 (through the mesh) and one on 9090 (skipped).
	hello := filepath.Join(filepath.Dir(meshBin), "hello")
	if out, err := exec.Command("go", "build", "-o", hello, "github.com/meshproj/mesh/examples/hello").CombinedOutput(); err != nil {
		t.Fatalf("building hello: %v\n%s", err, out)
	}
	startCmd(t, "ip", b.cmd(hello, "-addr", "0.0.0.0:8080", "-name", "meshed-server")...)
	startCmd(t, "ip", b.cmd(hello, "-addr", "0.0.0.0:8081", "-name", "second-server")...)
	startCmd(t, "ip", b.cmd(hello, "-addr", "0.0.0.0:9090", "-name", "skipped-server")...)

	// The proxies, as UID 2102 so that their own connections are not
	// redirected back to themselves.
	dir, err := os.MkdirTemp("", "mesh-intercept-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	// A service with a virtual IP (as a ClusterIP) and two endpoints in pod B.
	vip := subnet + ".100"
	disc := filepath.Join(dir, "discovery.yaml")
	writeFile(t, disc, fmt.Sprintf("services:\n  - name: hello\n    port: 80\n    loadBalancer: round-robin\n    addresses: [%s]\n    endpoints:\n      - address: %s:8080\n      - address: %s:8081\n", vip, server, server))
	for _, n := range []netns{a, b} {
		startCmd(t, "ip", n.cmd("setpriv", "--reuid=2102", "--regid=2102", "--clear-groups",
			meshBin, "proxy", "--log-level", "debug", "--discovery-file", disc,
			"--inbound-addr", "0.0.0.0:4143", "--outbound-addr", "127.0.0.1:4140", "--admin-addr", "0.0.0.0:4191")...)
	}
	for _, n := range []netns{a, b} {
		waitFor(t, "the proxy in "+n.name, func() bool {
			out, err := n.in(t, "curl", "-sf", "http://127.0.0.1:4191/ready")
			return err == nil && strings.HasPrefix(out, "ready")
		})
	}
	waitFor(t, "the servers", func() bool {
		_, err := b.in(t, "curl", "-sf", "http://127.0.0.1:9090/")
		return err == nil
	})

	// A plain client in pod A talks to pod B's address, knowing nothing of
	// the mesh.
	out, err := a.in(t, "curl", "-sS", "--max-time", "10", "http://"+server+":8080/hello")
	if err != nil || out != "meshed-server answered GET /hello\n" {
		t.Fatalf("client in pod A: %v %q", err, out)
	}
	metrics := func(n netns) string {
		out, err := n.in(t, "curl", "-sf", "http://127.0.0.1:4191/metrics")
		if err != nil {
			t.Fatalf("metrics of %s: %v", n.name, err)
		}
		return out
	}
	if m := metrics(a); !has(m, "request_total", "direction", "outbound", "target_addr", server+":8080") {
		t.Errorf("the client pod's proxy did not carry the request:\n%s", grep(m, "request_total"))
	}
	if m := metrics(b); !has(m, "request_total", "direction", "inbound", "target_addr", "127.0.0.1:8080") {
		t.Errorf("the server pod's proxy did not carry the request:\n%s", grep(m, "request_total"))
	}

	// A connection to the service's virtual IP is balanced across its
	// endpoints by the client pod's proxy.
	seen := map[string]int{}
	for range 6 {
		out, err := a.in(t, "curl", "-sS", "--max-time", "10", "http://"+vip+"/vip")
		if err != nil {
			t.Fatalf("client to the service VIP: %v %q", err, out)
		}
		seen[out]++
	}
	if seen["meshed-server answered GET /vip\n"] != 3 || seen["second-server answered GET /vip\n"] != 3 {
		t.Errorf("requests to the VIP were not balanced round-robin over both endpoints: %v", seen)
	}
	if m := metrics(a); !has(m, "request_total", "direction", "outbound", "authority", "hello:80", "target_addr", server+":8081") {
		t.Errorf("the client pod's proxy did not balance the VIP's requests:\n%s", grep(m, "request_total"))
	}

	// The skipped port goes around both proxies.
	out, err = a.in(t, "curl", "-sS", "--max-time", "10", "http://"+server+":9090/skip")
	if err != nil || out != "skipped-server answered GET /skip\n" {
		t.Fatalf("client to the skipped port: %v %q", err, out)
	}
	time.Sleep(100 * time.Millisecond)
	for _, n := range []netns{a, b} {
		m := metrics(n)
		if strings.Contains(m, ":9090") {
			t.Errorf("traffic to the skipped port went through the proxy in %s:\n%s", n.name, grep(m, "request_total"))
		}
	}
}
