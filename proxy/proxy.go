// Package proxy is the data plane, the program behind `mesh proxy`.
//
// A proxy has three listeners. Outbound (4140) takes the local app's
// requests to other services, finds the service by authority (or, once
// traffic is intercepted, by original destination), balances across its
// endpoints and forwards. Inbound (4143) takes requests meant for the local
// app and forwards them to it. Admin (4191) serves metrics, readiness and,
// to loopback clients only, a config dump and shutdown.
//
// Each accepted connection is peeked to detect its protocol: HTTP/1 and
// HTTP/2 are proxied per request, anything else as opaque TCP. The files:
//
//   - proxy.go: the configuration, the listeners, start and drain;
//   - limits.go: what a client may hold (connection bounds, the proxy's own
//     ports refused inbound, memory handed back);
//   - accept.go: where a connection enters and is detected;
//   - http.go: where a request is routed, forwarded and counted; outbound.go:
//     its timeouts, retries and fail-fast; services.go: the service table
//     that discovery fills;
//   - tcp.go: opaque TCP, balanced per connection;
//   - mtls.go, meshpool.go: mutual TLS between proxies;
//   - admin.go, tap.go, window.go: the admin endpoints, live tap, and the
//     recent-traffic window behind /stats; accesslog.go: the access log; tracing.go: spans.
//
// Other rooms: the HTTP/1 server and client and write corking (httpio),
// balancing (balance), connection bounds (connlimit), detection (detect),
// retries (retry), what is counted (metrics), the admin API's wire types
// (adminapi), and the discovery backends (discovery/file, discovery/xds).
package proxy

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/identity"
	"github.com/meshproj/mesh/internal/exepages"
	"github.com/meshproj/mesh/internal/otlp"
	"github.com/meshproj/mesh/proxy/authz"
	"github.com/meshproj/mesh/proxy/connlimit"
	"github.com/meshproj/mesh/proxy/httpio"
	"github.com/meshproj/mesh/proxy/metrics"
	"github.com/meshproj/mesh/proxy/rawsock"
	"github.com/meshproj/mesh/wellknown"
)

// Default listener addresses, at the mesh's well-known ports.
var (
	DefaultOutboundAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(wellknown.OutboundPort))
	DefaultInboundAddr  = net.JoinHostPort("0.0.0.0", strconv.Itoa(wellknown.InboundPort))
	DefaultAdminAddr    = net.JoinHostPort("0.0.0.0", strconv.Itoa(wellknown.AdminPort))
)

// Default timeouts.
const (
	DefaultDetectTimeout  = time.Second
	DefaultConnectTimeout = 3 * time.Second
	DefaultShutdownGrace  = 30 * time.Second
	DefaultIdleTimeout    = 90 * time.Second
	// DefaultDiscoveryIdle is how long a service learned on demand stays
	// subscribed without a request for it.
	DefaultDiscoveryIdle = 10 * time.Minute
)

