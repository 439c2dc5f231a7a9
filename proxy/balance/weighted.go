package balance

import "sync/atomic"

// maxSchedule bounds the weighted schedule; larger weight sums are scaled
// down, which changes the ratios by at most one slot in maxSchedule.
const maxSchedule = 4096

// weighted spreads requests in proportion to endpoint weights, interleaved
// (smooth weighted round-robin) so that a heavy endpoint does not get its
// whole share in one burst. The schedule is computed once per update; a
// pick is an atomic increment and an index.
type weighted struct {
	schedule []*Endpoint
	next     *atomic.Uint64
}

func newWeighted(eps []*Endpoint) *weighted {
	weights := make([]int64, len(eps))
	var total int64
	for i, e := range eps {
		weights[i] = int64(e.Weight)
		total += weights[i]
	}
	if total > maxSchedule {
		total = 0
		for i := range weights {
			weights[i] = max(1, weights[i]*maxSchedule/int64(sumWeights(eps)))
			total += weights[i]
		}
	}
	schedule := make([]*Endpoint, 0, total)
	current := make([]int64, len(eps))
	for range total {
		best := 0
		for i := range eps {
			current[i] += weights[i]
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		schedule = append(schedule, eps[best])
	}
	return &weighted{schedule: schedule, next: new(atomic.Uint64)}
}

func sumWeights(eps []*Endpoint) uint64 {
	var s uint64
	for _, e := range eps {
		s += uint64(e.Weight)
	}
	return s
}

func (p *weighted) Pick(uint64) *Endpoint {
	n := p.next.Add(1) - 1
	return p.schedule[n%uint64(len(p.schedule))]
}
