package e2e

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestRoundRobinSpreadsRequestsExactlyEvenly(t *testing.T) {
	a, b, c := startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("web", 80, "round-robin", "", a.addr, b.addr, c.addr))})
	cl := newClient(mp.outbound)
	for i := range 300 {
		resp, _, err := cl.get("web", "/")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("request %d: %v %v", i, resp, err)
		}
	}
	for _, be := range []*backend{a, b, c} {
		if n := be.hits.Load(); n != 100 {
			t.Errorf("backend %s served %d of 300 requests, want exactly 100", be.name, n)
		}
	}
}

func TestPeakEWMASendsMostTrafficAwayFromSlowEndpoint(t *testing.T) {
	fast1, fast2, slow := startBackend(t, "fast1"), startBackend(t, "fast2"), startBackend(t, "slow")
	slow.delay.Store(int64(50 * time.Millisecond))
	// No loadBalancer: peak-EWMA is the default.
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("api", 8080, "", "", fast1.addr, fast2.addr, slow.addr))})
	cl := newClient(mp.outbound)

	const workers, perWorker = 8, 75
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	deadline := time.Now().Add(60 * time.Second)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker && time.Now().Before(deadline); i++ {
				resp, _, err := cl.get("api:8080", "/")
				if err != nil || resp.StatusCode != 200 {
					errs <- fmt.Errorf("request failed: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := fast1.hits.Load() + fast2.hits.Load() + slow.hits.Load()
	share := float64(slow.hits.Load()) / float64(total)
	t.Logf("slow endpoint served %d of %d requests (%.1f%%)", slow.hits.Load(), total, 100*share)
	if share > 0.10 {
		t.Errorf("slow endpoint served %.1f%% of requests; peak-EWMA should send the large majority elsewhere", 100*share)
	}
	if fast1.hits.Load() == 0 || fast2.hits.Load() == 0 {
		t.Errorf("a fast endpoint got no traffic: %d, %d", fast1.hits.Load(), fast2.hits.Load())
	}
}

func TestPeakEWMASpreadsSequentialRequestsOverEqualEndpoints(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("api", 8080, "", "", a.addr, b.addr))})
	cl := newClient(mp.outbound)
	// One request at a time, as a client calling its dependency in a loop:
	// the two replicas are equally fast, so neither should take it all.
	const n = 1000
	for i := range n {
		resp, _, err := cl.get("api:8080", "/")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("request %d: %v %v", i, resp, err)
		}
	}
	t.Logf("a served %d, b %d", a.hits.Load(), b.hits.Load())
	for _, be := range []*backend{a, b} {
		if h := be.hits.Load(); h < 400 || h > 600 {
			t.Errorf("backend %s served %d of %d sequential requests; equally fast replicas should share them about evenly", be.name, h, n)
		}
	}
}

func TestRingHashKeepsKeysAndMovesOnlyTheRemovedEndpointsKeys(t *testing.T) {
	backends := []*backend{startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c"), startBackend(t, "d")}
	addrs := func(bs []*backend) []string {
		var out []string
		for _, b := range bs {
			out = append(out, b.addr)
		}
		return out
	}
	hashKey := "    hashKey: {header: x-user}\n"
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("cart", 80, "ring-hash", hashKey, addrs(backends)...))})
	cl := newClient(mp.outbound)

	owner := func(key string) string {
		t.Helper()
		resp, _, err := cl.get("cart", "/", "X-User", key)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("key %s: %v %v", key, resp, err)
		}
		return resp.Header.Get("X-Backend")
	}
	const keys = 200
	before := map[string]string{}
	perBackend := map[string]int{}
	for i := range keys {
		k := fmt.Sprintf("user-%d", i)
		before[k] = owner(k)
		perBackend[before[k]]++
		if again := owner(k); again != before[k] {
			t.Fatalf("key %s went to %s, then to %s", k, before[k], again)
		}
	}
	if len(perBackend) != 4 {
		t.Fatalf("keys landed on %d of 4 endpoints: %v", len(perBackend), perBackend)
	}

	mp.writeDiscovery(t, discoveryFile(service("cart", 80, "ring-hash", hashKey, addrs(backends[:3])...)), 3)
	moved := 0
	for k, was := range before {
		now := owner(k)
		switch {
		case was == "d" && now == "d":
			t.Fatalf("key %s still went to the removed endpoint", k)
		case was != "d" && now != was:
			t.Errorf("key %s moved from %s to %s although its endpoint stayed", k, was, now)
		case was == "d":
			moved++
		}
	}
	t.Logf("%d of %d keys moved (the removed endpoint owned %d)", moved, keys, perBackend["d"])
	if moved > keys/2 {
		t.Errorf("%d of %d keys moved after removing 1 of 4 endpoints", moved, keys)
	}
}
