// Package xds is the proxy's discovery backend on Kubernetes: an ADS
// client (xDS v3 over gRPC) that holds the controller's directory of
// services and subscribes to a service's resources the first time the app
// uses it. It reads the resources from the wire with package
// discovery/xdswire and speaks gRPC over net/http's HTTP/2 client, linking
// neither the Envoy types nor grpc-go.
package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/discovery/xdswire"
)

// Backend is the proxy's xDS client: one ADS stream to the controller.
// It holds every Listener (a small directory from names and virtual IPs to
// clusters, so that an unknown name fails at once) but subscribes to a
// Cluster and its endpoints only when the proxy first needs the service.
// When the stream breaks it keeps the last state and reconnects with
// backoff, so a controller restart changes nothing for traffic.
type Backend struct {
	// Addr is the controller's xDS address (host:port).
	Addr string
	// NodeID names this proxy to the controller (pod.namespace).
	NodeID string
	// Namespace and ClusterDomain complete short names: "web" from a pod in
	// "shop" is web.shop.svc.cluster.local.
	Namespace, ClusterDomain string
	// PodName, when set, asks for the pod's inbound policy too.
	PodName string
	// TLS, when set, secures the stream and checks the controller's
	// identity: discovery says which identity each endpoint must present,
	// so whoever could forge it could redirect traffic.
	TLS *tls.Config
	Log *slog.Logger

	once   sync.Once
	mu     sync.Mutex
	update func(discovery.State)
	routes map[discovery.Key]xdswire.Route
	byVIP  map[netip.AddrPort]string
	// routeConfigs names, by cluster, the route configuration its
	// listener names (none: the controller serves no RDS for it).
	routeConfigs map[string]string
	routesIn     chan struct{} // closed by the first Listener response
	clusters     map[string]*subscription
	revision     int
	resend       chan struct{}
	connected    bool
	lastErr      string
	since        time.Time // of the current connection state
	// policy is the pod's inbound policy, once one has arrived.
	policy *discovery.InboundPolicy
}

type subscription struct {
	aliases   map[string]bool
	svc       *discovery.Service // from the Cluster; nil until it arrives
	endpoints []discovery.Endpoint
	haveEps   bool
	// routes are the service's, from its RouteConfiguration; haveRoutes
	// says it arrived.
	routes     []discovery.Route
	haveRoutes bool
	// delivered is closed once a state with the service (and every alias
	// asked for so far) has been handed to the proxy.
	delivered chan struct{}
}

var _ discovery.OnDemand = (*Backend)(nil)

func (b *Backend) init() {
	b.once.Do(func() {
		b.routesIn = make(chan struct{})
		b.clusters = map[string]*subscription{}
		b.resend = make(chan struct{}, 1)
		if b.Log == nil {
			b.Log = slog.Default()
		}
		if b.ClusterDomain == "" {
			b.ClusterDomain = "cluster.local"
		}
	})
}

// Run implements discovery.Backend. The first state comes with the first
// answer from the controller (the directory of services, none of them
// subscribed yet), so the proxy is not ready before it can tell a
// service's name or virtual IP from any other; services arrive as they
// are asked for. Until then Run keeps trying.
func (b *Backend) Run(ctx context.Context, update func(discovery.State)) error {
	if b.Addr == "" {
		return errors.New("no xDS address")
	}
	b.init()
	b.mu.Lock()
	b.update = update
	b.mu.Unlock()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := b.stream(ctx)
		if ctx.Err() != nil {
			return nil
		}
		b.mu.Lock()
		if b.connected {
			b.since = time.Now()
		}
		b.connected = false
		b.lastErr = fmt.Sprint(err)
		b.mu.Unlock()
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		b.Log.Warn("xDS stream ended; keeping the last state and reconnecting",
			slog.String("controller", b.Addr), slog.Any("error", err), slog.Duration("retry_in", wait))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, 10*time.Second)
	}
	return nil
}

type typeState struct{ version, nonce string }

// adsStream is one ADS stream's state: per resource type, the version and
// nonce last seen and the names last asked for.
type adsStream struct {
	b      *Backend
	stream *grpcStream
	states map[string]*typeState
	sent   map[string][]string
}

