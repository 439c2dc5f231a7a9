package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"k8s.io/client-go/rest"

	"github.com/meshproj/mesh/discovery/xdswire"
	"github.com/meshproj/mesh/identity"
	"github.com/meshproj/mesh/inject"
	"github.com/meshproj/mesh/internal/httpserve"
	"github.com/meshproj/mesh/internal/otlp"
	"github.com/meshproj/mesh/kubeapi"
	"github.com/meshproj/mesh/pki"
)

// Config is what the control plane is told at start.
type Config struct {
	Client *kubeapi.Client
	// Namespace is the control plane's own; its Services are how proxies
	// reach it.
	Namespace     string
	TrustDomain   string
	ClusterDomain string
	// Audience is what ServiceAccount tokens must be for.
	Audience     string
	CertLifetime time.Duration
	// Listen addresses.
	XDSAddr, IdentityAddr, WebhookAddr, AdminAddr string
	WebhookCertFile, WebhookKeyFile               string
	// ProxyVersion is the proxy image the webhook injects.
	ProxyVersion string
	// DefaultInboundPolicy is what the webhook gives proxies unless an
	// annotation says otherwise.
	DefaultInboundPolicy string
	// TraceCollector and TraceSampling are the tracing the webhook gives
	// proxies unless an annotation says otherwise (see inject.Options).
	TraceCollector, TraceSampling string
	// Rest is the same API server for client-go, whose leader election
	// decides which replica writes route status; with none, no replica
	// writes it. Identity names this replica in the Lease, and
	// LeaseDuration is how long a dead leader keeps it.
	Rest          *rest.Config
	Identity      string
	LeaseDuration time.Duration
	Log           *slog.Logger
}

// Validate reports what is missing or wrong.
func (c *Config) Validate() error {
	switch {
	case c.Client == nil:
		return errors.New("no Kubernetes client")
	case c.CertLifetime < time.Minute:
		return fmt.Errorf("certificate lifetime %s: must be at least 1m", c.CertLifetime)
	case c.Namespace == "" || c.TrustDomain == "" || c.ClusterDomain == "":
		return errors.New("namespace, trust domain and cluster domain are all needed")
	case c.TraceCollector != "" && !validCollector(c.TraceCollector):
		return fmt.Errorf("trace collector %q: want host:port of an OTLP/HTTP collector, or an http(s) URL", c.TraceCollector)
	case c.Rest != nil && (c.Identity == "" || c.LeaseDuration < 3*time.Second):
		return fmt.Errorf("leader election needs this replica's identity and a lease of at least 3s (have %q, %s)", c.Identity, c.LeaseDuration)
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return nil
}

// InjectOptions are what the webhook puts in pods: among them the control
// plane's addresses, by its Services' names in the cluster's domain, and
// the trust anchors.
func (c *Config) InjectOptions(anchors string) inject.Options {
	opt := inject.DefaultOptions(c.ProxyVersion)
	opt.TrustDomain = c.TrustDomain
	opt.TrustAnchors = anchors
	svc := func(name string, port int) string {
		return fmt.Sprintf("%s.%s.svc.%s:%d", name, c.Namespace, c.ClusterDomain, port)
	}
	opt.IdentityAddr = svc("mesh-identity", 8443)
	opt.DiscoveryAddr = svc("mesh-destination", 8086)
	opt.DefaultInboundPolicy = c.DefaultInboundPolicy
	opt.TraceCollector, opt.TraceSampling = c.TraceCollector, c.TraceSampling
	return opt
}

// Run serves discovery, identity, the injection webhook and the admin
// endpoints until ctx ends, then drains them. Every replica serves; the
// one that leads also writes the status of mesh routes.
func Run(ctx context.Context, c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	idSrv := &identity.Server{TrustDomain: c.TrustDomain, Lifetime: c.CertLifetime, Log: c.Log,
		Validator: &TokenReviewer{Client: c.Client, Audience: c.Audience}}
	var haveIssuer atomic.Bool
	if err := WatchIssuer(ctx, c.Client, c.Namespace, c.Log, func(ca *pki.CA) {
		idSrv.SetIssuer(ca)
		haveIssuer.Store(true)
	}); err != nil {
		return err
	}
	idTLS, err := idSrv.TLSConfig()
	if err != nil {
		return err
	}
	whCert, err := tls.LoadX509KeyPair(c.WebhookCertFile, c.WebhookKeyFile)
	if err != nil {
		return fmt.Errorf("webhook certificate: %w", err)
	}
	// Read once: rotating the anchors (old and new side by side first)
	// takes a restart of the controller, then of the workloads.
	anchors, err := kubeapi.ReadTrustAnchors(ctx, c.Client, c.Namespace)
	if err != nil {
		return err
	}
	dest := &Destination{Client: c.Client, ClusterDomain: c.ClusterDomain, TrustDomain: c.TrustDomain, Log: c.Log}
	pol := &Policies{Client: c.Client, TrustDomain: c.TrustDomain, Log: c.Log}
	wh := &Webhook{Options: c.InjectOptions(anchors), Log: c.Log, Client: c.Client}
	whMux := http.NewServeMux()
	whMux.Handle("POST /inject", wh)
	ready := func() error {
		if !haveIssuer.Load() {
			return errors.New("no issuer yet")
		}
		select {
		case <-dest.Synced():
			return nil
		default:
			return errors.New("discovery has not synced with the API server yet")
		}
	}

	lns := map[string]net.Listener{}
	for name, addr := range map[string]string{"xds": c.XDSAddr, "identity": c.IdentityAddr, "webhook": c.WebhookAddr, "admin": c.AdminAddr} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("%s listener: %w", name, err)
		}
		lns[name] = ln
		c.Log.Info("listening", slog.String("server", name), slog.String("addr", ln.Addr().String()))
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return dest.Run(gctx) })
	rs := &RouteStatus{Client: c.Client, Dest: dest, Log: c.Log}
	var leading atomic.Bool
	if c.Rest != nil {
		g.Go(func() error {
			return lead(gctx, c.Rest, c.Namespace, c.Identity, c.LeaseDuration, c.Log, leading.Store, rs.Run)
		})
	}
	g.Go(func() error { return pol.Run(gctx) })
	g.Go(func() error { return idSrv.Serve(gctx, lns["identity"]) })
	g.Go(func() error {
		hs := &http.Server{Handler: whMux, ReadHeaderTimeout: 10 * time.Second,
			TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{whCert}}}
		return httpserve.Run(gctx, "webhook", hs, lns["webhook"])
	})
	g.Go(func() error {
		reg := metricsOf(idSrv, wh, dest, pol)
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "leader", Help: "1 while this replica holds the Lease and writes route status."}, func() float64 {
				if leading.Load() {
					return 1
				}
				return 0
			}),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "route_status_writes_total", Help: "Route statuses written."}, func() float64 { return float64(rs.Writes.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "route_status_failures_total", Help: "Route status writes the API server refused (each is logged and tried again)."}, func() float64 { return float64(rs.Failures.Load()) }))
		hs := &http.Server{Handler: adminMux(reg, ready), ReadHeaderTimeout: 10 * time.Second}
		return httpserve.Run(gctx, "admin", hs, lns["admin"])
	})
	g.Go(func() error { return serveXDS(gctx, dest, pol, MixedTLSListener(lns["xds"], idTLS)) })
	return g.Wait()
}

