package e2e

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// failing makes a backend answer 500 while broken is true.
func failing(b *backend, broken *atomic.Bool) {
	b.handler = func(w http.ResponseWriter, r *http.Request) {
		if broken.Load() {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		w.Header().Set("X-Backend", b.name)
		w.Write([]byte("ok"))
	}
}

// startBrokenBackend starts a backend that answers 500 until its flag is
// cleared.
func startBrokenBackend(t *testing.T, name string) (*backend, *atomic.Bool) {
	b := startBackend(t, name)
	broken := new(atomic.Bool)
	broken.Store(true)
	failing(b, broken)
	return b, broken
}

// sendN sends n GETs from workers and returns how many succeeded.
func sendN(t *testing.T, cl *client, authority string, n, workers int) int64 {
	t.Helper()
	var ok, sent atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(60 * time.Second)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sent.Add(1) <= int64(n) && time.Now().Before(deadline) {
				resp, _, err := cl.get(authority, "/")
				if err == nil && resp.StatusCode == 200 {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return ok.Load()
}

func TestFailingEndpointIsEjectedRetriedAroundAndRestored(t *testing.T) {
	good1, good2 := startBackend(t, "good1"), startBackend(t, "good2")
	bad, broken := startBrokenBackend(t, "bad")
	policy := "    retries: {statuses: [5xx]}\n" +
		"    failureAccrual: {consecutiveFailures: 7, minBackoff: 300ms, maxBackoff: 2s}\n"
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("web", 80, "round-robin", policy, good1.addr, good2.addr, bad.addr))})
	cl := newClient(mp.outbound)

	sendN(t, cl, "web", 100, 4) // warm-up
	ok := sendN(t, cl, "web", 1000, 4)
	rate := float64(ok) / 1000
	t.Logf("success rate over 1000 requests with one endpoint answering 500: %.1f%%", 100*rate)
	if rate < 0.995 {
		t.Errorf("success rate %.1f%%, want at least 99.5%%", 100*rate)
	}
	if _, ejections := mp.endpointState(t, bad.addr); ejections == 0 {
		t.Fatalf("the failing endpoint was never ejected")
	}
	m := mp.metrics(t)
	if !has(m, "endpoint_ejections_total", "authority", "web:80", "target_addr", bad.addr) ||
		!has(m, "retry_total", "authority", "web:80", "direction", "outbound", "reason", "status") {
		t.Errorf("ejections and retries are not counted:\n%s", grep(m, "endpoint_")+"\n"+grep(m, "retry_"))
	}

	broken.Store(false)
	before := bad.hits.Load()
	deadline := time.Now().Add(30 * time.Second)
	for {
		state, _ := mp.endpointState(t, bad.addr)
		if state == "active" && bad.hits.Load() > before+10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("recovered endpoint not restored within 30s (state %s)", state)
		}
		sendN(t, cl, "web", 20, 2)
	}
	if !has(mp.metrics(t), "endpoint_restorations_total", "authority", "web:80", "target_addr", bad.addr) {
		t.Error("restoration not counted")
	}
}

func TestKilledEndpointMidLoadCausesNoFailedGET(t *testing.T) {
	a, b, c := startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")
	// Default settings: connection failures are retried out of the box.
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("web", 80, "", "", a.addr, b.addr, c.addr))})
	l := startLoad(t, newClient(mp.outbound), "web", 6, 20000, 60*time.Second)
	waitFor(t, "traffic on every endpoint", func() bool { return a.hits.Load() > 30 && b.hits.Load() > 30 && c.hits.Load() > 30 })
	c.srv.Close() // kills the listener and every connection, in-flight requests included
	total := l.ok.Load()
	waitFor(t, "traffic after the kill", func() bool { return l.ok.Load() > total+500 })
	l.finish(t)
	t.Logf("%d requests, %d failed; a=%d b=%d c=%d", l.ok.Load()+l.failed.Load(), l.failed.Load(), a.hits.Load(), b.hits.Load(), c.hits.Load())
}