// Config is everything a proxy is told at start.
type Config struct {
	OutboundAddr string
	InboundAddr  string
	AdminAddr    string
	// InboundForward is where inbound traffic goes (the local app). Empty
	// means 127.0.0.1 at the connection's original destination port, which
	// needs interception.
	InboundForward string
	// OutboundTCP are local listeners that forward opaque TCP to a service,
	// for apps that reach TCP services without interception.
	OutboundTCP []TCPForward
	// OpaquePorts are destination ports whose traffic skips protocol
	// detection (server-speaks-first protocols).
	OpaquePorts    []uint16
	DetectTimeout  time.Duration
	ConnectTimeout time.Duration
	ShutdownGrace  time.Duration
	// IdleTimeout closes pooled connections to endpoints unused that long.
	IdleTimeout time.Duration
	// DiscoveryIdle is how long a service an on-demand backend learned
	// stays subscribed with no request for it; then the backend forgets
	// it, and the next request for it subscribes again and waits for it.
	DiscoveryIdle time.Duration
	// MaxConnections bounds the connections each traffic listener holds at
	// once, AdminMaxConnections the admin listener's (see package
	// connlimit); 0: the defaults.
	MaxConnections      int
	AdminMaxConnections int
	// RequestHeadTimeout bounds how long a client may take to send a
	// request head; ClientIdleTimeout how long its keep-alive connection may
	// sit between requests. 0: the defaults.
	RequestHeadTimeout time.Duration
	ClientIdleTimeout  time.Duration
	// MaxConnsPerEndpoint bounds connections to one endpoint (0: no
	// bound); requests beyond it wait for a connection, bounded in turn by
	// the service's maxRequestsPerEndpoint.
	MaxConnsPerEndpoint int
	Discovery           discovery.Backend
	// Identity, when set, gives the proxy its certificate: outbound traffic
	// to endpoints with an identity is mTLS, and inbound mesh TLS is
	// accepted. TrustAnchors verify peers.
	Identity     *identity.Agent
	TrustAnchors *x509.CertPool
	// RequireIdentity refuses inbound connections that are not mesh TLS.
	RequireIdentity bool
	// DefaultInboundPolicy is what inbound traffic meets on a port no
	// Server of the workload's policy selects, and on every port before a
	// policy has arrived (empty: all-unauthenticated). ClusterNetworks are
	// what cluster-authenticated admits without an identity (nil: the
	// private ranges).
	DefaultInboundPolicy discovery.DefaultPolicy
	ClusterNetworks      []netip.Prefix
	// InboundProbes are the app's HTTP probes (port and path): the
	// kubelet's GET or HEAD to one is let through whatever the policy.
	InboundProbes []Probe
	// Labels are added to every metric (workload labels).
	Labels map[string]string
	// AccessLog is the access log's format: "" (none) or "json", one
	// line per request to AccessLogOut (standard output by default).
	AccessLog    string
	AccessLogOut io.Writer
	// TraceCollector is where spans go (a CollectorURL); "" traces
	// nothing. TraceSampling is the share of requests without a trace
	// context that start one (0 to 1); TraceService names the workload
	// in its spans (default: mesh-proxy).
	TraceCollector string
	TraceSampling  float64
	TraceService   string
	Log            *slog.Logger
}

// Probe is an HTTP probe of the app: a port and an exact path.
type Probe struct {
	Port uint16
	Path string
}

// ParseProbes reads PORT:PATH entries, comma-separated, as inject writes
// them (MESH_INBOUND_PROBES).
func ParseProbes(s string) ([]Probe, error) {
	var out []Probe
	for _, entry := range strings.Split(s, ",") {
		if entry = strings.TrimSpace(entry); entry == "" {
			continue
		}
		port, path, ok := strings.Cut(entry, ":")
		n, err := strconv.ParseUint(port, 10, 16)
		if !ok || err != nil || n == 0 || !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("probe %q: want PORT:/PATH, such as 8080:/ready", entry)
		}
		out = append(out, Probe{Port: uint16(n), Path: path})
	}
	return out, nil
}

// TCPForward is one local opaque-TCP listener bound to a service.
type TCPForward struct {
	Listen  string
	Service discovery.Key
}

// ParseTCPForward parses LISTEN=SERVICE, for example
// "127.0.0.1:15432=db:5432". A LISTEN without a host binds 127.0.0.1.
func ParseTCPForward(s string) (TCPForward, error) {
	listen, svc, ok := strings.Cut(s, "=")
	if !ok || listen == "" || svc == "" {
		return TCPForward{}, fmt.Errorf("outbound TCP forward %q: want LISTEN=SERVICE:PORT, such as 127.0.0.1:15432=db:5432", s)
	}
	if _, _, err := net.SplitHostPort(listen); err != nil {
		listen = "127.0.0.1:" + listen
	}
	key, err := discovery.ParseAuthority(svc, 0)
	if err != nil || key.Port == 0 {
		return TCPForward{}, fmt.Errorf("outbound TCP forward %q: service %q needs a port", s, svc)
	}
	return TCPForward{Listen: listen, Service: key}, nil
}

