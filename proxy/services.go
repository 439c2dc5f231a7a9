package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/proxy/balance"
)

// service is what the proxy keeps per service port: its settings, its
// balancer and the HTTP forwarder bound to both.
// A service value lives as long as its key and algorithm stay in discovery;
// its settings are swapped atomically on updates.
type service struct {
	settings  atomic.Pointer[discovery.Service]
	policy    atomic.Pointer[policy]
	routes    atomic.Pointer[routeTable] // nil: every request goes to the service
	key       discovery.Key              // the service's own, not an alias
	authority string
	balancer  *balance.Balancer
	forward   http.Handler
	// used is when a lookup last found the service (Unix nanoseconds, to
	// a tenth of a second): an on-demand backend is told to forget
	// services unused for Config.DiscoveryIdle.
	used atomic.Int64
}

// markUsed notes a use, writing at most ten times a second so that
// requests on several cores do not contend for the line.
func (s *service) markUsed(now time.Time) {
	if n := now.UnixNano(); n-s.used.Load() >= int64(100*time.Millisecond) {
		s.used.Store(n)
	}
}

// serviceTable is an immutable view of all services, swapped whole on each
// discovery update so that lookups need no lock.
type serviceTable struct {
	byKey map[discovery.Key]*service
	// byVIP finds a service by virtual IP and port, for intercepted traffic.
	byVIP map[netip.AddrPort]*service
}

func (t *serviceTable) portsOf(host string) []uint16 {
	var ports []uint16
	for k := range t.byKey {
		if k.Host == host {
			ports = append(ports, k.Port)
		}
	}
	slices.Sort(ports)
	return ports
}

// onDemandWait bounds how long a request waits for an on-demand backend
// to learn of a service it has not needed before.
const onDemandWait = 3 * time.Second

// lookup finds a service and explains a miss. An on-demand backend is
// asked for a service the proxy does not know yet.
func (p *Proxy) lookup(ctx context.Context, key discovery.Key) (*service, error) {
	t := p.services.Load()
	if s, ok := t.byKey[key]; ok {
		s.markUsed(time.Now())
		return s, nil
	}
	if p.onDemand != nil {
		ctx, cancel := context.WithTimeout(ctx, onDemandWait)
		err := p.onDemand.Want(ctx, key)
		cancel()
		t = p.services.Load()
		if s, ok := t.byKey[key]; ok && err == nil {
			return s, nil
		}
		if err != nil {
			return nil, fmt.Errorf("unknown service %s: %w", key, err)
		}
	}
	if ports := t.portsOf(key.Host); len(ports) > 0 {
		ps := make([]string, len(ports))
		for i, port := range ports {
			ps[i] = strconv.Itoa(int(port))
		}
		return nil, fmt.Errorf("service %s has no port %d (it has %s)", key.Host, key.Port, strings.Join(ps, ", "))
	}
	return nil, fmt.Errorf("unknown service %s: not in discovery (%s)", key, p.discoverySource())
}

// vip finds the service with a virtual IP and port, asking an on-demand
// backend if the proxy does not know it yet; nil if there is none.
func (p *Proxy) vip(ctx context.Context, dst netip.AddrPort) *service {
	if s := p.services.Load().byVIP[dst]; s != nil {
		s.markUsed(time.Now())
		return s
	}
	if p.onDemand != nil && dst.IsValid() {
		ctx, cancel := context.WithTimeout(ctx, onDemandWait)
		defer cancel()
		if err := p.onDemand.WantAddr(ctx, dst); err == nil {
			return p.services.Load().byVIP[dst]
		} else if !errors.Is(err, discovery.ErrNotFound) {
			p.log.Warn("no discovery answer for an intercepted destination; forwarding it as addressed",
				slog.String("destination", dst.String()), slog.Any("error", err))
		}
	}
	return nil
}

func (p *Proxy) discoverySource() string {
	if s := p.discState.Load(); s != nil {
		return s.Source
	}
	return "no state yet"
}

