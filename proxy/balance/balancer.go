package balance

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/meshproj/mesh/proxy/discovery"
)

// Picker chooses an endpoint. Pickers are immutable once built and safe for
// concurrent use; hash is only read by consistent-hashing pickers.
type Picker interface {
	// Pick returns an endpoint, or nil when there is none.
	Pick(hash uint64) *Endpoint
}

// snapshot pairs a picker with the endpoints it was built from.
type snapshot struct {
	picker    Picker
	endpoints []*Endpoint
}

// Balancer balances one service. Pick is lock-free; Update may run
// concurrently with picks.
type Balancer struct {
	algorithm discovery.LoadBalancer
	current   atomic.Pointer[snapshot]

	mu     sync.Mutex // serialises updates
	byAddr map[string]*Endpoint
}

// New returns a balancer using the named algorithm, with no endpoints.
func New(algorithm discovery.LoadBalancer) (*Balancer, error) {
	if algorithm == "" {
		algorithm = discovery.PeakEWMA
	}
	if !algorithm.Valid() {
		return nil, fmt.Errorf("unknown load balancer %q", algorithm)
	}
	b := &Balancer{algorithm: algorithm, byAddr: map[string]*Endpoint{}}
	b.current.Store(&snapshot{picker: empty{}})
	return b, nil
}

// Algorithm returns the balancer's algorithm.
func (b *Balancer) Algorithm() discovery.LoadBalancer { return b.algorithm }

// Pick chooses an endpoint for one request or connection, or returns nil
// when the service has no endpoints.
func (b *Balancer) Pick(hash uint64) *Endpoint { return b.current.Load().picker.Pick(hash) }

// Endpoints returns the endpoints of the current snapshot, in discovery
// order. The slice must not be modified.
func (b *Balancer) Endpoints() []*Endpoint { return b.current.Load().endpoints }

// Update replaces the endpoint set. Endpoints whose address stays keep
// their state; requests already holding a removed endpoint finish normally.
func (b *Balancer) Update(eps []discovery.Endpoint) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := now()
	next := make(map[string]*Endpoint, len(eps))
	list := make([]*Endpoint, 0, len(eps))
	for _, d := range eps {
		addr := d.Address.String()
		if _, dup := next[addr]; dup {
			continue
		}
		e, ok := b.byAddr[addr]
		if !ok || e.Weight != weightOf(d) || e.Identity != d.Identity || e.Zone != d.Zone {
			fresh := newEndpointAt(d, t)
			if ok { // same address, new metadata: keep what was learnt
				fresh.cost, fresh.stamp = e.cost, e.stamp
				fresh.pending.Store(e.pending.Load())
			}
			e = fresh
		}
		next[addr] = e
		list = append(list, e)
	}
	b.byAddr = next
	b.current.Store(&snapshot{picker: build(b.algorithm, list), endpoints: slices.Clip(list)})
}

func weightOf(d discovery.Endpoint) uint32 {
	if d.Weight == 0 {
		return 1
	}
	return d.Weight
}

// build makes the picker for an algorithm over a fixed endpoint list.
func build(alg discovery.LoadBalancer, eps []*Endpoint) Picker {
	if len(eps) == 0 {
		return empty{}
	}
	switch alg {
	case discovery.RoundRobin:
		return newRoundRobin(eps)
	case discovery.Random:
		return random(eps)
	case discovery.LeastRequest:
		return leastRequest(eps)
	case discovery.Weighted:
		return newWeighted(eps)
	case discovery.RingHash:
		return newRing(eps)
	case discovery.Maglev:
		return newMaglev(eps)
	default:
		return peakEWMA(eps)
	}
}

type empty struct{}

func (empty) Pick(uint64) *Endpoint { return nil }