// Proxy is a running data plane.
type Proxy struct {
	cfg       Config
	log       *slog.Logger
	metrics   *metrics.Metrics
	accessLog *accessLog // nil when off
	tracing   *tracing   // nil when off

	services  atomic.Pointer[serviceTable]
	discState atomic.Pointer[discovery.State]
	// authz is the inbound policy in force; probes the app's probes, let
	// through whatever it says.
	authz  atomic.Pointer[authz.Policy]
	probes map[Probe]bool
	// onDemand is the discovery backend when it learns services as they
	// are asked for (xDS); nil for one that knows them all (the file).
	onDemand discovery.OnDemand
	ready    atomic.Bool
	draining atomic.Bool

	outboundLn, inboundLn, adminLn net.Listener
	tcpLns                         []tcpListener
	// bounded are the listeners above, each within its connection bound;
	// registered names those whose gauges are registered.
	bounded    []*connlimit.Listener
	registered map[string]bool
	// ownPorts are the ports of the listeners above.
	ownPorts map[uint16]bool

	transports transports
	outboundH  *httpEntry
	inboundH   *httpEntry
	// inboundForward forwards HTTP to the local app.
	inboundForward http.Handler
	// originalDst forwards intercepted HTTP to its original destination.
	originalDst http.Handler
	// mTLS: expected identity per endpoint address, pools to meshed
	// endpoints, and the server for terminated inbound mesh TLS.
	meshIDs     sync.Map
	meshH2      *meshPool
	meshH1      *httpio.Client  // HTTP/1.1 requests, kept HTTP/1.1 across the mesh hop
	meshUpgrade *http.Transport // upgrades (WebSocket) and Expect: 100-continue
	meshInbound *meshHTTP
	admin       *http.Server

	opaque map[uint16]bool

	window window // recent traffic, for mesh stat
	// authzStats counts the inbound policy's decisions, for mesh authz.
	authzStats authzStats
	tap        tapHub // live requests, for mesh tap

	detecting sync.WaitGroup // connections being peeked
	tcpConns  connSet        // opaque TCP connections being forwarded
	stop      chan struct{}  // closed by /shutdown
	stopOnce  sync.Once
}

type tcpListener struct {
	net.Listener
	fwd TCPForward
}

