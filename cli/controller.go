package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/meshproj/mesh/controller"
	"github.com/meshproj/mesh/identity"
	"github.com/meshproj/mesh/inject"
	"github.com/meshproj/mesh/kubeapi"
	"github.com/meshproj/mesh/pki"
)

func newControllerCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run the control plane (what mesh install deploys)",
		Long: `Run the control plane on Kubernetes: discovery over xDS (ADS over gRPC),
built from Services, EndpointSlices and Pods, for mesh proxies and proxyless
gRPC clients; the identity service, which signs proxy certificates for
ServiceAccount tokens checked with the TokenReview API; and the mutating
admission webhook that injects the proxy into pods of annotated namespaces. The issuer comes from the mesh-identity-issuer Secret and is
reloaded when the Secret changes. Every replica serves; none needs to lead.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, log, err := settingsAndLogger(cmd, s.ErrOut)
			if err != nil {
				return err
			}
			client, err := kubeClient(v.GetString("kubeconfig"))
			if err != nil {
				return err
			}
			lifetime := v.GetDuration("cert-lifetime")
			if lifetime < time.Minute {
				return usagef("--cert-lifetime must be at least 1m")
			}
			ns := v.GetString("namespace")
			opt := inject.DefaultOptions(proxyVersion(v.GetString("proxy-version")))
			opt.TrustDomain = v.GetString("trust-domain")
			opt.IdentityAddr = "mesh-identity." + ns + ".svc.cluster.local:8443"
			opt.DiscoveryAddr = "mesh-destination." + ns + ".svc.cluster.local:8086"
			return runController(cmd.Context(), controllerConfig{
				client: client, namespace: ns, trustDomain: opt.TrustDomain, lifetime: lifetime,
				xdsAddr: v.GetString("xds-addr"), clusterDomain: v.GetString("cluster-domain"),
				identityAddr: v.GetString("identity-addr"), webhookAddr: v.GetString("webhook-addr"), adminAddr: v.GetString("admin-addr"),
				webhookCert: v.GetString("webhook-cert-file"), webhookKey: v.GetString("webhook-key-file"),
				audience: v.GetString("token-audience"), inject: opt, log: log,
			})
		},
	}
	f := cmd.Flags()
	f.String("kubeconfig", "", "kubeconfig file (default: in-cluster configuration, else $KUBECONFIG)")
	f.String("namespace", "mesh-system", "the control plane's namespace")
	f.String("trust-domain", "cluster.local", "trust domain of workload identities")
	f.Duration("cert-lifetime", identity.DefaultLifetime, "lifetime of workload certificates")
	f.String("token-audience", inject.TokenAudience, "audience ServiceAccount tokens must be for")
	f.String("xds-addr", ":8086", "xDS (discovery) address")
	f.String("cluster-domain", "cluster.local", "the cluster's DNS domain")
	f.String("identity-addr", ":8443", "identity service address")
	f.String("webhook-addr", ":9443", "injection webhook address")
	f.String("admin-addr", ":9990", "admin address (/metrics, /ready, /live)")
	f.String("webhook-cert-file", "/var/run/mesh/webhook/tls.crt", "webhook serving certificate")
	f.String("webhook-key-file", "/var/run/mesh/webhook/tls.key", "webhook serving key")
	f.String("proxy-version", "", "proxy version the webhook injects (default: this binary's)")
	return cmd
}

// kubeClient uses the kubeconfig given, else the pod's ServiceAccount,
// else $KUBECONFIG.
func kubeClient(path string) (*kubeapi.Client, error) {
	if path != "" {
		return kubeapi.FromKubeconfig(path)
	}
	if c, err := kubeapi.InCluster(); err == nil {
		return c, nil
	}
	if env := os.Getenv("KUBECONFIG"); env != "" {
		return kubeapi.FromKubeconfig(env)
	}
	return nil, usagef("not in a cluster: give --kubeconfig")
}

type controllerConfig struct {
	client                               *kubeapi.Client
	namespace, trustDomain, audience     string
	lifetime                             time.Duration
	identityAddr, webhookAddr, adminAddr string
	xdsAddr, clusterDomain               string
	webhookCert, webhookKey              string
	inject                               inject.Options
	log                                  *slog.Logger
}

func runController(ctx context.Context, c controllerConfig) error {
	idSrv := &identity.Server{TrustDomain: c.trustDomain, Lifetime: c.lifetime, Log: c.log,
		Validator: &controller.TokenReviewer{Client: c.client, Audience: c.audience}}
	var haveIssuer atomic.Bool
	if err := controller.WatchIssuer(ctx, c.client, c.namespace, c.log, func(ca *pki.CA) {
		idSrv.SetIssuer(ca)
		haveIssuer.Store(true)
	}); err != nil {
		return err
	}
	dest := &controller.Destination{Client: c.client, ClusterDomain: c.clusterDomain, TrustDomain: c.trustDomain, Log: c.log}
	idTLS, err := idSrv.TLSConfig()
	if err != nil {
		return err
	}
	whCert, err := tls.LoadX509KeyPair(c.webhookCert, c.webhookKey)
	if err != nil {
		return fmt.Errorf("webhook certificate: %w", err)
	}
	wh := &controller.Webhook{Options: c.inject, Log: c.log}

	reg := prometheus.NewRegistry()
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	gauge("identity_certificates_issued_total", "Certificates signed.", func() float64 { return float64(idSrv.Issued.Load()) })
	gauge("identity_certificates_refused_total", "Certificate requests refused (bad token, identity mismatch, bad CSR).", func() float64 { return float64(idSrv.Refused.Load()) })
	gauge("webhook_pods_injected_total", "Pods the webhook injected.", func() float64 { return float64(wh.Injected.Load()) })
	gauge("webhook_pods_skipped_total", "Pods the webhook left alone.", func() float64 { return float64(wh.Skipped.Load()) })
	gauge("destination_rebuilds_total", "Times discovery was rebuilt after changes in the cluster.", func() float64 { return float64(dest.Rebuilds.Load()) })
	gauge("destination_nacks_total", "xDS updates a client refused.", func() float64 { return float64(dest.Nacks.Load()) })
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "destination_streams", Help: "Open xDS streams."}, func() float64 { return float64(dest.Streams.Load()) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "destination_service_ports", Help: "Service ports served over xDS."}, func() float64 { return float64(dest.Services.Load()) }))
	gauge("webhook_failures_total", "Pods admitted without the proxy because injection failed.", func() float64 { return float64(wh.Failed.Load()) })
	admin := http.NewServeMux()
	admin.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	admin.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("live\n")) })
	admin.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !haveIssuer.Load() {
			http.Error(w, "no issuer yet", http.StatusServiceUnavailable)
			return
		}
		select {
		case <-dest.Synced():
		default:
			http.Error(w, "discovery has not synced with the API server yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	whMux := http.NewServeMux()
	whMux.Handle("POST /inject", wh)

	servers := []struct {
		name string
		srv  *http.Server
		addr string
		tls  bool
	}{
		{"identity", &http.Server{Handler: idSrv.Handler(), TLSConfig: idTLS, ReadHeaderTimeout: 10 * time.Second}, c.identityAddr, true},
		{"webhook", &http.Server{Handler: whMux, TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{whCert}}, ReadHeaderTimeout: 10 * time.Second}, c.webhookAddr, true},
		{"admin", &http.Server{Handler: admin, ReadHeaderTimeout: 10 * time.Second}, c.adminAddr, false},
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return dest.Run(gctx) })
	// xDS answers only once discovery has synced: an early, partial answer
	// would tell proxies that services they use are gone.
	xdsLn, err := net.Listen("tcp", c.xdsAddr)
	if err != nil {
		return fmt.Errorf("xds listener: %w", err)
	}
	grpcSrv := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(grpcSrv, server.NewServer(gctx, dest.Cache(), dest.Callbacks()))
	xdsLn = controller.MixedTLSListener(xdsLn, idTLS)
	g.Go(func() error {
		select {
		case <-dest.Synced():
		case <-gctx.Done():
			xdsLn.Close()
			return nil
		}
		c.log.Info("listening", slog.String("server", "xds"), slog.String("addr", xdsLn.Addr().String()))
		if err := grpcSrv.Serve(xdsLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("xds: %w", err)
		}
		return nil
	})
	for _, s := range servers {
		ln, err := net.Listen("tcp", s.addr)
		if err != nil {
			return fmt.Errorf("%s listener: %w", s.name, err)
		}
		c.log.Info("listening", slog.String("server", s.name), slog.String("addr", ln.Addr().String()))
		g.Go(func() error {
			var err error
			if s.tls {
				err = s.srv.ServeTLS(ln, "", "")
			} else {
				err = s.srv.Serve(ln)
			}
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("%s: %w", s.name, err)
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, s := range servers {
			s.srv.Shutdown(sctx)
		}
		// xDS streams never end by themselves: close them, and proxies
		// keep their state and reconnect to another replica.
		grpcSrv.Stop()
		return nil
	})
	return g.Wait()
}
