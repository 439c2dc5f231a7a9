package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/identity"
	"github.com/meshproj/mesh/internal/memlimit"
	"github.com/meshproj/mesh/internal/otlp"
	"github.com/meshproj/mesh/pki"
	"github.com/meshproj/mesh/proxy"
	"github.com/meshproj/mesh/proxy/discovery/file"
	"github.com/meshproj/mesh/proxy/discovery/xds"
)

// proxyOptions are the resolved settings of `mesh proxy`.
type proxyOptions struct {
	cfg           proxy.Config
	discoveryFile string
	// cores is GOMAXPROCS, applied when coresSet (given, or no GOMAXPROCS
	// in the environment).
	cores         int
	coresSet      bool
	discoveryAddr string
	podName       string
	podNamespace  string
	clusterDomain string
	// controlPlaneTLS secures xDS once the proxy has trust anchors.
	controlPlaneTLS *tls.Config
	log             *slog.Logger
}

func newProxyCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Run the sidecar proxy (the data plane)",
		Long: `Run the sidecar proxy that sits beside a workload.

The outbound listener takes the app's requests to other services. HTTP/1.1,
HTTP/2 and gRPC are routed by authority (Host, :authority, or an absolute URI,
so HTTP_PROXY=http://127.0.0.1:4140 works) and balanced per request across the
service's endpoints; opaque TCP reaches a service through a local port given
with --outbound-tcp and is balanced per connection. The inbound listener
forwards traffic for the app to --inbound-forward. The admin listener serves
/metrics, /ready and /live, and to loopback clients /config_dump and
POST /shutdown.

Discovery comes from a watched file (--discovery-file, local mode) or from
the controller over xDS (--discovery-addr, on Kubernetes). On xDS the proxy
asks for a service the first time the app uses it (by name or by virtual IP),
is ready only once the controller has answered, and keeps what it knows if
the controller goes away.

On SIGTERM the proxy stops accepting connections, lets requests in flight
finish for up to --shutdown-grace, and exits.`,
		Example: `  # Two backends behind one service, reached through the proxy:
  cat > discovery.yaml <<EOF
  services:
    - name: hello
      port: 80
      loadBalancer: round-robin
      endpoints:
        - address: 127.0.0.1:8081
        - address: 127.0.0.1:8082
  EOF
  mesh proxy --discovery-file discovery.yaml --outbound-addr 127.0.0.1:4140 &
  curl -x http://127.0.0.1:4140 http://hello/`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := completeProxy(cmd, s)
			if err != nil {
				return err
			}
			return o.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.String("outbound-addr", proxy.DefaultOutboundAddr, "address of the outbound listener (the app's traffic to other services)")
	f.String("inbound-addr", proxy.DefaultInboundAddr, "address of the inbound listener (traffic for the app)")
	f.String("admin-addr", proxy.DefaultAdminAddr, "address of the admin listener (/metrics, /ready, /live)")
	f.String("inbound-forward", "", "where inbound traffic goes, IP:port of the app (default 127.0.0.1 at the original destination port, with interception)")
	f.StringArray("outbound-tcp", nil, "local opaque TCP port for a service, LISTEN=SERVICE:PORT, such as 127.0.0.1:15432=db:5432 (repeatable)")
	f.StringSlice("opaque-ports", nil, "destination ports that skip protocol detection, such as 25,3306 (server-speaks-first protocols)")
	f.String("discovery-file", "", "YAML file of services and endpoints, watched for changes (local mode)")
	f.String("discovery-addr", "", "the controller's xDS address (host:port); services are asked for as the app first uses them")
	f.String("pod-name", "", "this pod's name, to introduce the proxy to the controller")
	f.String("pod-namespace", "default", "this pod's namespace: short service names (\"web\") are looked up in it")
	f.String("cluster-domain", "cluster.local", "the cluster's DNS domain")
	f.Duration("discovery-idle-timeout", proxy.DefaultDiscoveryIdle, "with --discovery-addr, stop following a service no request has used this long; the next request for it subscribes again and waits for it")
	f.Duration("detect-timeout", proxy.DefaultDetectTimeout, "how long to wait for a client's first bytes before treating it as opaque TCP")
	f.Duration("request-head-timeout", proxy.DefaultRequestHeadTimeout, "how long a client may take to send a request head")
	f.Duration("client-idle-timeout", proxy.DefaultClientIdleTimeout, "close a client's keep-alive connection after this long between requests")
	f.Int("max-connections", proxy.DefaultMaxConnections, "most connections each traffic listener holds at once; at the bound a new one replaces the oldest that has sent no whole request, or is reset when every one is busy")
	f.Int("admin-max-connections", proxy.DefaultAdminMaxConnections, "most connections the admin listener holds at once")
	f.Duration("connect-timeout", proxy.DefaultConnectTimeout, "timeout for connecting to an endpoint")
	f.Duration("shutdown-grace", proxy.DefaultShutdownGrace, "how long to let requests in flight finish on SIGTERM")
	f.Duration("idle-timeout", proxy.DefaultIdleTimeout, "close pooled connections to endpoints after this long unused")
	f.Int("max-connections-per-endpoint", 0, "most connections to one endpoint (0: no limit); more requests wait for a connection")
	f.String("identity", "", "this workload's SPIFFE ID (spiffe://trust-domain/ns/NS/sa/SA); enables mTLS")
	f.String("identity-addr", "", "address of the identity service (host:port)")
	f.String("identity-trust-anchors", "", "PEM file of trust anchors (one or more; rotate by listing old and new)")
	f.String("identity-trust-anchors-pem", "", "the trust anchors themselves, PEM (what injected pods get, as MESH_IDENTITY_TRUST_ANCHORS_PEM); instead of --identity-trust-anchors")
	f.String("identity-token-file", "", "file holding this workload's token, read at each renewal")
	f.Bool("require-identity", false, "refuse inbound connections that are not mesh TLS")
	f.String("default-inbound-policy", string(discovery.AllUnauthenticated), "inbound policy for ports no Server selects, and for every port before a policy arrives: all-unauthenticated, all-authenticated, cluster-authenticated, deny or audit")
	f.String("inbound-probes", "", "the app's HTTP probes, PORT:/PATH,... (what inject writes from the pod's probes): let through whatever the inbound policy")
	f.StringSlice("cluster-networks", nil, "CIDRs cluster-authenticated admits without a mesh identity (default: 10.0.0.0/8, 100.64.0.0/10, 172.16.0.0/12, 192.168.0.0/16, fd00::/8)")
	f.String("access-log", "", "write a line per request to standard output in this format: json (default: none; the annotation config.mesh.io/access-log sets it for injected pods)")
	f.String("trace-collector", "", "send spans to this OTLP/HTTP collector, host:port (such as jaeger.tracing:4318) or an http(s) URL (default: no tracing; mesh install --set tracing.collector=... sets it for injected pods)")
	f.Float64("trace-sampling", 0, "share of requests without a trace context that start a trace, 0 to 1 (requests that carry one follow the caller's decision)")
	f.String("trace-service", "", "the service name in the proxy's spans (default: mesh-proxy; injected pods get their workload's name)")
	f.StringSlice("label", nil, "label added to every metric, such as namespace=default,workload=web (repeatable)")
	f.Int("cores", 1, "CPU cores the proxy runs on (GOMAXPROCS); 0: what the container's CPU limit allows. GOMAXPROCS in the environment wins over the default")
	return cmd
}