func TestRetriesCannotAmplifyAnOutage(t *testing.T) {
	var broken atomic.Bool
	broken.Store(true)
	var backends []*backend
	var addrs []string
	for _, name := range []string{"a", "b", "c"} {
		b := startBackend(t, name)
		failing(b, &broken)
		backends = append(backends, b)
		addrs = append(addrs, b.addr)
	}
	// Up to 3 retries per request, but a budget of 20% plus 10/s; accrual
	// off so that every request really reaches a backend.
	policy := "    retries: {statuses: [5xx], maxRetries: 3, budget: {ratio: 0.2, minPerSecond: 10, ttl: 10s}}\n" +
		"    failureAccrual: {consecutiveFailures: 0}\n"
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("web", 80, "", policy, addrs...))})
	const n = 1000
	start := time.Now()
	if ok := sendN(t, newClient(mp.outbound), "web", n, 4); ok != 0 {
		t.Fatalf("%d requests succeeded in a total outage", ok)
	}
	elapsed := time.Since(start)
	var reached int64
	for _, b := range backends {
		reached += b.hits.Load()
	}
	// The floor is 10 retries a second over the 10s window: at most 100
	// while the test runs within one window.
	floor := 10.0 * max(10, elapsed.Seconds())
	limit := int64(1.2*n + floor)
	t.Logf("%d client requests reached backends %d times in %s (limit %d; without a budget up to %d)", n, reached, elapsed.Round(time.Millisecond), limit, 4*n)
	if reached > limit {
		t.Errorf("backends saw %d requests for %d client requests; the budget allows %d", reached, n, limit)
	}
	if reached <= n {
		t.Errorf("no retries happened at all (%d requests reached backends)", reached)
	}
	if !has(mp.metrics(t), "retry_budget_exhausted_total", "authority", "web:80", "direction", "outbound") {
		t.Error("budget exhaustion not counted")
	}
}

func TestHangingEndpointFailsWith504NearItsTimeout(t *testing.T) {
	hang := startBackend(t, "hang")
	hang.delay.Store(int64(time.Minute))
	const timeout = 500 * time.Millisecond
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("slow", 80, "", "    timeouts: {request: 500ms}\n", hang.addr))})
	start := time.Now()
	resp, _, err := newClient(mp.outbound).get("slow", "/")
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 504 || !strings.Contains(resp.Header.Get("mesh-error"), "timed out after 500ms (timeouts.request)") {
		t.Errorf("got %d, mesh-error %q; want 504 explaining the timeout", resp.StatusCode, resp.Header.Get("mesh-error"))
	}
	if elapsed < timeout || elapsed > 3*timeout {
		t.Errorf("answered after %s; want between %s and %s", elapsed, timeout, 3*timeout)
	}

	// gRPC deadlines travel in grpc-timeout; the proxy honours them too. A
	// raw HTTP/2 client sends one without enforcing it itself, so the answer
	// can only come from the proxy.
	grpcAddr := startGRPCServer(t, &testService{name: "hang", hang: true})
	mp.writeDiscovery(t, discoveryFile(service("slow", 80, "", "    timeouts: {request: 500ms}\n", hang.addr), service("rpc", 9090, "", "", grpcAddr)), 2)
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	h2 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: &protocols}}
	req, _ := http.NewRequest("POST", "http://"+mp.outbound+"/grpc.testing.TestService/UnaryCall", bytes.NewReader([]byte{0, 0, 0, 0, 0}))
	req.Host = "rpc:9090"
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	req.Header.Set("Grpc-Timeout", "300m")
	start = time.Now()
	resp, err = h2.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	elapsed = time.Since(start)
	if got := resp.Header.Get("Grpc-Status") + resp.Trailer.Get("Grpc-Status"); got != "4" {
		t.Errorf("grpc-status %q after grpc-timeout 300m, want 4 (DEADLINE_EXCEEDED); mesh-error %q", got, resp.Header.Get("mesh-error"))
	}
	if !strings.Contains(resp.Header.Get("mesh-error"), "timed out after 300ms (grpc-timeout)") {
		t.Errorf("mesh-error %q does not explain the timeout", resp.Header.Get("mesh-error"))
	}
	if elapsed < 300*time.Millisecond || elapsed > 900*time.Millisecond {
		t.Errorf("answered after %s; want between 300ms and 900ms", elapsed)
	}
}

