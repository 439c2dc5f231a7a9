package proxy

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshproj/mesh/proxy/adminapi"
	"github.com/meshproj/mesh/proxy/authz"
)

// This file counts the inbound policy's decisions twice over: in the
// Prometheus counters, and per second over the last windowSeconds, so
// that `mesh authz` shows what was admitted and refused lately from the
// proxy's own numbers. A decision's key is looked up once in a lock-free
// map; its counter and its window are resolved there, so the request path
// hashes no label values.

// verdicts of a decision, as /stats names them.
const (
	verdictAllowed = "allowed"
	verdictDenied  = "denied"
	verdictAudited = "audited" // would have been denied; let through in audit mode
)

type authzKey struct {
	protocol string // http or tcp
	verdict  string
	server   string
	rule     string // the authorization that admitted, or why not
}

// authzCell is one key's counter and window. The window takes no lock: a
// decision made by one core just as another turns its slot to a new
// second may go uncounted there (the Prometheus counter is exact).
type authzCell struct {
	counter prometheus.Counter
	seconds [windowSeconds]struct {
		unix atomic.Int64
		n    atomic.Uint64
	}
}

type authzStats struct {
	cells sync.Map // authzKey -> *authzCell
}

// count records one decision; m resolves the key's Prometheus counter the
// first time it is seen.
func (a *authzStats) count(k authzKey, m func(authzKey) prometheus.Counter) {
	v, ok := a.cells.Load(k)
	if !ok {
		v, _ = a.cells.LoadOrStore(k, &authzCell{counter: m(k)})
	}
	c := v.(*authzCell)
	c.counter.Inc()
	now := time.Now().Unix()
	s := &c.seconds[now%windowSeconds]
	if s.unix.Load() != now && s.unix.Swap(now) != now {
		s.n.Store(0)
	}
	s.n.Add(1)
}

// snapshot sums the last n seconds of every key that saw a decision.
func (a *authzStats) snapshot(n int) []adminapi.AuthzStat {
	n = min(max(n, 1), windowSeconds)
	now := time.Now().Unix()
	var out []adminapi.AuthzStat
	a.cells.Range(func(k, v any) bool {
		key, c := k.(authzKey), v.(*authzCell)
		st := adminapi.AuthzStat{Protocol: key.protocol, Verdict: key.verdict, Server: key.server}
		if key.verdict == verdictAllowed {
			st.Authorization = key.rule
		} else {
			st.Reason = key.rule
		}
		for i := range c.seconds {
			s := &c.seconds[i]
			if u := s.unix.Load(); u > now-int64(n) && u <= now {
				st.Count += s.n.Load()
			}
		}
		if st.Count > 0 {
			out = append(out, st)
		}
		return true
	})
	return out
}

// countDecision counts an inbound policy decision for HTTP ("http") or
// opaque TCP ("tcp").
func (p *Proxy) countDecision(protocol string, d authz.Decision) {
	k := authzKey{protocol: protocol, server: d.Server}
	switch {
	case d.Allowed && !d.Audited:
		k.verdict, k.rule = verdictAllowed, d.Authorization
	case d.Audited:
		k.verdict, k.rule = verdictAudited, d.Reason
	default:
		k.verdict, k.rule = verdictDenied, d.Reason
	}
	p.authzStats.count(k, p.authzCounter)
}

func (p *Proxy) authzCounter(k authzKey) prometheus.Counter {
	audit := "false"
	if k.verdict == verdictAudited {
		audit = "true"
	}
	switch {
	case k.protocol == "http" && k.verdict == verdictAllowed:
		return p.metrics.HTTPAuthzAllow.WithLabelValues(k.server, k.rule)
	case k.protocol == "http":
		return p.metrics.HTTPAuthzDeny.WithLabelValues(k.server, k.rule, audit)
	case k.verdict == verdictAllowed:
		return p.metrics.TCPAuthzAllow.WithLabelValues(k.server, k.rule)
	default:
		return p.metrics.TCPAuthzDeny.WithLabelValues(k.server, k.rule, audit)
	}
}