func completeProxy(cmd *cobra.Command, s Streams) (*proxyOptions, error) {
	v, log, err := settingsAndLogger(cmd, s.ErrOut)
	if err != nil {
		return nil, err
	}
	o := &proxyOptions{log: log, discoveryFile: v.GetString("discovery-file"), cores: v.GetInt("cores"),
		coresSet: v.IsSet("cores") || os.Getenv("GOMAXPROCS") == "", discoveryAddr: v.GetString("discovery-addr"),
		podName: v.GetString("pod-name"), podNamespace: v.GetString("pod-namespace"), clusterDomain: v.GetString("cluster-domain")}
	o.cfg = proxy.Config{
		OutboundAddr:        v.GetString("outbound-addr"),
		InboundAddr:         v.GetString("inbound-addr"),
		AdminAddr:           v.GetString("admin-addr"),
		InboundForward:      v.GetString("inbound-forward"),
		DetectTimeout:       v.GetDuration("detect-timeout"),
		ConnectTimeout:      v.GetDuration("connect-timeout"),
		ShutdownGrace:       v.GetDuration("shutdown-grace"),
		IdleTimeout:         v.GetDuration("idle-timeout"),
		DiscoveryIdle:       v.GetDuration("discovery-idle-timeout"),
		RequestHeadTimeout:  v.GetDuration("request-head-timeout"),
		ClientIdleTimeout:   v.GetDuration("client-idle-timeout"),
		MaxConnections:      v.GetInt("max-connections"),
		AdminMaxConnections: v.GetInt("admin-max-connections"),
		MaxConnsPerEndpoint: v.GetInt("max-connections-per-endpoint"),
		Labels:              map[string]string{},
		Log:                 log,
	}
	if err := o.validate(v); err != nil {
		return nil, err
	}
	return o, o.completeIdentity(v)
}