// stream opens one ADS stream to the controller and serves it until ctx
// ends (nil) or the stream fails (the caller reconnects).
func (b *Backend) stream(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gs, err := dialADS(sctx, b.Addr, b.TLS, "mesh-proxy")
	if err != nil {
		return err
	}
	defer gs.Close()
	s := &adsStream{b: b, stream: gs,
		states: map[string]*typeState{xdswire.ListenerType: {}, xdswire.RouteType: {}, xdswire.ClusterType: {}, xdswire.EndpointType: {}, xdswire.InboundPolicyType: {}},
		sent:   map[string][]string{}}
	// Every listener; the clusters already in use (after a reconnect).
	if err := s.send(xdswire.ListenerType, nil, nil); err != nil {
		return err
	}
	if b.PodName != "" {
		if err := s.send(xdswire.InboundPolicyType, []string{xdswire.InboundPolicyName(b.Namespace, b.PodName)}, nil); err != nil {
			return err
		}
	}
	if err := s.subscribe(); err != nil {
		return err
	}
	responses, recvErr := s.receive(sctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			return err
		case <-b.resend:
			if err := s.subscribe(); err != nil {
				return err
			}
		case resp := <-responses:
			if err := s.handle(resp); err != nil {
				return err
			}
		}
	}
}

// nackCode is the gRPC status a refusal carries: INVALID_ARGUMENT.
const nackCode = 3

// send asks for names of a type, acknowledging what was last seen of it,
// or refusing it when nack is set.
func (s *adsStream) send(typeURL string, names []string, nack error) error {
	st := s.states[typeURL]
	req := &xdswire.Request{NodeID: s.b.NodeID, NodeCluster: s.b.Namespace, UserAgent: "mesh-proxy",
		TypeURL: typeURL, Names: names, Version: st.version, Nonce: st.nonce}
	if nack != nil {
		req.ErrorCode, req.ErrorMessage = nackCode, nack.Error()
	}
	s.sent[typeURL] = names
	return s.stream.Send(req)
}

// subscribe asks for the clusters, endpoints and routes of the services
// in use, when that set has changed since it was last asked for. Routes
// are asked for only where the service's listener names them, so that a
// controller which serves none is never asked.
func (s *adsStream) subscribe() error {
	clusters, routes := s.b.clusterNames()
	for _, sub := range []struct {
		typ   string
		names []string
	}{{xdswire.ClusterType, clusters}, {xdswire.EndpointType, clusters}, {xdswire.RouteType, routes}} {
		if len(sub.names) == 0 && len(s.sent[sub.typ]) == 0 || slices.Equal(sub.names, s.sent[sub.typ]) {
			continue
		}
		if err := s.send(sub.typ, sub.names, nil); err != nil {
			return err
		}
	}
	return nil
}

// receive reads responses on a goroutine of its own until the stream fails
// or ctx ends.
func (s *adsStream) receive(ctx context.Context) (<-chan *xdswire.Response, <-chan error) {
	responses := make(chan *xdswire.Response)
	recvErr := make(chan error, 1)
	go func() {
		for {
			resp, err := s.stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case responses <- resp:
			case <-ctx.Done():
				return
			}
		}
	}()
	return responses, recvErr
}

// handle applies a response and acknowledges it, or keeps the last state
// and refuses it.
func (s *adsStream) handle(resp *xdswire.Response) error {
	st := s.states[resp.TypeURL]
	if st == nil {
		return nil
	}
	st.nonce = resp.Nonce
	if err := s.b.apply(resp); err != nil {
		s.b.Log.Error("xDS response rejected; keeping the last state", slog.String("type", resp.TypeURL),
			slog.String("version", resp.Version), slog.Any("error", err))
		return s.send(resp.TypeURL, s.sent[resp.TypeURL], err)
	}
	st.version = resp.Version
	return s.send(resp.TypeURL, s.sent[resp.TypeURL], nil)
}

// clusterNames are the clusters in use, and the route configurations of
// those that have one.
func (b *Backend) clusterNames() (clusters, routes []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	clusters = make([]string, 0, len(b.clusters))
	for n := range b.clusters {
		clusters = append(clusters, n)
		if rc := b.routeConfigLocked(n); rc != "" {
			routes = append(routes, rc)
		}
	}
	slices.Sort(clusters)
	slices.Sort(routes)
	return clusters, routes
}

// routeConfigLocked is the route configuration the listener of a cluster
// names, or "".
func (b *Backend) routeConfigLocked(cluster string) string { return b.routeConfigs[cluster] }

