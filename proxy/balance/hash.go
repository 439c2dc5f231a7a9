package balance

import (
	"net/netip"
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// HashString hashes a request key (header or cookie value). Every proxy
// uses the same function, so a key lands on the same endpoint whichever
// client proxy sends it.
func HashString(s string) uint64 { return xxhash.Sum64String(s) }

// HashAddr hashes a client IP address.
func HashAddr(a netip.Addr) uint64 {
	b := a.Unmap().As16()
	return xxhash.Sum64(b[:])
}

// Ring sizing. Each endpoint owns pointsPerWeight points per unit of weight,
// a number that depends on nothing else, so adding or removing one endpoint
// leaves every other endpoint's points where they were. maxRingSize bounds
// memory when weights are large.
const (
	pointsPerWeight = 256
	maxRingSize     = 1 << 17
)

type ringPoint struct {
	hash uint64
	ep   *Endpoint
}

// ring is consistent hashing on a hash ring (ketama): each endpoint owns
// points in proportion to its weight, and a key goes to the first point at
// or after its hash. Removing one of N endpoints moves only the keys that
// endpoint owned, about 1/N of them.
type ring []ringPoint

func newRing(eps []*Endpoint) ring {
	per := uint64(pointsPerWeight)
	if total := sumWeights(eps) * per; total > maxRingSize {
		per = max(1, maxRingSize/sumWeights(eps))
	}
	r := make(ring, 0, per*sumWeights(eps))
	buf := make([]byte, 0, 64)
	for _, e := range eps {
		n := per * uint64(e.Weight)
		for i := range n {
			buf = append(buf[:0], e.Addr...)
			buf = append(buf, '-')
			buf = strconv.AppendUint(buf, i, 10)
			r = append(r, ringPoint{hash: xxhash.Sum64(buf), ep: e})
		}
	}
	slices.SortFunc(r, func(a, b ringPoint) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return 0
	})
	return r
}

func (r ring) Pick(hash uint64) *Endpoint {
	lo, hi := 0, len(r)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if r[mid].hash < hash {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == len(r) {
		lo = 0
	}
	return r[lo].ep
}

// maglevSize is the lookup table size; it must be prime and much larger
// than the number of endpoints for an even spread.
const maglevSize = 65537

// maglev is Google's Maglev consistent hashing: a fixed-size table filled
// from each endpoint's permutation of the slots. Picks are one index; an
// endpoint's removal disturbs few entries beyond its own.
type maglev []*Endpoint

func newMaglev(eps []*Endpoint) maglev {
	n := len(eps)
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	next := make([]uint64, n)
	credit := make([]float64, n)
	var maxW uint32
	for i, e := range eps {
		offset[i] = xxhash.Sum64String(e.Addr) % maglevSize
		skip[i] = xxhash.Sum64String(e.Addr+"#skip")%(maglevSize-1) + 1
		maxW = max(maxW, e.Weight)
	}
	table := make(maglev, maglevSize)
	filled := 0
	for filled < maglevSize {
		for i, e := range eps {
			// Weighted Maglev: an endpoint takes a turn each time its
			// accumulated share of the heaviest endpoint's weight reaches one.
			credit[i] += float64(e.Weight) / float64(maxW)
			if credit[i] < 1 {
				continue
			}
			credit[i]--
			for {
				slot := (offset[i] + next[i]*skip[i]) % maglevSize
				next[i]++
				if table[slot] == nil {
					table[slot] = e
					filled++
					break
				}
			}
			if filled == maglevSize {
				break
			}
		}
	}
	return table
}

func (m maglev) Pick(hash uint64) *Endpoint { return m[hash%maglevSize] }