// completeIdentity sets up mTLS when --identity is given.
func (o *proxyOptions) completeIdentity(v *viper.Viper) error {
	idFlag := v.GetString("identity")
	o.cfg.RequireIdentity = v.GetBool("require-identity")
	anchorsFile, anchorsPEM := v.GetString("identity-trust-anchors"), v.GetString("identity-trust-anchors-pem")
	if idFlag == "" {
		for _, f := range []string{"identity-addr", "identity-trust-anchors", "identity-trust-anchors-pem", "identity-token-file"} {
			if v.GetString(f) != "" {
				return usagef("--%s needs --identity", f)
			}
		}
		if o.cfg.RequireIdentity {
			return usagef("--require-identity needs --identity")
		}
		return nil
	}
	id, err := pki.ParseID(idFlag)
	if err != nil {
		return usagef("--identity: %v", err)
	}
	for _, f := range []string{"identity-addr", "identity-token-file"} {
		if v.GetString(f) == "" {
			return usagef("--identity needs --%s", f)
		}
	}
	var data []byte
	source := "--identity-trust-anchors-pem"
	switch {
	case anchorsFile != "" && anchorsPEM != "":
		return usagef("give the trust anchors once: --identity-trust-anchors (a file) or --identity-trust-anchors-pem")
	case anchorsFile != "":
		if data, err = os.ReadFile(anchorsFile); err != nil {
			return fmt.Errorf("reading trust anchors: %w", err)
		}
		source = anchorsFile
	case anchorsPEM != "":
		data = []byte(anchorsPEM)
	default:
		return usagef("--identity needs trust anchors: --identity-trust-anchors (a file) or --identity-trust-anchors-pem")
	}
	anchors, err := pki.ParseCerts(data)
	if err != nil {
		return fmt.Errorf("trust anchors %s: %w", source, err)
	}
	pool := pki.Pool(anchors...)
	client := identity.NewClient(v.GetString("identity-addr"), pool, id.TrustDomain)
	agent, err := identity.NewAgent(id, client, v.GetString("identity-token-file"), o.log)
	if err != nil {
		return err
	}
	o.cfg.Identity, o.cfg.TrustAnchors = agent, pool
	o.controlPlaneTLS = identity.ControlPlaneTLS(pool, id.TrustDomain)
	return nil
}

