package balance

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/meshproj/mesh/discovery"
)

func endpoints(n int, weights ...uint32) []discovery.Endpoint {
	eps := make([]discovery.Endpoint, n)
	for i := range eps {
		eps[i] = discovery.Endpoint{Address: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 8080)}
		if i < len(weights) {
			eps[i].Weight = weights[i]
		}
	}
	return eps
}

func newBalancer(t testing.TB, alg discovery.LoadBalancer, eps []discovery.Endpoint) *Balancer {
	t.Helper()
	b, err := New(alg)
	if err != nil {
		t.Fatal(err)
	}
	b.Update(eps)
	return b
}

func count(b *Balancer, n int, hash func(i int) uint64) map[string]int {
	got := map[string]int{}
	for i := range n {
		got[b.Pick(hash(i)).Addr]++
	}
	return got
}

func noHash(int) uint64 { return 0 }

func TestRoundRobinIsExactlyEven(t *testing.T) {
	b := newBalancer(t, discovery.RoundRobin, endpoints(3))
	got := count(b, 300, noHash)
	for addr, n := range got {
		if n != 100 {
			t.Errorf("%s got %d of 300, want 100", addr, n)
		}
	}
}

func TestWeightedFollowsWeights(t *testing.T) {
	b := newBalancer(t, discovery.Weighted, endpoints(3, 1, 2, 5))
	got := count(b, 800, noHash)
	want := map[string]int{"10.0.0.1:8080": 100, "10.0.0.2:8080": 200, "10.0.0.3:8080": 500}
	for addr, n := range want {
		if got[addr] != n {
			t.Errorf("%s got %d of 800, want %d", addr, got[addr], n)
		}
	}
	// Smooth: the heaviest endpoint never takes more than 3 turns in a row.
	run, longest := 0, 0
	var last *Endpoint
	for range 16 {
		e := b.Pick(0)
		if e == last {
			run++
		} else {
			run = 1
		}
		longest = max(longest, run)
		last = e
	}
	if longest > 3 {
		t.Errorf("weighted schedule has a run of %d picks of one endpoint", longest)
	}
}

func TestRandomAndLeastRequestUseEveryEndpoint(t *testing.T) {
	for _, alg := range []discovery.LoadBalancer{discovery.Random, discovery.LeastRequest, discovery.PeakEWMA} {
		t.Run(string(alg), func(t *testing.T) {
			b := newBalancer(t, alg, endpoints(4))
			got := count(b, 4000, noHash)
			for addr, n := range got {
				if n < 500 {
					t.Errorf("%s got %d of 4000, expected about 1000", addr, n)
				}
			}
			if len(got) != 4 {
				t.Errorf("only %d of 4 endpoints picked: %v", len(got), got)
			}
		})
	}
}

func TestLeastRequestAvoidsBusyEndpoint(t *testing.T) {
	b := newBalancer(t, discovery.LeastRequest, endpoints(3))
	busy := b.Endpoints()[0]
	for range 10 {
		busy.Begin()
	}
	got := count(b, 1000, noHash)
	if got[busy.Addr] != 0 {
		t.Errorf("busy endpoint picked %d times; two choices should always prefer an idle one", got[busy.Addr])
	}
}

func TestPeakEWMAAvoidsSlowEndpoint(t *testing.T) {
	b := newBalancer(t, discovery.PeakEWMA, endpoints(3))
	slow := b.Endpoints()[2]
	// One slow observation is enough: the peak is taken at once.
	slow.mu.Lock()
	slow.update(float64(80*time.Millisecond), now())
	slow.mu.Unlock()
	for _, e := range b.Endpoints()[:2] {
		e.mu.Lock()
		e.update(float64(time.Millisecond), now())
		e.mu.Unlock()
	}
	got := count(b, 1000, noHash)
	if got[slow.Addr] > 0 {
		t.Errorf("slow endpoint picked %d of 1000 times", got[slow.Addr])
	}
}

// sequential sends n requests one after another on a clock of its own,
// each endpoint answering in its latency with up to ±10% jitter and now and
// then a millisecond more, and counts where they went.
func sequential(t *testing.T, b *Balancer, n int, latency func(e *Endpoint) time.Duration) map[string]int {
	real := now
	t.Cleanup(func() { now = real })
	clock := real()
	now = func() int64 { return clock }
	// Start warm, each estimate at the endpoint's own latency, as after a
	// while in service (not at defaultRTT, which new endpoints share).
	for _, e := range b.Endpoints() {
		e.mu.Lock()
		e.cost, e.stamp = float64(latency(e)), clock
		e.mu.Unlock()
	}
	got := map[string]int{}
	for range n {
		e := b.Pick(0)
		got[e.Addr]++
		start := e.Begin()
		rtt := time.Duration(float64(latency(e)) * (0.9 + 0.2*rand.Float64()))
		if rand.IntN(100) < 2 {
			rtt += time.Millisecond // a hiccup: the scheduler, a collection
		}
		clock += int64(rtt)
		e.Observe(start)
		e.Done()
	}
	return got
}

