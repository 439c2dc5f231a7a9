package balance

import (
	"math/rand/v2"
	"sync/atomic"
	"time"
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
//
// Endpoints whose costs are within noise of each other share the traffic:
// a strict "lower cost wins" would send every request to whichever of two
// equally fast replicas happened to be measured a hair faster, since the
// one not picked gets no new observations (at one request in flight, 200
// sequential requests all went to one replica). So each cost has
// noiseFloor added, and when the higher is less than twice the lower the
// pick is random, leaning towards the lower the further apart they are;
// from twice on, the lower always wins.
type peakEWMA []*Endpoint

// noiseFloor is the latency below which differences between endpoints are
// taken as noise (scheduling, the network stack), not as one being slower.
const noiseFloor = float64(time.Millisecond)

func (p peakEWMA) Pick(uint64) *Endpoint {
	if len(p) == 1 {
		return p[0]
	}
	i, j := twoChoices(len(p))
	lo, hi := p[i], p[j]
	a, b := lo.load(noiseFloor), hi.load(noiseFloor)
	if b < a {
		lo, hi, a, b = hi, lo, b, a
	}
	// The higher's chance falls from one half (equal) to none (twice the lower).
	if r := b / a; r < 2 && rand.Float64() < (2-r)/2 {
		return hi
	}
	return lo
}
