package proxy

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/internal/httpserve"
	"github.com/meshproj/mesh/proxy/adminapi"
	"github.com/meshproj/mesh/proxy/balance"
	"github.com/meshproj/mesh/proxy/connlimit"
	"github.com/meshproj/mesh/proxy/metrics"
)

// newAdmin builds the admin server. /metrics, /ready and /live answer
// anyone (the kubelet and Prometheus reach them over the pod network);
// /config_dump and /shutdown only loopback clients, which off the pod means
// kubectl port-forward, guarded by Kubernetes RBAC.
func (p *Proxy) newAdmin() *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("live\n"))
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case p.draining.Load():
			http.Error(w, "draining", http.StatusServiceUnavailable)
		case !p.ready.Load():
			http.Error(w, "not ready: waiting for discovery", http.StatusServiceUnavailable)
		default:
			w.Write([]byte("ready\n"))
		}
	})
	mux.Handle("GET /config_dump", loopbackOnly(http.HandlerFunc(p.serveConfigDump)))
	mux.HandleFunc("GET /stats", p.serveStats)
	mux.Handle("GET /tap", loopbackOnly(http.HandlerFunc(p.serveTap)))
	// Profiles, for finding what a proxy spends its time and memory on.
	mux.Handle("GET /debug/pprof/", loopbackOnly(http.HandlerFunc(pprof.Index)))
	mux.Handle("GET /debug/pprof/profile", loopbackOnly(http.HandlerFunc(pprof.Profile)))
	mux.Handle("GET /debug/pprof/trace", loopbackOnly(http.HandlerFunc(pprof.Trace)))
	mux.Handle("POST /shutdown", loopbackOnly(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("shutting down\n"))
		p.Shutdown()
	})))
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: p.cfg.ClientIdleTimeout,
		ConnState: connlimit.FollowHTTP}
}

// loopbackOnly keeps an endpoint to clients on this host.
var loopbackOnly = httpserve.LoopbackOnly

// serveStats answers /stats?seconds=N (default 10) from the rolling window.
func (p *Proxy) serveStats(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("seconds"))
	if err != nil || n <= 0 {
		n = 10
	}
	n = min(n, windowSeconds)
	st := adminapi.Stats{WindowSeconds: n, LatencyBuckets: metrics.LatencyBucketsMS[:], Labels: p.cfg.Labels,
		OpenConnections: map[string]int64{"inbound": p.window.open[inbound].Load(), "outbound": p.window.open[outbound].Load()},
		Stats:           p.window.snapshot(n), Authz: p.authzStats.snapshot(n)}
	if st.Stats == nil {
		st.Stats = []adminapi.WindowStat{}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(st)
}

// Dump returns the proxy's current state.
func (p *Proxy) Dump() adminapi.ConfigDump {
	d := adminapi.ConfigDump{Ready: p.ready.Load(), Draining: p.draining.Load(), Cores: runtime.GOMAXPROCS(0), Services: []adminapi.ServiceDump{}}
	if id := p.cfg.Identity; id != nil {
		d.Identity = &adminapi.IdentityDump{ID: id.ID.String(), NotAfter: id.Expiry(), Renewals: id.Renewals.Load(), Failures: id.Failures.Load()}
		if c := id.Certificate(); c != nil {
			d.Identity.NotBefore = c.Leaf.NotBefore
		}
	}
	if s := p.discState.Load(); s != nil {
		d.Discovery = adminapi.DiscoveryDump{Source: s.Source, Revision: s.Revision, Updated: s.Updated}
	}
	d.InboundPolicy = p.authz.Load().Source()
	if r, ok := p.cfg.Discovery.(discovery.StatusReporter); ok {
		d.Discovery.Backend = r.Status()
	}
	d.Listeners = adminapi.ListenerDump{
		Outbound: p.outboundLn.Addr().String(), Inbound: p.inboundLn.Addr().String(), Admin: p.adminLn.Addr().String(),
		InboundForward: p.cfg.InboundForward, OpaquePorts: p.cfg.OpaquePorts,
	}
	for _, l := range p.tcpLns {
		if d.Listeners.OutboundTCP == nil {
			d.Listeners.OutboundTCP = map[string]string{}
		}
		d.Listeners.OutboundTCP[l.Addr().String()] = l.fwd.Service.String()
	}
	for _, svc := range p.services.Load().sorted() {
		set := svc.settings.Load()
		pol := svc.policy.Load()
		acc := accrualOf(set)
		bc := pol.budget.Config()
		sd := adminapi.ServiceDump{Authority: svc.authority, Opaque: set.Opaque, LoadBalancer: svc.balancer.Algorithm(), HashKey: set.HashKey,
			Policy: adminapi.PolicyDump{
				QueueTimeout: pol.queueTimeout.String(), MaxRetries: pol.maxRetries, RetryStatuses: pol.statuses, RetryGRPCCodes: pol.grpcCodes,
				RetryBudget:            map[string]float64{"ratio": bc.Ratio, "minPerSecond": bc.MinPerSecond, "ttlSeconds": bc.TTL.Seconds()},
				FailureAccrual:         &discovery.FailureAccrual{ConsecutiveFailures: acc.Failures, MinBackoff: acc.MinBackoff, MaxBackoff: acc.MaxBackoff, Jitter: acc.Jitter},
				MaxRequestsPerEndpoint: pol.maxPerEndpoint,
			},
			Endpoints: []adminapi.EndpointDump{}}
		if pol.requestTimeout > 0 {
			sd.Policy.RequestTimeout = pol.requestTimeout.String()
		}
		sd.Routes = set.Routes
		for _, e := range svc.balancer.Endpoints() {
			ed := adminapi.EndpointDump{
				Address: e.Addr, Weight: e.Weight, Identity: e.Identity, Zone: e.Zone,
				Pending: e.Pending(), LatencyMS: float64(e.Latency().Microseconds()) / 1000,
				State: e.State().String(), ConsecutiveFailures: e.ConsecutiveFailures(),
			}
			until, n := svc.balancer.Ejection(e)
			ed.Ejections = n
			if e.State() == balance.Ejected {
				ed.EjectedUntil = &until
			}
			sd.Endpoints = append(sd.Endpoints, ed)
		}
		d.Services = append(d.Services, sd)
	}
	return d
}

func (p *Proxy) serveConfigDump(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(p.Dump())
}
