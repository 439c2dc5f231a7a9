package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshproj/mesh/internal/freeport"
)

// meshBin and controllerBin are the binaries under test, built once by
// TestMain.
var meshBin, controllerBin string

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == helperArg {
		os.Exit(runHelper(os.Args[2:]))
	}
	dir, err := os.MkdirTemp("", "mesh-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The interception test runs the proxy as UID 2102: it must be able to
	// reach the binary.
	os.Chmod(dir, 0o755)
	meshBin = filepath.Join(dir, "mesh")
	controllerBin = filepath.Join(dir, "mesh-controller")
	for bin, pkg := range map[string]string{meshBin: "github.com/meshproj/mesh", controllerBin: "github.com/meshproj/mesh/cmd/mesh-controller"} {
		build := exec.Command("go", "build", "-o", bin, pkg)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", pkg, err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr(t testing.TB) string {
	t.Helper()
	a, err := freeport.Loopback()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// syncBuffer collects a process's output safely.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// process is a mesh process started by a test.
type process struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
	err    error
}

// startMesh starts the mesh binary; the test's cleanup stops it.
func startMesh(t testing.TB, args ...string) *process {
	t.Helper()
	return startCmd(t, meshBin, args...)
}

// startCmd starts a program; the test's cleanup stops it by its PID.
func startCmd(t testing.TB, bin string, args ...string) *process {
	t.Helper()
	p := &process{out: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	p.cmd.Env = append(os.Environ(), "MESH_LOG_FORMAT=text")
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.stop(syscall.SIGTERM, 10*time.Second)
		if t.Failed() {
			t.Logf("output of %s %s:\n%s", filepath.Base(bin), strings.Join(args, " "), p.out.String())
		}
	})
	return p
}

// stop signals the process and waits; after wait it is killed.
func (p *process) stop(sig syscall.Signal, wait time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(wait):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// exitCode waits for the process to end and returns its exit code.
func (p *process) exitCode(t testing.TB, within time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(within):
		t.Fatalf("process did not exit within %s", within)
	}
	return p.cmd.ProcessState.ExitCode()
}

// meshProxy is a running `mesh proxy` with its addresses.
type meshProxy struct {
	*process
	outbound, inbound, admin string
	discovery                string
}

type proxyOpts struct {
	discovery string   // file contents
	args      []string // extra flags
}

// startProxy writes a discovery file and runs a proxy on free ports, and
// waits until it is ready.
func startProxy(t testing.TB, o proxyOpts) *meshProxy {
	t.Helper()
	mp := &meshProxy{outbound: freeAddr(t), inbound: freeAddr(t), admin: freeAddr(t)}
	mp.discovery = filepath.Join(t.TempDir(), "discovery.yaml")
	if err := os.WriteFile(mp.discovery, []byte(o.discovery), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"proxy", "--log-level", "debug",
		"--outbound-addr", mp.outbound, "--inbound-addr", mp.inbound, "--admin-addr", mp.admin,
		"--discovery-file", mp.discovery}, o.args...)
	mp.process = startMesh(t, args...)
	mp.waitReady(t)
	return mp
}

func (mp *meshProxy) waitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-mp.exited:
			t.Fatalf("proxy exited before ready: %v\n%s", mp.err, mp.out.String())
		default:
		}
		resp, err := http.Get("http://" + mp.admin + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("proxy not ready within 15s:\n%s", mp.out.String())
}