// apply decodes a whole response first and changes nothing if any of it
// is bad.
func (b *Backend) apply(resp *xdswire.Response) error {
	switch resp.TypeURL {
	case xdswire.ListenerType:
		routes := make(map[discovery.Key]xdswire.Route, len(resp.Resources))
		byVIP := map[netip.AddrPort]string{}
		routeConfigs := map[string]string{}
		for _, res := range resp.Resources {
			r, err := xdswire.DecodeListener(res)
			if err != nil {
				return err
			}
			routes[r.Key] = r
			for _, v := range r.VIPs {
				byVIP[v] = r.Cluster
			}
			if r.RouteConfig != "" {
				routeConfigs[r.Cluster] = r.RouteConfig
			}
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		b.routes, b.byVIP, b.routeConfigs = routes, byVIP, routeConfigs
		b.askLocked() // a listener may name routes now
		if !b.connected {
			b.connected, b.lastErr, b.since = true, "", time.Now()
			b.Log.Info("xDS connected", slog.String("controller", b.Addr), slog.Int("services", len(routes)))
		}
		select {
		case <-b.routesIn:
		default:
			close(b.routesIn)
		}
		b.deliverLocked()
	case xdswire.ClusterType:
		got := map[string]*discovery.Service{}
		for _, res := range resp.Resources {
			s, err := xdswire.DecodeCluster(res)
			if err != nil {
				return err
			}
			got[xdswire.Name(discovery.Key{Host: s.Name, Port: s.Port})] = &s
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		for name, sub := range b.clusters {
			if s, ok := got[name]; ok {
				sub.svc = s
			} else if sub.svc != nil {
				// Clusters come whole: one missing was deleted.
				sub.svc, sub.endpoints, sub.haveEps = nil, nil, false
				sub.delivered = make(chan struct{})
			}
		}
		b.deliverLocked()
	case xdswire.InboundPolicyType:
		if len(resp.Resources) == 0 {
			return nil // none built for the pod yet: keep what is in force
		}
		ip, err := xdswire.DecodeInboundPolicy(resp.Resources[0])
		if err != nil {
			return err
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		b.policy = &ip
		b.deliverLocked()
	case xdswire.RouteType:
		got := map[string][]discovery.Route{}
		for _, res := range resp.Resources {
			name, routes, err := xdswire.DecodeRoutes(res)
			if err != nil {
				return err
			}
			got[name] = routes
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		for name, sub := range b.clusters {
			if routes, ok := got[b.routeConfigLocked(name)]; ok {
				sub.routes, sub.haveRoutes = routes, true
			}
		}
		b.deliverLocked()
	case xdswire.EndpointType:
		got := map[string][]discovery.Endpoint{}
		for _, res := range resp.Resources {
			name, eps, err := xdswire.DecodeEndpoints(res)
			if err != nil {
				return err
			}
			got[name] = eps
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		for name, eps := range got {
			if sub := b.clusters[name]; sub != nil {
				sub.endpoints, sub.haveEps = eps, true
			}
		}
		b.deliverLocked()
	}
	return nil
}

// deliverLocked hands the proxy every subscribed service whose cluster and
// endpoints are both known.
func (b *Backend) deliverLocked() {
	b.revision++
	state := discovery.State{Source: "xds " + b.Addr, Revision: strconv.Itoa(b.revision), Updated: time.Now()}
	if b.policy != nil {
		state.Policies = []discovery.InboundPolicy{*b.policy}
	}
	var done []*subscription
	for _, name := range slices.Sorted(maps.Keys(b.clusters)) {
		sub := b.clusters[name]
		if sub.svc == nil || !sub.haveEps || !sub.haveRoutes && b.routeConfigLocked(name) != "" {
			continue
		}
		s := *sub.svc
		s.Endpoints = sub.endpoints
		s.Routes = sub.routes
		s.Aliases = slices.Sorted(maps.Keys(sub.aliases))
		for _, v := range b.routes[s.Key()].VIPs {
			if v.Port() == s.Port {
				s.Addresses = append(s.Addresses, v.Addr())
			}
		}
		state.Services = append(state.Services, s)
		done = append(done, sub)
	}
	if b.update != nil {
		b.update(state)
	}
	for _, sub := range done {
		select {
		case <-sub.delivered:
		default:
			close(sub.delivered)
		}
	}
}

// candidates are the fully qualified names a host may stand for, as DNS
// search domains in a pod would expand it.
func (b *Backend) candidates(host string) []string {
	suffix := ".svc." + b.ClusterDomain
	switch {
	case strings.HasSuffix(host, suffix):
		return []string{host}
	case strings.HasSuffix(host, ".svc"):
		return []string{host + "." + b.ClusterDomain}
	case !strings.Contains(host, "."):
		return []string{host + "." + b.Namespace + suffix}
	case strings.Count(host, ".") == 1:
		return []string{host + suffix, host}
	}
	return []string{host}
}

func (b *Backend) routesKnown(ctx context.Context) error {
	b.init()
	select {
	case <-b.routesIn:
		return nil
	case <-ctx.Done():
		return b.noAnswer()
	}
}

// noAnswer explains a wait that ran out.
func (b *Backend) noAnswer() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.connected && b.lastErr != "" {
		return fmt.Errorf("no answer from the controller at %s (not connected: %s)", b.Addr, b.lastErr)
	}
	return fmt.Errorf("no answer from the controller at %s in time", b.Addr)
}

// Want implements discovery.OnDemand.
func (b *Backend) Want(ctx context.Context, key discovery.Key) error {
	if err := b.routesKnown(ctx); err != nil {
		return err
	}
	b.mu.Lock()
	var cluster string
	candidates := b.candidates(key.Host)
	for _, host := range candidates {
		if r, ok := b.routes[discovery.Key{Host: host, Port: key.Port}]; ok {
			cluster = r.Cluster
			break
		}
	}
	if cluster == "" {
		n := len(b.routes)
		b.mu.Unlock()
		return fmt.Errorf("%w: the controller at %s knows no %s among its %d service ports",
			discovery.ErrNotFound, b.Addr, xdswire.Name(discovery.Key{Host: candidates[0], Port: key.Port}), n)
	}
	ch := b.subscribeLocked(cluster, key.Host)
	b.mu.Unlock()
	return b.wait(ctx, ch)
}

// WantAddr implements discovery.OnDemand.
func (b *Backend) WantAddr(ctx context.Context, addr netip.AddrPort) error {
	if err := b.routesKnown(ctx); err != nil {
		return err
	}
	b.mu.Lock()
	cluster, ok := b.byVIP[addr]
	if !ok {
		b.mu.Unlock()
		return fmt.Errorf("%w: %s is no service's virtual IP", discovery.ErrNotFound, addr)
	}
	ch := b.subscribeLocked(cluster, "")
	b.mu.Unlock()
	return b.wait(ctx, ch)
}

func (b *Backend) wait(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return b.noAnswer()
	}
}

// Status is the connection as the config dump shows it.
type Status struct {
	Controller string    `json:"controller"`
	TLS        bool      `json:"tls"`
	Connected  bool      `json:"connected"`
	LastError  string    `json:"lastError,omitempty"`
	Since      time.Time `json:"since,omitzero"`
	// Known is how many service ports the controller has; Subscribed are
	// the ones this proxy asked for.
	Known      int      `json:"known"`
	Subscribed []string `json:"subscribed"`
}

// Status implements discovery.StatusReporter.
func (b *Backend) Status() any {
	b.init()
	b.mu.Lock()
	defer b.mu.Unlock()
	return Status{Controller: b.Addr, TLS: b.TLS != nil, Connected: b.connected, LastError: b.lastErr, Since: b.since,
		Known: len(b.routes), Subscribed: slices.Sorted(maps.Keys(b.clusters))}
}

// askLocked has the stream send its subscriptions again, where they
// changed.
func (b *Backend) askLocked() {
	select {
	case b.resend <- struct{}{}:
	default:
	}
}

func (b *Backend) subscribeLocked(cluster, alias string) <-chan struct{} {
	sub := b.clusters[cluster]
	if sub == nil {
		sub = &subscription{aliases: map[string]bool{}, delivered: make(chan struct{})}
		b.clusters[cluster] = sub
		b.askLocked()
	}
	if key, err := xdswire.KeyOf(cluster); err == nil && alias != "" && alias != key.Host && !sub.aliases[alias] {
		sub.aliases[alias] = true
		if sub.svc != nil && sub.haveEps {
			sub.delivered = make(chan struct{})
			b.deliverLocked()
		}
	}
	return sub.delivered
}