// New checks the configuration and binds every listener, so that a port
// conflict is reported before anything runs.
func New(cfg Config) (*Proxy, error) {
	if cfg.Discovery == nil {
		return nil, errors.New("no discovery backend configured")
	}
	setDefaults(&cfg)
	if cfg.Identity != nil && cfg.TrustAnchors == nil {
		return nil, errors.New("an identity needs trust anchors to verify peers")
	}
	if cfg.RequireIdentity && cfg.Identity == nil {
		return nil, errors.New("requiring mesh identity on inbound traffic needs an identity of its own")
	}
	if cfg.AccessLog != "" && !slices.Contains(AccessLogFormats, cfg.AccessLog) {
		return nil, fmt.Errorf("access log format %q: want one of %s (or none)", cfg.AccessLog, strings.Join(AccessLogFormats, ", "))
	}
	if cfg.TraceSampling < 0 || cfg.TraceSampling > 1 {
		return nil, fmt.Errorf("trace sampling %v: want a share from 0 to 1", cfg.TraceSampling)
	}
	if cfg.TraceCollector != "" {
		u, err := otlp.CollectorURL(cfg.TraceCollector)
		if err != nil {
			return nil, err
		}
		cfg.TraceCollector = u
	}
	if cfg.InboundForward != "" {
		if _, err := netip.ParseAddrPort(cfg.InboundForward); err != nil {
			return nil, fmt.Errorf("inbound forward address %q must be IP:port: %w", cfg.InboundForward, err)
		}
	}
	onDemand, _ := cfg.Discovery.(discovery.OnDemand)
	p := &Proxy{
		onDemand:   onDemand,
		cfg:        cfg,
		log:        cfg.Log,
		metrics:    metrics.New(cfg.Labels),
		opaque:     map[uint16]bool{},
		stop:       make(chan struct{}),
		registered: map[string]bool{},
	}
	for _, port := range cfg.OpaquePorts {
		p.opaque[port] = true
	}
	p.services.Store(&serviceTable{byKey: map[discovery.Key]*service{}, byVIP: map[netip.AddrPort]*service{}})
	// Until a policy arrives, the default alone: fail closed under deny.
	pol, err := authz.Compile(nil, cfg.DefaultInboundPolicy, cfg.ClusterNetworks)
	if err != nil {
		return nil, err
	}
	p.authz.Store(pol)
	p.probes = map[Probe]bool{}
	for _, pr := range cfg.InboundProbes {
		p.probes[pr] = true
	}
	p.transports = newTransports(cfg.ConnectTimeout, cfg.IdleTimeout, cfg.MaxConnsPerEndpoint)
	if err := p.bindListeners(); err != nil {
		return nil, err
	}
	if cfg.AccessLog != "" {
		out := cfg.AccessLogOut
		if out == nil {
			out = os.Stdout
		}
		p.accessLog = newAccessLog(out)
	}
	if cfg.TraceCollector != "" {
		service := cfg.TraceService
		if service == "" {
			service = "mesh-proxy"
		}
		if p.tracing, err = newTracing(cfg.TraceCollector, cfg.TraceSampling, service, cfg.Labels, p.metrics.Registry); err != nil {
			p.closeAll()
			return nil, err
		}
	}
	p.outboundH = p.newHTTPEntry(outbound, p.logged(outbound, http.HandlerFunc(p.serveOutbound)))
	p.inboundH = p.newHTTPEntry(inbound, p.logged(inbound, http.HandlerFunc(p.serveInbound)))
	p.inboundForward = p.newForwarder(inbound, inboundTransport{p})
	p.originalDst = p.newForwarder(outbound, originalDstTransport{p})
	p.meshH2, p.meshH1, p.meshUpgrade = p.newMeshTransports(cfg.IdleTimeout, cfg.MaxConnsPerEndpoint)
	p.meshInbound = p.newMeshHTTP()
	if cfg.Identity != nil {
		p.metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "identity_cert_expiration_timestamp_seconds", Help: "When the proxy's current certificate expires (Unix time; 0 before the first).",
		}, func() float64 {
			if t := cfg.Identity.Expiry(); !t.IsZero() {
				return float64(t.Unix())
			}
			return 0
		}))
	}
	p.admin = p.newAdmin()
	return p, nil
}

// bindListeners binds every listener within its connection bound, so that
// a port conflict is reported before anything runs; on an error none stays
// bound.
func (p *Proxy) bindListeners() (err error) {
	cfg := &p.cfg
	defer func() {
		if err != nil {
			p.closeAll()
		}
	}()
	bind := func(name, metricName, addr string, max int) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s listener: %w", name, err)
		}
		b := p.bound(rawsock.Listener{Listener: ln}, metricName, max)
		p.bounded = append(p.bounded, b)
		return b, nil
	}
	if p.outboundLn, err = bind("outbound", outbound.String(), cfg.OutboundAddr, cfg.MaxConnections); err != nil {
		return err
	}
	if p.inboundLn, err = bind("inbound", inbound.String(), cfg.InboundAddr, cfg.MaxConnections); err != nil {
		return err
	}
	if p.adminLn, err = bind("admin", "admin", cfg.AdminAddr, cfg.AdminMaxConnections); err != nil {
		return err
	}
	all := []net.Listener{p.outboundLn, p.inboundLn, p.adminLn}
	for _, f := range cfg.OutboundTCP {
		ln, err := bind("outbound TCP "+f.Service.String(), "outbound_tcp", f.Listen, cfg.MaxConnections)
		if err != nil {
			return err
		}
		p.tcpLns = append(p.tcpLns, tcpListener{Listener: ln, fwd: f})
		all = append(all, ln)
	}
	p.ownPorts = ownPorts(all...)
	if cfg.InboundForward != "" {
		fwd := netip.MustParseAddrPort(cfg.InboundForward)
		if fwd.Addr().IsLoopback() && p.ownPorts[fwd.Port()] {
			return fmt.Errorf("inbound forward address %s is one of the proxy's own listeners; give the app's address", cfg.InboundForward)
		}
	}
	return nil
}