func TestNoEndpointsFailsFastAndTrafficResumesWhenTheyReturn(t *testing.T) {
	be := startBackend(t, "back")
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("web", 80, "", "    queueTimeout: 200ms\n"))})
	cl := newClient(mp.outbound)
	start := time.Now()
	resp, _, err := cl.get("web", "/")
	if err != nil || resp.StatusCode != 503 || !strings.Contains(resp.Header.Get("mesh-error"), "has no endpoints") {
		t.Fatalf("no endpoints: %v %v", resp, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("503 took %s; it should come after the 200ms queue timeout", d)
	}

	// A request waiting in the queue is served as soon as an endpoint comes.
	mp.writeDiscovery(t, discoveryFile(service("web", 80, "", "    queueTimeout: 10s\n")), 0)
	waiting := make(chan int, 1)
	go func() {
		resp, _, err := cl.get("web", "/")
		if err != nil {
			waiting <- 0
			return
		}
		waiting <- resp.StatusCode
	}()
	time.Sleep(300 * time.Millisecond)
	mp.writeDiscovery(t, discoveryFile(service("web", 80, "", "    queueTimeout: 10s\n", be.addr)), 1)
	select {
	case code := <-waiting:
		if code != 200 {
			t.Fatalf("queued request got %d after an endpoint returned", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("queued request not served after an endpoint returned")
	}
	if resp, _, err := cl.get("web", "/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after endpoints returned: %v %v", resp, err)
	}
}

func TestEndpointAtItsLimitShedsLoadWith503(t *testing.T) {
	be := startBackend(t, "busy")
	release := make(chan struct{})
	be.handler = func(w http.ResponseWriter, r *http.Request) { <-release }
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("web", 80, "", "    limits: {maxRequestsPerEndpoint: 2}\n    retries: {maxRetries: 0}\n", be.addr))})
	cl := newClient(mp.outbound)
	codes := make(chan int, 2)
	for range 2 {
		go func() {
			resp, _, err := cl.get("web", "/")
			if err != nil {
				codes <- 0
				return
			}
			codes <- resp.StatusCode
		}()
	}
	waitFor(t, "two requests in flight", func() bool { return be.hits.Load() == 2 })
	resp, _, err := cl.get("web", "/")
	if err != nil || resp.StatusCode != 503 || !strings.Contains(resp.Header.Get("mesh-error"), "limit of 2 requests in flight") {
		t.Fatalf("third request: %v %v", resp, err)
	}
	close(release)
	for range 2 {
		if c := <-codes; c != 200 {
			t.Errorf("an admitted request got %d", c)
		}
	}
}