// serveXDS answers ADS once discovery and the inbound policies have
// synced (an early, partial answer would tell proxies that services they
// use are gone, or that their pod has no policy), until ctx ends.
func serveXDS(ctx context.Context, dest *Destination, pol *Policies, ln net.Listener) error {
	grpcSrv := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}))
	mux := dest.Cache().(*cache.MuxCache)
	mux.Caches[xdswire.InboundPolicyType] = pol.Cache()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(grpcSrv, server.NewServer(ctx, mux, dest.Callbacks()))
	for _, synced := range []<-chan struct{}{dest.Synced(), pol.Synced()} {
		select {
		case <-synced:
		case <-ctx.Done():
			ln.Close()
			return nil
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- grpcSrv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("xds: %w", err)
	case <-ctx.Done():
		// xDS streams never end by themselves: close them, and proxies
		// keep their state and reconnect to another replica.
		grpcSrv.Stop()
		<-errc
		return nil
	}
}

// metricsOf is the controller's registry: counters kept by the servers.
func metricsOf(idSrv *identity.Server, wh *Webhook, dest *Destination, pol *Policies) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	counter("identity_certificates_issued_total", "Certificates signed.", func() float64 { return float64(idSrv.Issued.Load()) })
	counter("identity_certificates_refused_total", "Certificate requests refused (bad token, identity mismatch, bad CSR).", func() float64 { return float64(idSrv.Refused.Load()) })
	counter("webhook_pods_injected_total", "Pods the webhook injected.", func() float64 { return float64(wh.Injected.Load()) })
	counter("webhook_pods_skipped_total", "Pods the webhook left alone.", func() float64 { return float64(wh.Skipped.Load()) })
	counter("webhook_failures_total", "Pods admitted without the proxy because injection failed.", func() float64 { return float64(wh.Failed.Load()) })
	counter("destination_rebuilds_total", "Times discovery was rebuilt after changes in the cluster.", func() float64 { return float64(dest.Rebuilds.Load()) })
	counter("destination_nacks_total", "xDS updates a client refused.", func() float64 { return float64(dest.Nacks.Load()) })
	gauge("destination_streams", "Open xDS streams.", func() float64 { return float64(dest.Streams.Load()) })
	counter("policy_rebuilds_total", "Times the inbound policies were rebuilt after changes in the cluster.", func() float64 { return float64(pol.Rebuilds.Load()) })
	gauge("policy_problems", "Things wrong with the policy.mesh.io resources now (a reference to nothing, a port no pod has, a bad CIDR); each is logged as 'inbound policy: ...' when it appears, and admits nothing.", func() float64 { return float64(pol.Problems.Load()) })
	counter("policy_resources_undecodable_total", "Policy resources (and pods) skipped because they did not decode; each is logged.", func() float64 { return float64(pol.Undecodable()) })
	gauge("destination_service_ports", "Service ports served over xDS.", func() float64 { return float64(dest.Services.Load()) })
	return reg
}

// adminMux serves /metrics, /live, and /ready (ready says why it is not).
func adminMux(reg *prometheus.Registry, ready func() error) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("live\n")) })
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	// Profiles, for finding what the controller spends its time and
	// memory on; kept to this host, as the proxy's are.
	mux.Handle("GET /debug/pprof/", httpserve.LoopbackOnly(http.HandlerFunc(pprof.Index)))
	mux.Handle("GET /debug/pprof/profile", httpserve.LoopbackOnly(http.HandlerFunc(pprof.Profile)))
	mux.Handle("GET /debug/pprof/trace", httpserve.LoopbackOnly(http.HandlerFunc(pprof.Trace)))
	return mux
}

func validCollector(s string) bool {
	_, err := otlp.CollectorURL(s)
	return err == nil
}