// closeAll closes the listeners bound so far.
func (p *Proxy) closeAll() {
	for _, ln := range []net.Listener{p.outboundLn, p.inboundLn, p.adminLn} {
		if ln != nil {
			ln.Close()
		}
	}
	for _, l := range p.tcpLns {
		l.Close()
	}
}

func setDefaults(cfg *Config) {
	orDefault(&cfg.OutboundAddr, DefaultOutboundAddr)
	orDefault(&cfg.InboundAddr, DefaultInboundAddr)
	orDefault(&cfg.AdminAddr, DefaultAdminAddr)
	orDefault(&cfg.DetectTimeout, DefaultDetectTimeout)
	orDefault(&cfg.ConnectTimeout, DefaultConnectTimeout)
	orDefault(&cfg.ShutdownGrace, DefaultShutdownGrace)
	orDefault(&cfg.IdleTimeout, DefaultIdleTimeout)
	orDefault(&cfg.DiscoveryIdle, DefaultDiscoveryIdle)
	orDefault(&cfg.MaxConnections, DefaultMaxConnections)
	orDefault(&cfg.AdminMaxConnections, DefaultAdminMaxConnections)
	orDefault(&cfg.RequestHeadTimeout, DefaultRequestHeadTimeout)
	orDefault(&cfg.ClientIdleTimeout, DefaultClientIdleTimeout)
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
}

// orDefault sets *v to def when it is unset: empty, zero or negative.
func orDefault[T string | int | time.Duration](v *T, def T) {
	var zero T
	if *v <= zero {
		*v = def
	}
}

// OutboundAddr, InboundAddr and AdminAddr return the bound addresses.
func (p *Proxy) OutboundAddr() net.Addr { return p.outboundLn.Addr() }

// InboundAddr returns the inbound listener's address.
func (p *Proxy) InboundAddr() net.Addr { return p.inboundLn.Addr() }

// AdminAddr returns the admin listener's address.
func (p *Proxy) AdminAddr() net.Addr { return p.adminLn.Addr() }

// Run serves until ctx ends or an admin client asks for shutdown, then
// drains: it stops accepting, lets requests in flight finish within the
// shutdown grace period, and returns.
func (p *Proxy) Run(ctx context.Context) error {
	discCtx, stopDiscovery := context.WithCancel(context.Background())
	defer stopDiscovery()
	first := make(chan struct{})
	var once sync.Once
	discErr := make(chan error, 1)
	go func() {
		discErr <- p.cfg.Discovery.Run(discCtx, func(s discovery.State) {
			p.apply(s)
			once.Do(func() { close(first) })
		})
	}()

	var g errgroup.Group
	if l := p.accessLog; l != nil {
		flushDone := make(chan struct{})
		defer func() { close(flushDone) }()
		go l.run(flushDone)
		defer l.flush()
	}
	if t := p.tracing; t != nil {
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), traceExportWait)
			defer cancel()
			t.shutdown(ctx)
		}()
	}
	g.Go(func() error { return serveHTTP(p.admin, p.adminLn) })
	g.Go(func() error { p.reclaimMemory(discCtx, 5*time.Second); return nil })
	if r, ok := p.onDemand.(discovery.Releaser); ok {
		g.Go(func() error { p.releaseIdle(discCtx, r, p.cfg.DiscoveryIdle); return nil })
	}
	p.log.Info("admin listening", slog.String("addr", p.adminLn.Addr().String()))
	var idReady <-chan struct{}
	if id := p.cfg.Identity; id != nil {
		idReady = id.Ready()
		g.Go(func() error { return id.Run(discCtx) })
	} else {
		closed := make(chan struct{})
		close(closed)
		idReady = closed
	}

	for first != nil || idReady != nil {
		select {
		case <-first:
			first = nil
			continue
		case <-idReady:
			idReady = nil
			continue
		case err := <-discErr:
			p.admin.Close()
			p.closeListeners()
			g.Wait()
			if err == nil {
				err = errors.New("discovery stopped before delivering any state")
			}
			return fmt.Errorf("discovery: %w", err)
		case <-ctx.Done():
			p.admin.Close()
			p.closeListeners()
			stopDiscovery()
			g.Wait()
			return nil
		}
	}

	g.Go(func() error { return serveHTTP(p.outboundH.server, p.outboundH.ln) })
	g.Go(func() error { return serveHTTP(p.inboundH.server, p.inboundH.ln) })
	g.Go(func() error { return serveHTTP(p.meshInbound.server, p.meshInbound.ln) })
	g.Go(func() error { return p.accept(p.outboundLn, p.handleOutbound) })
	g.Go(func() error { return p.accept(p.inboundLn, p.handleInbound) })
	for _, l := range p.tcpLns {
		g.Go(func() error {
			return p.accept(l.Listener, func(c net.Conn) { p.forwardOutboundTCP(c, l.fwd.Service, nil) })
		})
	}
	p.ready.Store(true)
	// What start-up alone needed of the binary (every package's
	// initialisation) is not needed again.
	if _, err := exepages.Drop(); err != nil {
		p.log.Debug("start-up pages of the binary kept", slog.Any("error", err))
	}
	p.log.Info("proxy ready",
		slog.String("outbound", p.outboundLn.Addr().String()),
		slog.String("inbound", p.inboundLn.Addr().String()),
		slog.Int("outbound_tcp", len(p.tcpLns)))

	select {
	case <-ctx.Done():
	case <-p.stop:
		p.log.Info("shutdown requested through the admin endpoint")
	}
	p.drain()
	stopDiscovery()
	p.admin.Close()
	return g.Wait()
}