// apply installs a new discovery state. Services and endpoints that stay
// keep their balancer state; removed ones disappear from new lookups while
// requests already holding them finish. Where the state names what
// changed, the services it does not name are kept as they are, so one
// endpoint's change costs the proxy that service's update and a new table
// of pointers.
func (p *Proxy) apply(s discovery.State) {
	old := p.services.Load()
	next := &serviceTable{byKey: make(map[discovery.Key]*service, len(s.Services)), byVIP: map[netip.AddrPort]*service{}}
	endpoints := 0
	for i := range s.Services {
		d := &s.Services[i]
		key := d.Key()
		svc, ok := old.byKey[key]
		if !ok || !svc.same(key, d, s.Changed) {
			if svc = p.build(d, svc); svc == nil {
				continue
			}
		}
		next.byKey[key] = svc
		for _, alias := range d.Aliases {
			next.byKey[discovery.Key{Host: strings.ToLower(alias), Port: d.Port}] = svc
		}
		for _, ip := range d.Addresses {
			next.byVIP[netip.AddrPortFrom(ip, d.Port)] = svc
		}
		endpoints += len(d.Endpoints)
	}
	p.services.Store(next)
	p.applyPolicy(&s)
	p.discState.Store(&s)
	p.metrics.DiscoveryUpdates.Inc()
	p.metrics.DiscoveryServices.Set(float64(len(s.Services)))
	p.metrics.DiscoveryEndpoints.Set(float64(endpoints))
	p.log.Debug("discovery applied", slog.String("source", s.Source), slog.String("revision", s.Revision),
		slog.Int("services", len(s.Services)), slog.Int("endpoints", endpoints))
}

// same says the backend vouches that a service is as the proxy built it:
// it is not among the state's changes, and its algorithm is the one built.
func (svc *service) same(key discovery.Key, d *discovery.Service, changed map[discovery.Key]bool) bool {
	return changed != nil && !changed[key] && svc.key == key && svc.balancer.Algorithm() == d.LoadBalancer
}

// build brings a service up to date with discovery, reusing what the proxy
// has of it (nil: none), or makes a new one; nil if it cannot. It keeps a
// copy of d.
func (p *Proxy) build(in *discovery.Service, svc *service) *service {
	d := new(discovery.Service)
	*d = *in
	key := d.Key()
	if svc == nil || svc.balancer.Algorithm() != d.LoadBalancer {
		b, err := balance.New(d.LoadBalancer)
		if err != nil { // validated by the backend; keep serving the rest
			p.log.Error("discovery: skipping service", slog.String("service", key.String()), slog.Any("error", err))
			return nil
		}
		svc = &service{key: key, authority: key.String(), balancer: b}
		svc.used.Store(time.Now().UnixNano())
		svc.forward = p.newForwarder(outbound, &balancingTransport{p: p, svc: svc})
		b.OnEvent = p.endpointEvent(svc.authority)
	}
	for _, e := range d.Endpoints {
		if e.Identity == "" {
			continue
		}
		addr := e.Address.String()
		if old, ok := p.meshIDs.Swap(addr, e.Identity); ok && old != e.Identity {
			// Pooled connections were verified for the old identity.
			p.closeIdleMesh()
		}
	}
	svc.settings.Store(d)
	svc.policy.Store(newPolicy(d, svc.policy.Load()))
	svc.routes.Store(newRouteTable(d.Routes, svc.routes.Load()))
	svc.balancer.SetAccrual(accrualOf(d))
	svc.balancer.Update(d.Endpoints)
	return svc
}

// releaseIdle tells an on-demand backend, every quarter of the idle
// period, which services no lookup has found for that long. A request
// that comes for one later subscribes again and waits for it, as the
// first did.
func (p *Proxy) releaseIdle(ctx context.Context, r discovery.Releaser, idle time.Duration) {
	t := time.NewTicker(idle / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			var keys []discovery.Key
			for _, svc := range p.services.Load().primaries() {
				if now.UnixNano()-svc.used.Load() > int64(idle) {
					keys = append(keys, svc.key)
				}
			}
			if len(keys) > 0 {
				p.log.Debug("discovery: releasing services unused for a while", slog.Int("services", len(keys)), slog.Duration("idle", idle))
				r.Release(keys)
			}
		}
	}
}

// primaries are the services once each, however many names they have.
func (t *serviceTable) primaries() []*service {
	out := make([]*service, 0, len(t.byKey))
	for k, s := range t.byKey {
		if s.key == k {
			out = append(out, s)
		}
	}
	return out
}

// sortedServices returns the services in a stable order, for dumps.
func (t *serviceTable) sorted() []*service {
	out := make([]*service, 0, len(t.byKey))
	for _, s := range t.byKey {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].authority < out[j].authority })
	return out
}

var _ http.RoundTripper = (*balancingTransport)(nil)
