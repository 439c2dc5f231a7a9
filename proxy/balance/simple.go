package balance

import (
	"math/rand/v2"
	"sync/atomic"
)

// roundRobin takes endpoints in turn.
type roundRobin struct {
	eps  []*Endpoint
	next *atomic.Uint64
}

func newRoundRobin(eps []*Endpoint) *roundRobin {
	return &roundRobin{eps: eps, next: new(atomic.Uint64)}
}

func (p *roundRobin) Pick(uint64) *Endpoint {
	n := p.next.Add(1) - 1
	return p.eps[n%uint64(len(p.eps))]
}

// random picks uniformly.
type random []*Endpoint

func (p random) Pick(uint64) *Endpoint { return p[rand.IntN(len(p))] }

// twoChoices returns two distinct random indexes below n (n >= 2).
func twoChoices(n int) (int, int) {
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	return i, j
}

// leastRequest is power of two choices over requests in flight: it avoids
// both the herd that "always the least loaded" causes and a scan of every
// endpoint.
type leastRequest []*Endpoint

func (p leastRequest) Pick(uint64) *Endpoint {
	if len(p) == 1 {
		return p[0]
	}
	i, j := twoChoices(len(p))
	if p[j].pending.Load() < p[i].pending.Load() {
		return p[j]
	}
	return p[i]
}

// peakEWMA is power of two choices over peak-EWMA cost (latency times
// requests in flight), the default: it moves traffic away from an endpoint
// as soon as it slows down and back only gradually.
type peakEWMA []*Endpoint

func (p peakEWMA) Pick(uint64) *Endpoint {
	if len(p) == 1 {
		return p[0]
	}
	i, j := twoChoices(len(p))
	if p[j].load() < p[i].load() {
		return p[j]
	}
	return p[i]
}