// Shutdown asks a running proxy to drain and stop, as SIGTERM does.
func (p *Proxy) Shutdown() { p.stopOnce.Do(func() { close(p.stop) }) }

func (p *Proxy) closeListeners() {
	p.outboundLn.Close()
	p.inboundLn.Close()
	for _, l := range p.tcpLns {
		l.Close()
	}
}

// drain stops accepting and waits for work in flight, at most the grace
// period; what remains after it is closed.
func (p *Proxy) drain() {
	start := time.Now()
	p.draining.Store(true)
	p.log.Info("draining", slog.Duration("grace", p.cfg.ShutdownGrace))
	p.closeListeners()
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownGrace)
	defer cancel()
	// Connections still being peeked are handed over (or dropped) within
	// the detect timeout; after that no new connection reaches the servers.
	p.detecting.Wait()
	var wg sync.WaitGroup
	for _, shutdown := range []func(context.Context) bool{p.outboundH.shutdown, p.inboundH.shutdown, p.meshInbound.shutdown} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !shutdown(ctx) {
				p.log.Warn("grace period over; closing HTTP connections")
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if !p.tcpConns.wait(ctx) {
			p.log.Warn("grace period over; closing TCP connections", slog.Int("open", p.tcpConns.len()))
			p.tcpConns.closeAll()
		}
	}()
	wg.Wait()
	p.transports.closeIdle()
	p.closeIdleMesh()
	p.log.Info("drained", slog.Duration("took", time.Since(start).Round(time.Millisecond)))
}

// serveHTTP runs an http.Server, treating a normal stop as success.
func serveHTTP(s *http.Server, ln net.Listener) error {
	if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// connSet tracks open connections so drain can wait for or close them.
type connSet struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	empty chan struct{} // closed while the set is empty, nil if never used
}

func (s *connSet) add(c net.Conn) {
	s.mu.Lock()
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	if len(s.conns) == 0 && s.empty != nil {
		close(s.empty)
		s.empty = nil
	}
	s.mu.Unlock()
}

func (s *connSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// wait reports whether the set became empty before ctx ended.
func (s *connSet) wait(ctx context.Context) bool {
	s.mu.Lock()
	if len(s.conns) == 0 {
		s.mu.Unlock()
		return true
	}
	if s.empty == nil {
		s.empty = make(chan struct{})
	}
	ch := s.empty
	s.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
}
