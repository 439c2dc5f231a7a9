package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshproj/mesh/discovery"
)

// demandBackend is an on-demand discovery backend over a fixed catalog:
// a service is delivered once asked for, until released.
type demandBackend struct {
	mu         sync.Mutex
	catalog    map[discovery.Key]discovery.Service
	subscribed map[discovery.Key]bool
	update     func(discovery.State)
	wants      []discovery.Key
	releases   []discovery.Key
}

func (d *demandBackend) Run(ctx context.Context, update func(discovery.State)) error {
	d.mu.Lock()
	d.update = update
	d.deliverLocked(nil)
	d.mu.Unlock()
	<-ctx.Done()
	return nil
}

func (d *demandBackend) deliverLocked(changed []discovery.Key) {
	st := discovery.State{Source: "test on demand", Changed: map[discovery.Key]bool{}}
	for _, k := range changed {
		st.Changed[k] = true
	}
	for k := range d.subscribed {
		st.Services = append(st.Services, d.catalog[k])
	}
	d.update(st)
}

func (d *demandBackend) Want(_ context.Context, k discovery.Key) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.catalog[k]; !ok {
		return fmt.Errorf("%w: %s", discovery.ErrNotFound, k)
	}
	if !d.subscribed[k] {
		d.subscribed[k] = true
		d.wants = append(d.wants, k)
		d.deliverLocked([]discovery.Key{k})
	}
	return nil
}

func (d *demandBackend) WantAddr(context.Context, netip.AddrPort) error {
	return discovery.ErrNotFound
}

func (d *demandBackend) Release(keys []discovery.Key) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, k := range keys {
		delete(d.subscribed, k)
	}
	d.releases = append(d.releases, keys...)
	d.deliverLocked(keys)
}

func (d *demandBackend) counts() (wants, releases int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.wants), len(d.releases)
}

// TestIdleServicesAreReleasedAndComeBack: a service no request uses for
// the idle period is released; the next request for it subscribes again
// and succeeds, as the first one did.
func TestIdleServicesAreReleasedAndComeBack(t *testing.T) {
	app := startHelloBackend(t)
	web := discovery.Key{Host: "web", Port: 80}
	api := discovery.Key{Host: "api", Port: 80}
	d := &demandBackend{subscribed: map[discovery.Key]bool{}, catalog: map[discovery.Key]discovery.Service{
		web: {Name: "web", Port: 80, LoadBalancer: discovery.RoundRobin, Endpoints: []discovery.Endpoint{{Address: netip.MustParseAddrPort(app)}}},
		api: {Name: "api", Port: 80, LoadBalancer: discovery.RoundRobin, Endpoints: []discovery.Endpoint{{Address: netip.MustParseAddrPort(app)}}},
	}}
	const idle = time.Second
	p := runWeb(t, app, func(c *Config) { c.Discovery, c.DiscoveryIdle = d, idle })
	out := p.OutboundAddr().String()
	get := func(host string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+out+"/", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s", host, resp.Status)
		}
	}
	get("web")
	get("api")
	// web stays in use past the idle period; api does not.
	for end := time.Now().Add(2 * idle); time.Now().Before(end); time.Sleep(idle / 10) {
		get("web")
	}
	d.mu.Lock()
	releases := slices.Clone(d.releases)
	d.mu.Unlock()
	if !slices.Contains(releases, api) || slices.Contains(releases, web) {
		t.Fatalf("released %v after %s with web in use and api not, want api alone", releases, 2*idle)
	}
	if _, ok := p.services.Load().byKey[api]; ok {
		t.Fatal("api is still in the proxy's table after its release")
	}
	get("api")
	if wants, _ := d.counts(); wants != 3 {
		t.Errorf("%d subscriptions, want web once and api twice", wants)
	}
}

// BenchmarkDiscoveryChange is the proxy's cost of one service's change
// while it holds many: with the backend naming what changed, and without.
func BenchmarkDiscoveryChange(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		services := make([]discovery.Service, n)
		for i := range services {
			s := discovery.Service{Name: fmt.Sprintf("s%d.shop.svc.cluster.local", i), Port: 80, LoadBalancer: discovery.PeakEWMA}
			for j := range 10 {
				s.Endpoints = append(s.Endpoints, discovery.Endpoint{Address: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), byte(j)}), 8080), Weight: 1})
			}
			services[i] = s
		}
		for _, named := range []bool{true, false} {
			b.Run(fmt.Sprintf("services=%d/changed-named=%t", n, named), func(b *testing.B) {
				p, err := New(Config{OutboundAddr: "127.0.0.1:0", InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
					Discovery: staticDiscovery{}, Log: slog.New(slog.DiscardHandler)})
				if err != nil {
					b.Fatal(err)
				}
				defer p.closeAll()
				p.apply(discovery.State{Services: services})
				b.ReportAllocs()
				s := services // changed in place: apply copies what it keeps
				for i := 0; b.Loop(); i++ {
					k := i % n
					eps := slices.Clone(s[k].Endpoints)
					eps[0].Weight = uint32(i%7 + 1)
					s[k].Endpoints = eps
					st := discovery.State{Services: s}
					if named {
						st.Changed = map[discovery.Key]bool{s[k].Key(): true}
					}
					p.apply(st)
				}
			})
		}
	}
}