// writeDiscovery replaces the discovery file the way editors do (write,
// then rename) and waits until the proxy has applied it.
func (mp *meshProxy) writeDiscovery(t testing.TB, contents string, wantEndpoints int) {
	t.Helper()
	before := mp.dump(t).Discovery.Revision
	tmp := mp.discovery + ".tmp"
	if err := os.WriteFile(tmp, []byte(contents), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, mp.discovery); err != nil {
		t.Fatal(err)
	}
	if wantEndpoints < 0 {
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if d := mp.dump(t); d.Discovery.Revision != before && mp.endpointCount(t) == wantEndpoints {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("proxy did not apply the new discovery file (want %d endpoints)", wantEndpoints)
}

type configDump struct {
	Cores     int `json:"cores"`
	Discovery struct {
		Revision string `json:"revision"`
		Backend  struct {
			Connected  bool     `json:"connected"`
			TLS        bool     `json:"tls"`
			Known      int      `json:"known"`
			Subscribed []string `json:"subscribed"`
		} `json:"backend"`
	} `json:"discovery"`
	Services []struct {
		Authority string `json:"authority"`
		Balancer  string `json:"loadBalancer"`
		Routes    []struct {
			Name string `json:"name"`
		} `json:"routes"`
		Endpoints []struct {
			Address   string `json:"address"`
			Identity  string `json:"identity"`
			Weight    int    `json:"weight"`
			Zone      string `json:"zone"`
			State     string `json:"state"`
			Ejections int    `json:"ejections"`
		} `json:"endpoints"`
	} `json:"services"`
}

// endpointState returns an endpoint's failure-accrual state and ejection
// count from the config dump.
func (mp *meshProxy) endpointState(t testing.TB, addr string) (string, int) {
	t.Helper()
	for _, s := range mp.dump(t).Services {
		for _, e := range s.Endpoints {
			if e.Address == addr {
				return e.State, e.Ejections
			}
		}
	}
	t.Fatalf("endpoint %s not in the config dump", addr)
	return "", 0
}

func (mp *meshProxy) dump(t testing.TB) configDump {
	t.Helper()
	var d configDump
	mp.adminJSON(t, "/config_dump", &d)
	return d
}

// adminJSON decodes what the proxy's admin endpoint answers at path.
func (mp *meshProxy) adminJSON(t testing.TB, path string, out any) {
	t.Helper()
	resp, err := http.Get("http://" + mp.admin + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
}

func (mp *meshProxy) endpointCount(t testing.TB) int {
	n := 0
	for _, s := range mp.dump(t).Services {
		n += len(s.Endpoints)
	}
	return n
}

// metrics returns the proxy's metrics text.
func (mp *meshProxy) metrics(t testing.TB) string {
	t.Helper()
	resp, err := http.Get("http://" + mp.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// backend is a real HTTP server on loopback that counts what it served.
type backend struct {
	name  string
	addr  string
	hits  atomic.Int64
	delay atomic.Int64 // nanoseconds added to each response
	srv   *http.Server
	ln    net.Listener
	// handler, when set, replaces the default answer.
	handler http.HandlerFunc
	// last request seen, for header checks
	mu   sync.Mutex
	last *http.Request
}

func startBackend(t testing.TB, name string) *backend {
	t.Helper()
	return startBackendAt(t, name, "127.0.0.1:0")
}

// startBackendAt serves on a given address: several backends can share a
// port on different loopback addresses, as pods of one service do.
func startBackendAt(t testing.TB, name, addr string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return serveBackend(t, name, ln)
}

// serveBackend serves on a listener made elsewhere (in a pod's namespace).
func serveBackend(t testing.TB, name string, ln net.Listener) *backend {
	t.Helper()
	b := &backend{name: name, addr: ln.Addr().String(), ln: ln}
	b.srv = &http.Server{Handler: http.HandlerFunc(b.serve), ReadHeaderTimeout: 10 * time.Second}
	go b.srv.Serve(ln)
	t.Cleanup(func() { b.close() })
	return b
}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	b.hits.Add(1)
	b.mu.Lock()
	b.last = r.Clone(context.Background())
	b.mu.Unlock()
	if d := time.Duration(b.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	if b.handler != nil {
		b.handler(w, r)
		return
	}
	w.Header().Set("X-Backend", b.name)
	fmt.Fprintf(w, "hello from %s\n", b.name)
}

func (b *backend) lastRequest() *http.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

func (b *backend) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	b.srv.Shutdown(ctx)
	b.srv.Close()
}

// service renders one service of a discovery file.
func service(name string, port int, lb string, extra string, addrs ...string) string {
	var s strings.Builder
	fmt.Fprintf(&s, "  - name: %s\n    port: %d\n", name, port)
	if lb != "" {
		fmt.Fprintf(&s, "    loadBalancer: %s\n", lb)
	}
	s.WriteString(extra)
	s.WriteString("    endpoints:\n")
	if len(addrs) == 0 {
		s.WriteString("      []\n")
	}
	for _, a := range addrs {
		fmt.Fprintf(&s, "      - address: %s\n", a)
	}
	return s.String()
}

func discoveryFile(services ...string) string {
	return "services:\n" + strings.Join(services, "")
}

// client sends HTTP requests to a proxy's outbound listener with the given
// authority in Host.
type client struct {
	http  *http.Client
	proxy string
}

func newClient(proxyAddr string) *client {
	return &client{
		http:  &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		proxy: proxyAddr,
	}
}

func (c *client) get(authority, path string, header ...string) (*http.Response, string, error) {
	req, err := http.NewRequest("GET", "http://"+c.proxy+path, nil)
	if err != nil {
		return nil, "", err
	}
	req.Host = authority
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

// serveTCP accepts connections on loopback until the test ends and hands
// each to handle on a goroutine of its own, closing it after.
func serveTCP(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// startH2CServer serves h on loopback over HTTP/1.1 and HTTP/2 without
// TLS, as gRPC servers and many apps do.
func startH2CServer(t testing.TB, h http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &p, ReadHeaderTimeout: 10 * time.Second, Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}
