package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// load sends requests from several workers until stop is closed (or the
// count or time bound is reached) and reports failures.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	firstErr   string
	stop       chan struct{}
	done       sync.WaitGroup
}

func startLoad(t *testing.T, cl *client, authority string, workers, maxRequests int, maxTime time.Duration) *load {
	l := &load{stop: make(chan struct{})}
	deadline := time.Now().Add(maxTime)
	var sent atomic.Int64
	for range workers {
		l.done.Add(1)
		go func() {
			defer l.done.Done()
			for time.Now().Before(deadline) && sent.Add(1) <= int64(maxRequests) {
				select {
				case <-l.stop:
					return
				default:
				}
				resp, _, err := cl.get(authority, "/")
				if err != nil || resp.StatusCode != 200 {
					l.failed.Add(1)
					l.mu.Lock()
					if l.firstErr == "" {
						if err != nil {
							l.firstErr = err.Error()
						} else {
							l.firstErr = fmt.Sprintf("%s (mesh-error: %s)", resp.Status, resp.Header.Get("mesh-error"))
						}
					}
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	return l
}

func (l *load) finish(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.done.Wait()
	if n := l.failed.Load(); n > 0 {
		t.Errorf("%d of %d requests failed; first: %s", n, n+l.ok.Load(), l.firstErr)
	}
}

func TestDiscoveryEditAddsAndRemovesEndpointsWithoutFailedRequests(t *testing.T) {
	a, b, c := startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("web", 80, "round-robin", "", a.addr, b.addr))})
	l := startLoad(t, newClient(mp.outbound), "web", 4, 20000, 60*time.Second)

	waitFor(t, "traffic", func() bool { return a.hits.Load() > 20 && b.hits.Load() > 20 })
	mp.writeDiscovery(t, discoveryFile(service("web", 80, "round-robin", "", a.addr, b.addr, c.addr)), 3)
	waitFor(t, "the added endpoint to get traffic", func() bool { return c.hits.Load() > 20 })

	mp.writeDiscovery(t, discoveryFile(service("web", 80, "round-robin", "", b.addr, c.addr)), 2)
	time.Sleep(100 * time.Millisecond) // requests picked before the swap may still land on a
	removedAt := a.hits.Load()
	bAt, cAt := b.hits.Load(), c.hits.Load()
	waitFor(t, "traffic after removal", func() bool { return b.hits.Load() > bAt+20 && c.hits.Load() > cAt+20 })
	l.finish(t)
	if a.hits.Load() != removedAt {
		t.Errorf("removed endpoint still got %d requests", a.hits.Load()-removedAt)
	}
	t.Logf("%d requests, none failed; a=%d b=%d c=%d", l.ok.Load(), a.hits.Load(), b.hits.Load(), c.hits.Load())
}

func TestInvalidDiscoveryEditKeepsLastGoodState(t *testing.T) {
	be := startBackend(t, "web")
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("web", 80, "", "", be.addr))})
	rev := mp.dump(t).Discovery.Revision
	mp.writeDiscovery(t, "services:\n  - name: web\n    port: 80\n    endpoints:\n      - address: not-an-ip\n", -1)
	waitFor(t, "the proxy to log the rejected file", func() bool {
		return strings.Contains(mp.out.String(), "discovery file rejected") && strings.Contains(mp.out.String(), mp.discovery+":5:")
	})
	if got := mp.dump(t).Discovery.Revision; got != rev {
		t.Fatalf("revision changed from %s to %s after an invalid edit", rev, got)
	}
	if resp, _, err := newClient(mp.outbound).get("web", "/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("request after invalid edit: %v %v", resp, err)
	}
}

func TestInvalidDiscoveryFileAtStartExitsNamingFileAndLine(t *testing.T) {
	path := t.TempDir() + "/bad.yaml"
	writeFile(t, path, "services:\n  - name: web\n    port: 80\n    loadBalancer: fastest\n")
	p := startMesh(t, "proxy", "--discovery-file", path, "--outbound-addr", freeAddr(t), "--inbound-addr", freeAddr(t), "--admin-addr", freeAddr(t))
	if code := p.exitCode(t, 10*time.Second); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if out := p.out.String(); !strings.Contains(out, path+":4: services[0].loadBalancer \"fastest\" is unknown") {
		t.Errorf("output does not name the file, line and problem:\n%s", out)
	}
}

func TestSIGTERMDrainsInFlightRequests(t *testing.T) {
	const inFlight = 200
	be := startBackend(t, "slow")
	arrived := make(chan struct{}, inFlight)
	release := make(chan struct{})
	be.handler = func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-time.After(30 * time.Second):
		}
		w.Write([]byte("done"))
	}
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("slow", 80, "", "", be.addr)), args: []string{"--shutdown-grace", "30s"}})
	hc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: inFlight}}

	var wg sync.WaitGroup
	results := make(chan string, inFlight)
	for range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", "http://"+mp.outbound+"/", nil)
			req.Host = "slow"
			resp, err := hc.Do(req)
			if err != nil {
				results <- err.Error()
				return
			}
			defer resp.Body.Close()
			var body strings.Builder
			if _, err := fmt.Fprint(&body, readAll(resp)); err != nil || resp.StatusCode != 200 || body.String() != "done" {
				results <- fmt.Sprintf("%s %q", resp.Status, body.String())
				return
			}
			results <- ""
		}()
	}
	timeout := time.After(30 * time.Second)
	for i := range inFlight {
		select {
		case <-arrived:
		case <-timeout:
			t.Fatalf("only %d of %d requests reached the backend", i, inFlight)
		}
	}
	mp.cmd.Process.Signal(syscall.SIGTERM)
	// The proxy stops accepting new connections at once...
	waitFor(t, "the proxy to report draining", func() bool { return strings.Contains(mp.out.String(), "draining") })
	// ...while the requests in flight finish.
	close(release)
	wg.Wait()
	close(results)
	failed := 0
	for r := range results {
		if r != "" {
			failed++
			t.Log(r)
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d in-flight requests failed during drain", failed, inFlight)
	}
	if code := mp.exitCode(t, 30*time.Second); code != 0 {
		t.Errorf("proxy exit code after drain = %d, want 0", code)
	}
}

func TestProxyRunsOnOneCoreUnlessTold(t *testing.T) {
	b := startBackend(t, "a")
	disc := discoveryFile(service("web", 80, "", "", b.addr))
	if n := startProxy(t, proxyOpts{discovery: disc}).dump(t).Cores; n != 1 {
		t.Errorf("default: %d cores, want 1", n)
	}
	if n := startProxy(t, proxyOpts{discovery: disc, args: []string{"--cores", "2"}}).dump(t).Cores; n != 2 {
		t.Errorf("--cores 2: %d cores", n)
	}
	t.Setenv("GOMAXPROCS", "3") // inherited by the proxy started next
	if n := startProxy(t, proxyOpts{discovery: disc}).dump(t).Cores; n != 3 {
		t.Errorf("GOMAXPROCS=3 and no --cores: %d cores", n)
	}
}