func (o *proxyOptions) validate(v *viper.Viper) error {
	switch {
	case o.discoveryFile == "" && o.discoveryAddr == "":
		return usagef("give --discovery-file (local mode) or --discovery-addr (the controller's xDS address)")
	case o.discoveryFile != "" && o.discoveryAddr != "":
		return usagef("--discovery-file and --discovery-addr exclude each other: pick one source of discovery")
	case o.discoveryAddr != "":
		if _, _, err := net.SplitHostPort(o.discoveryAddr); err != nil {
			return usagef("--discovery-addr %q: want host:port", o.discoveryAddr)
		}
	}
	if o.cfg.InboundForward != "" {
		if _, err := netip.ParseAddrPort(o.cfg.InboundForward); err != nil {
			return usagef("--inbound-forward %q: want IP:port, such as 127.0.0.1:8080", o.cfg.InboundForward)
		}
	}
	for _, spec := range listOf(v, "outbound-tcp") {
		fwd, err := proxy.ParseTCPForward(spec)
		if err != nil {
			return usageError{err}
		}
		o.cfg.OutboundTCP = append(o.cfg.OutboundTCP, fwd)
	}
	o.cfg.AccessLog = v.GetString("access-log")
	if o.cfg.AccessLog != "" && !slices.Contains(proxy.AccessLogFormats, o.cfg.AccessLog) {
		return usagef("--access-log %q: want one of %s, or nothing for none", o.cfg.AccessLog, strings.Join(proxy.AccessLogFormats, ", "))
	}
	o.cfg.TraceCollector, o.cfg.TraceSampling, o.cfg.TraceService = v.GetString("trace-collector"), v.GetFloat64("trace-sampling"), v.GetString("trace-service")
	if o.cfg.TraceCollector != "" {
		if _, err := otlp.CollectorURL(o.cfg.TraceCollector); err != nil {
			return usagef("--trace-collector: %v", err)
		}
	}
	if o.cfg.TraceSampling < 0 || o.cfg.TraceSampling > 1 {
		return usagef("--trace-sampling %v: want a share from 0 to 1", o.cfg.TraceSampling)
	}
	if o.cfg.TraceSampling > 0 && o.cfg.TraceCollector == "" {
		return usagef("--trace-sampling needs --trace-collector")
	}
	o.cfg.DefaultInboundPolicy = discovery.DefaultPolicy(v.GetString("default-inbound-policy"))
	if !o.cfg.DefaultInboundPolicy.Valid() {
		return usagef("--default-inbound-policy %q: want one of %v", o.cfg.DefaultInboundPolicy, discovery.DefaultPolicies)
	}
	probes, err := proxy.ParseProbes(v.GetString("inbound-probes"))
	if err != nil {
		return usagef("--inbound-probes: %v", err)
	}
	o.cfg.InboundProbes = probes
	for _, c := range listOf(v, "cluster-networks") {
		pfx, err := netip.ParsePrefix(c)
		if err != nil {
			return usagef("--cluster-networks: %q is not a CIDR", c)
		}
		o.cfg.ClusterNetworks = append(o.cfg.ClusterNetworks, pfx.Masked())
	}
	for _, p := range listOf(v, "opaque-ports") {
		n, err := strconv.ParseUint(strings.TrimSpace(p), 10, 16)
		if err != nil || n == 0 {
			return usagef("--opaque-ports: %q is not a port", p)
		}
		o.cfg.OpaquePorts = append(o.cfg.OpaquePorts, uint16(n))
	}
	// Labels come as repeated flags or as "k=v,k=v" from MESH_LABEL (the
	// injected proxy's environment).
	for _, kv := range listOf(v, "label") {
		k, val, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return usagef("--label %q: want NAME=VALUE", kv)
		}
		o.cfg.Labels[k] = val
	}
	if o.cores < 0 {
		return usagef("--cores must not be negative")
	}
	if o.cfg.MaxConnsPerEndpoint < 0 {
		return usagef("--max-connections-per-endpoint must not be negative")
	}
	for name, n := range map[string]int{"max-connections": o.cfg.MaxConnections, "admin-max-connections": o.cfg.AdminMaxConnections} {
		if n <= 0 {
			return usagef("--%s must be positive, got %d", name, n)
		}
	}
	for name, d := range map[string]time.Duration{"detect-timeout": o.cfg.DetectTimeout, "connect-timeout": o.cfg.ConnectTimeout, "shutdown-grace": o.cfg.ShutdownGrace, "idle-timeout": o.cfg.IdleTimeout,
		"discovery-idle-timeout": o.cfg.DiscoveryIdle, "request-head-timeout": o.cfg.RequestHeadTimeout, "client-idle-timeout": o.cfg.ClientIdleTimeout} {
		if d <= 0 {
			return usagef("--%s must be positive, got %s", name, d)
		}
	}
	return nil
}

func (o *proxyOptions) run(ctx context.Context) error {
	// One core by default, as sidecars usually get: measured on the
	// two-hop mTLS benchmark, added p99 fell by 40% and CPU per request by
	// 20% against two cores, because hand-offs between the server, the
	// transport and its read loop stay on one thread instead of waking
	// others.
	if o.coresSet && o.cores > 0 {
		runtime.GOMAXPROCS(o.cores)
	}
	// Under a flood of connections the heap may double what is live before
	// a collection; near the container's limit, collect instead.
	if soft, err := memlimit.Set("/sys/fs/cgroup"); err != nil {
		o.log.Warn("no soft memory limit", slog.Any("error", err))
	} else if soft > 0 {
		o.log.Debug("soft memory limit from the container's", slog.Int64("bytes", soft))
	}
	if o.discoveryAddr != "" {
		node := o.podName
		if node == "" {
			node, _ = os.Hostname()
		}
		o.cfg.Discovery = &xds.Backend{Addr: o.discoveryAddr, NodeID: node + "." + o.podNamespace,
			Namespace: o.podNamespace, PodName: o.podName, ClusterDomain: o.clusterDomain, TLS: o.controlPlaneTLS, Log: o.log}
	} else {
		// Refuse an invalid discovery file before binding anything.
		if _, _, err := file.Load(o.discoveryFile); err != nil {
			return err
		}
		o.cfg.Discovery = &file.Backend{Path: o.discoveryFile, Log: o.log}
	}
	p, err := proxy.New(o.cfg)
	if err != nil {
		return err
	}
	if err := p.Run(ctx); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	return nil
}