func TestPeakEWMASpreadsEvenlyOverEquallyFastEndpoints(t *testing.T) {
	for _, c := range []struct {
		replicas int
		latency  time.Duration
	}{{2, 100 * time.Microsecond}, {2, time.Millisecond}, {3, 5 * time.Millisecond}} {
		b := newBalancer(t, discovery.PeakEWMA, endpoints(c.replicas))
		const n = 3000
		// Each replica a hair (2%) slower than the one before: noise, on
		// a real network, that must not decide where everything goes.
		hair := map[*Endpoint]float64{}
		for i, e := range b.Endpoints() {
			hair[e] = 1 + 0.02*float64(i)
		}
		got := sequential(t, b, n, func(e *Endpoint) time.Duration { return time.Duration(float64(c.latency) * hair[e]) })
		even := n / c.replicas
		for _, e := range b.Endpoints() {
			if d := got[e.Addr] - even; d < -even*15/100 || d > even*15/100 {
				t.Errorf("%d replicas answering in %v, one request at a time: %v; want each within 15%% of %d", c.replicas, c.latency, got, even)
				break
			}
		}
	}
}

func TestPeakEWMAMovesTrafficOffAMuchSlowerEndpoint(t *testing.T) {
	b := newBalancer(t, discovery.PeakEWMA, endpoints(2))
	slow := b.Endpoints()[1]
	got := sequential(t, b, 2000, func(e *Endpoint) time.Duration {
		if e == slow {
			return 51 * time.Millisecond
		}
		return time.Millisecond
	})
	if got[slow.Addr] > 20 {
		t.Errorf("an endpoint 50ms slower than its sibling took %d of 2000 requests", got[slow.Addr])
	}
}

func TestEWMADecaysWithoutObservations(t *testing.T) {
	e := NewEndpoint(endpoints(1)[0])
	e.mu.Lock()
	e.cost = float64(100 * time.Millisecond)
	e.stamp = now() - int64(3*ewmaDecay)
	e.mu.Unlock()
	if l := e.Latency(); l > 10*time.Millisecond {
		t.Errorf("latency after three decay periods = %v, want about 5ms", l)
	}
}

func TestUpdateKeepsEndpointState(t *testing.T) {
	b := newBalancer(t, discovery.LeastRequest, endpoints(2))
	first := b.Endpoints()[0]
	first.Begin()
	b.Update(endpoints(3))
	if b.Endpoints()[0] != first || first.Pending() != 1 {
		t.Fatal("endpoint that stayed in discovery lost its state")
	}
	b.Update(nil)
	if b.Pick(0) != nil {
		t.Fatal("picked an endpoint from an empty set")
	}
}

func TestRingHashKeepsKeysAndMovesFewOnRemoval(t *testing.T) {
	testConsistentHash(t, discovery.RingHash)
}

func TestMaglevKeepsKeysAndMovesFewOnRemoval(t *testing.T) {
	testConsistentHash(t, discovery.Maglev)
}

func testConsistentHash(t *testing.T, alg discovery.LoadBalancer) {
	const n, keys = 5, 10000
	b := newBalancer(t, alg, endpoints(n))
	key := func(i int) uint64 { return HashString(fmt.Sprintf("user-%d", i)) }
	before := make([]string, keys)
	spread := map[string]int{}
	for i := range before {
		before[i] = b.Pick(key(i)).Addr
		spread[before[i]]++
		if again := b.Pick(key(i)).Addr; again != before[i] {
			t.Fatalf("key %d went to %s then %s", i, before[i], again)
		}
	}
	for addr, c := range spread {
		if c < keys/n/2 || c > keys/n*2 {
			t.Errorf("%s owns %d of %d keys; want about %d", addr, c, keys, keys/n)
		}
	}
	b.Update(endpoints(n - 1)) // removes 10.0.0.5
	moved := 0
	for i := range before {
		if b.Pick(key(i)).Addr != before[i] {
			moved++
		}
	}
	// Only the removed endpoint's keys (about 1/n) should move; allow slack.
	if limit := keys / n * 3 / 2; moved > limit {
		t.Errorf("%d of %d keys moved after removing 1 of %d endpoints; want about %d", moved, keys, n, keys/n)
	}
	if moved < keys/n/2 {
		t.Errorf("only %d keys moved; the removed endpoint owned about %d", moved, keys/n)
	}
}

func TestPickAllocatesNothing(t *testing.T) {
	for _, alg := range discovery.LoadBalancers {
		b := newBalancer(t, alg, endpoints(5, 1, 2, 3, 4, 5))
		allocs := testing.AllocsPerRun(1000, func() {
			e := b.Pick(12345)
			start := e.Begin()
			e.Observe(start)
			e.Done()
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per pick", alg, allocs)
		}
	}
}

func TestUnknownAlgorithm(t *testing.T) {
	if _, err := New("fastest"); err == nil {
		t.Fatal("no error for an unknown algorithm")
	}
}

func BenchmarkPick(b *testing.B) {
	for _, alg := range discovery.LoadBalancers {
		b.Run(string(alg), func(b *testing.B) {
			bal := newBalancer(b, alg, endpoints(10))
			b.ResetTimer()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				var h uint64
				for pb.Next() {
					h += 0x9e3779b97f4a7c15
					e := bal.Pick(h)
					start := e.Begin()
					e.Observe(start)
					e.Done()
				}
			})
		})
	}
}
