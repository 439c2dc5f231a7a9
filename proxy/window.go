package proxy

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshproj/mesh/proxy/adminapi"
	"github.com/meshproj/mesh/proxy/metrics"
)

// This file keeps a short memory of recent traffic: per-second aggregates
// for the last windowSeconds, so that `mesh stat` answers at once from the
// proxy's own numbers instead of waiting for a scrape interval.

const windowSeconds = 60

// statKey is what traffic is grouped by: direction, the service authority,
// the peer's identity (client_id inbound, server_id outbound) and the
// route that sent it (outbound, where a service has routes).
type statKey struct {
	direction direction
	authority string
	peer      string
	route     string
}

// second is one second of traffic for one key.
type second struct {
	unix      int64
	requests  uint64
	successes uint64
	latency   [len(metrics.LatencyBucketsMS) + 1]uint32 // counts per bucket; the last is +Inf
}

// cell is one key's window. Each key has its own lock: requests for
// different services never contend.
type cell struct {
	mu      sync.Mutex
	seconds [windowSeconds]second
}

// window holds every key's cell. Keys are few and long-lived, so the map
// is read-mostly and lock-free on the request path.
type window struct {
	cells sync.Map // statKey -> *cell
	// open connections now, by direction
	open [2]atomic.Int64
}

func (w *window) record(d direction, authority, peer, route string, latency time.Duration, success bool) {
	key := statKey{direction: d, authority: authority, peer: peer, route: route}
	v, ok := w.cells.Load(key)
	if !ok {
		v, _ = w.cells.LoadOrStore(key, &cell{})
	}
	c := v.(*cell)
	now := time.Now().Unix()
	ms := float64(latency) / float64(time.Millisecond)
	b := len(metrics.LatencyBucketsMS)
	for i, bound := range &metrics.LatencyBucketsMS {
		if ms <= bound {
			b = i
			break
		}
	}
	c.mu.Lock()
	s := &c.seconds[now%windowSeconds]
	if s.unix != now {
		*s = second{unix: now}
	}
	s.requests++
	if success {
		s.successes++
	}
	s.latency[b]++
	c.mu.Unlock()
}

// snapshot sums the last n complete-or-current seconds of every key.
func (w *window) snapshot(n int) []adminapi.WindowStat {
	n = min(max(n, 1), windowSeconds)
	now := time.Now().Unix()
	var out []adminapi.WindowStat
	w.cells.Range(func(k, v any) bool {
		key, c := k.(statKey), v.(*cell)
		st := adminapi.WindowStat{Direction: key.direction.String(), Authority: key.authority, Peer: key.peer, Route: key.route,
			Latency: make([]uint64, len(metrics.LatencyBucketsMS)+1)}
		c.mu.Lock()
		for i := range c.seconds {
			s := &c.seconds[i]
			if s.unix <= now-int64(n) || s.unix > now {
				continue
			}
			st.Requests += s.requests
			st.Successes += s.successes
			for j, l := range s.latency {
				st.Latency[j] += uint64(l)
			}
		}
		c.mu.Unlock()
		if st.Requests > 0 {
			out = append(out, st)
		}
		return true
	})
	return out
}