func TestDefaultsHideAFailingAndAKilledEndpoint(t *testing.T) {
	a, c := startBackend(t, "a"), startBackend(t, "c")
	b, _ := startBrokenBackend(t, "b")
	// No settings at all: peak-EWMA, default accrual, default retries.
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("web", 80, "", "", a.addr, b.addr, c.addr))})
	l := startLoad(t, newClient(mp.outbound), "web", 4, 20_000, 40*time.Second)
	waitFor(t, "traffic on every endpoint", func() bool { return a.hits.Load() > 1000 && c.hits.Load() > 1000 })
	c.srv.Close() // kills the listener and every connection, in-flight requests included
	l.done.Wait()
	ok, failed := l.ok.Load(), l.failed.Load()
	rate := float64(ok) / float64(ok+failed)
	_, ejections := mp.endpointState(t, b.addr)
	t.Logf("%d GETs, %d failed (%.3f%% succeeded; first failure: %s); the failing endpoint was ejected %d times and reached %d times",
		ok+failed, failed, 100*rate, l.firstErr, ejections, b.hits.Load())
	// The ratio needs enough requests to mean something; a slow machine
	// may not send them in time (the count below still holds).
	if ok+failed >= 10_000 && rate < 0.999 {
		t.Errorf("%.3f%% of GETs succeeded with one endpoint failing and one killed; want at least 99.9%% with default settings", 100*rate)
	}
	// What may fail: the requests that found the endpoint failing before
	// its first ejection (seven in a row, by default), none after.
	if failed > 7 {
		t.Errorf("%d GETs failed; only the 7 before the failing endpoint's first ejection should", failed)
	}
}

func TestProbeOfAnEjectedEndpointIsRetriedElsewhere(t *testing.T) {
	good1, good2 := startBackend(t, "good1"), startBackend(t, "good2")
	bad, broken := startBrokenBackend(t, "bad")
	var posts atomic.Int64
	inner := bad.handler
	bad.handler = func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			posts.Add(1)
		}
		inner(w, r)
	}
	// Round-robin reaches the bad endpoint every third request; 5xx are not
	// retried (the default), so only the probes' retries can hide it.
	accrual := "    failureAccrual: {consecutiveFailures: 3, minBackoff: 100ms, maxBackoff: 200ms, jitter: 0}\n"
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("web", 80, "round-robin", accrual, good1.addr, good2.addr, bad.addr))})
	cl := newClient(mp.outbound)
	waitFor(t, "the failing endpoint's ejection", func() bool {
		cl.get("web", "/")
		_, n := mp.endpointState(t, bad.addr)
		return n > 0
	})
	post := func() int {
		req, _ := http.NewRequest(http.MethodPost, "http://"+mp.outbound+"/", strings.NewReader("order"))
		req.Host = "web"
		resp, err := cl.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	hits := bad.hits.Load()
	// GETs and POSTs, mixed at random (strictly alternating, round-robin's
	// turn would bring the endpoint to POSTs alone), for several probations.
	var failedGET, failedPOST, sent int
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end) && sent < 20_000; sent++ {
		if rand.IntN(2) == 0 {
			if resp, _, err := cl.get("web", "/"); err != nil || resp.StatusCode != 200 {
				failedGET++
			}
			continue
		}
		if post() != 200 {
			failedPOST++
		}
	}
	_, ejections := mp.endpointState(t, bad.addr)
	t.Logf("%d requests after the first ejection: %d GETs and %d POSTs failed; %d probes, %d ejections", sent, failedGET, failedPOST, bad.hits.Load()-hits, ejections)
	if bad.hits.Load()-hits < 3 {
		t.Fatalf("the ejected endpoint was probed %d times in 2s with a 100-200ms backoff", bad.hits.Load()-hits)
	}
	if failedGET > 0 {
		t.Errorf("%d GETs failed: a failed probe must be retried elsewhere", failedGET)
	}
	if failedPOST > 0 || posts.Load() > 0 {
		t.Errorf("POSTs reached the endpoint on probation %d times (%d failed): a request that cannot be retried must not probe", posts.Load(), failedPOST)
	}
	if m := mp.metrics(t); !has(m, "retry_total", "authority", "web:80", "reason", "probe_failed") {
		t.Errorf("retried probes are not counted:\n%s", grep(m, "retry_"))
	}

	// With only requests that cannot be retried (a gRPC service's), the
	// endpoint is still probed, a few seconds into its probation, and
	// restored once it answers.
	broken.Store(false)
	deadline := time.Now().Add(20 * time.Second)
	for {
		post()
		if state, _ := mp.endpointState(t, bad.addr); state == "active" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with POSTs alone the repaired endpoint was not restored within 20s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
