package balance

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/meshproj/mesh/discovery"
)

// Picker chooses an endpoint. Pickers are immutable once built and safe for
// concurrent use; hash is only read by consistent-hashing pickers.
type Picker interface {
	// Pick returns an endpoint, or nil when there is none.
	Pick(hash uint64) *Endpoint
}

// snapshot pairs a picker with the endpoints it was built from.
type snapshot struct {
	picker Picker
	// endpoints are all endpoints from discovery, ejected ones included.
	endpoints []*Endpoint
	// changed is closed when the snapshot is replaced, so that a request
	// waiting for an endpoint can wait without a lock.
	changed chan struct{}
}

// Balancer balances one service. Pick is lock-free; Update may run
// concurrently with picks.
type Balancer struct {
	algorithm discovery.LoadBalancer
	current   atomic.Pointer[snapshot]

	mu      sync.Mutex // serialises updates and accrual changes
	byAddr  map[string]*Endpoint
	list    []*Endpoint // discovery order
	accrual Accrual

	// OnEvent, when set before use, is told of every accrual state change.
	// It runs under the balancer's lock and must not call back into it.
	OnEvent func(Event)
}

// New returns a balancer using the named algorithm, with no endpoints.
func New(algorithm discovery.LoadBalancer) (*Balancer, error) {
	if algorithm == "" {
		algorithm = discovery.PeakEWMA
	}
	if !algorithm.Valid() {
		return nil, fmt.Errorf("unknown load balancer %q", algorithm)
	}
	b := &Balancer{algorithm: algorithm, byAddr: map[string]*Endpoint{}, accrual: DefaultAccrual}
	b.current.Store(&snapshot{picker: empty{}, changed: make(chan struct{})})
	return b, nil
}

// Algorithm returns the balancer's algorithm.
func (b *Balancer) Algorithm() discovery.LoadBalancer { return b.algorithm }

// Pick chooses an endpoint for one request or connection, or returns nil
// when the service has no endpoints.
func (b *Balancer) Pick(hash uint64) *Endpoint { return b.current.Load().picker.Pick(hash) }

// Endpoints returns every endpoint from discovery, ejected ones included,
// in discovery order. The slice must not be modified.
func (b *Balancer) Endpoints() []*Endpoint { return b.current.Load().endpoints }

// Changed returns a channel that is closed when the set of endpoints that
// can be picked changes.
func (b *Balancer) Changed() <-chan struct{} { return b.current.Load().changed }

// SetAccrual changes the failure accrual settings. Ejected endpoints keep
// their current backoff.
func (b *Balancer) SetAccrual(a Accrual) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.accrual = a
	if a.Failures == 0 { // disabled: put everyone back
		changed := false
		for _, e := range b.list {
			if e.State() != Active {
				e.state.Store(uint32(Active))
				e.backoff = 0
				if e.probe != nil {
					e.probe.Stop()
				}
				changed = true
			}
		}
		if changed {
			b.rebuild()
		}
	}
}

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
				e.mu.Lock()
				fresh.cost, fresh.stamp = e.cost, e.stamp
				e.mu.Unlock()
				fresh.pending.Store(e.pending.Load())
				fresh.failures.Store(e.failures.Load())
				fresh.state.Store(e.state.Load())
				fresh.backoff, fresh.ejectedUntil, fresh.ejections = e.backoff, e.ejectedUntil, e.ejections
				if e.probe != nil && e.State() == Ejected {
					// Re-arm the probe for the new value.
					e.probe.Stop()
					fresh.state.Store(uint32(Active))
					fresh.backoff = max(0, e.backoff/2)
					b.eject(fresh, b.accrual)
				}
			}
			e = fresh
		}
		next[addr] = e
		list = append(list, e)
	}
	for addr, e := range b.byAddr {
		if _, stays := next[addr]; !stays && e.probe != nil {
			e.probe.Stop()
		}
	}
	b.byAddr = next
	b.list = slices.Clip(list)
	b.rebuild()
}

// rebuild swaps in a picker over the endpoints that may take traffic.
// Must hold b.mu.
func (b *Balancer) rebuild() {
	usable := make([]*Endpoint, 0, len(b.list))
	for _, e := range b.list {
		if e.State() != Ejected {
			usable = append(usable, e)
		}
	}
	old := b.current.Load()
	b.current.Store(&snapshot{picker: build(b.algorithm, usable), endpoints: b.list, changed: make(chan struct{})})
	close(old.changed)
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
