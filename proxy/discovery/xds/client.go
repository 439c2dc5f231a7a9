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
	// listeners are the directory, by cluster name; routes and byVIP find
	// a cluster by service port and by virtual IP.
	listeners map[string]xdswire.Route
	routes    map[discovery.Key]xdswire.Route
	byVIP     map[netip.AddrPort]string
	routesIn  chan struct{} // closed by the first Listener response
	clusters  map[string]*subscription
	revision  int
	resend    chan struct{}
	connected bool
	lastErr   string
	since     time.Time // of the current connection state
	// policy is the pod's inbound policy, once one has arrived;
	// policyChanged says it has not been delivered yet.
	policy        *discovery.InboundPolicy
	policyChanged bool
	// versions are the versions held, by type and name: a new stream
	// names them, so that a controller holding the same sends them no
	// more.
	versions map[string]map[string]string
	// changed names the subscribed clusters changed since the last state
	// delivered.
	changed map[string]bool
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
	// built is the service as last delivered; nil once anything of it
	// changed.
	built *discovery.Service
}

var _ discovery.OnDemand = (*Backend)(nil)

func (b *Backend) init() {
	b.once.Do(func() {
		b.routesIn = make(chan struct{})
		b.clusters = map[string]*subscription{}
		b.listeners = map[string]xdswire.Route{}
		b.routes = map[discovery.Key]xdswire.Route{}
		b.byVIP = map[netip.AddrPort]string{}
		b.versions = map[string]map[string]string{}
		b.changed = map[string]bool{}
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

// adsStream is one delta ADS stream's state: per resource type, the names
// this stream has subscribed to.
type adsStream struct {
	b      *Backend
	stream *grpcStream
	sent   map[string]map[string]bool
	// noded says the node has been sent: the controller keeps it for the
	// stream, so only the first request carries it.
	noded bool
}

// stream opens one delta ADS stream to the controller and serves it until
// ctx ends (nil) or the stream fails (the caller reconnects).
func (b *Backend) stream(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gs, err := dialADS(sctx, b.Addr, b.TLS, "mesh-proxy")
	if err != nil {
		return err
	}
	defer gs.Close()
	s := &adsStream{b: b, stream: gs, sent: map[string]map[string]bool{}}
	// Every listener (a wildcard: no names), telling the controller which
	// versions are held from before a reconnect so that it sends only what
	// differs; then the pod's policy and the services already in use.
	if err := s.send(&xdswire.DeltaRequest{TypeURL: xdswire.ListenerType, Initial: b.heldVersions(xdswire.ListenerType, nil)}); err != nil {
		return err
	}
	if b.PodName != "" {
		name := xdswire.InboundPolicyName(b.Namespace, b.PodName)
		if err := s.send(&xdswire.DeltaRequest{TypeURL: xdswire.InboundPolicyType, Subscribe: []string{name},
			Initial: b.heldVersions(xdswire.InboundPolicyType, []string{name})}); err != nil {
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

func (s *adsStream) send(req *xdswire.DeltaRequest) error {
	if !s.noded {
		req.NodeID, req.NodeCluster, req.Agent = s.b.NodeID, s.b.Namespace, "mesh-proxy"
		s.noded = true
	}
	return s.stream.Send(req)
}

// subscribe tells the controller which clusters, endpoints and routes of
// the services in use it starts and stops wanting, where that changed
// since it was last told. Routes are asked for only where the service's
// listener names them, so that a controller which serves none is never
// asked.
func (s *adsStream) subscribe() error {
	clusters, routes := s.b.clusterNames()
	for _, sub := range []struct {
		typ   string
		names []string
	}{{xdswire.ClusterType, clusters}, {xdswire.EndpointType, clusters}, {xdswire.RouteType, routes}} {
		sent := s.sent[sub.typ]
		if sent == nil {
			sent = map[string]bool{}
			s.sent[sub.typ] = sent
		}
		var add, drop []string
		want := make(map[string]bool, len(sub.names))
		for _, n := range sub.names {
			want[n] = true
			if !sent[n] {
				add = append(add, n)
			}
		}
		for n := range sent {
			if !want[n] {
				drop = append(drop, n)
			}
		}
		if len(add) == 0 && len(drop) == 0 {
			continue
		}
		slices.Sort(drop)
		// Versions held from before a reconnect are named with the first
		// subscription to them on this stream.
		if err := s.send(&xdswire.DeltaRequest{TypeURL: sub.typ, Subscribe: add, Unsubscribe: drop,
			Initial: s.b.heldVersions(sub.typ, add)}); err != nil {
			return err
		}
		for _, n := range add {
			sent[n] = true
		}
		for _, n := range drop {
			delete(sent, n)
		}
		s.b.forgetVersions(sub.typ, drop)
	}
	return nil
}

// receive reads responses on a goroutine of its own until the stream fails
// or ctx ends.
func (s *adsStream) receive(ctx context.Context) (<-chan *xdswire.DeltaResponse, <-chan error) {
	responses := make(chan *xdswire.DeltaResponse)
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
func (s *adsStream) handle(resp *xdswire.DeltaResponse) error {
	ack := &xdswire.DeltaRequest{TypeURL: resp.TypeURL, Nonce: resp.Nonce}
	if err := s.b.apply(resp); err != nil {
		s.b.Log.Error("xDS response rejected; keeping the last state", slog.String("type", resp.TypeURL),
			slog.String("version", resp.SystemVersion), slog.Any("error", err))
		ack.ErrorCode, ack.ErrorMessage = nackCode, err.Error()
	}
	return s.send(ack)
}

// heldVersions are the versions held of names of a type (of every one
// held, for nil names).
func (b *Backend) heldVersions(typ string, names []string) map[string]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	held := b.versions[typ]
	if names == nil {
		return maps.Clone(held)
	}
	var out map[string]string
	for _, n := range names {
		if v, ok := held[n]; ok {
			if out == nil {
				out = map[string]string{}
			}
			out[n] = v
		}
	}
	return out
}

func (b *Backend) forgetVersions(typ string, names []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, n := range names {
		delete(b.versions[typ], n)
	}
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
// names, or "" (the controller serves no RDS for it).
func (b *Backend) routeConfigLocked(cluster string) string { return b.listeners[cluster].RouteConfig }

// apply decodes a whole response first and changes nothing if any of it
// is bad; then it changes what the response names, and only that.
func (b *Backend) apply(resp *xdswire.DeltaResponse) error {
	decoded := make([]any, len(resp.Resources))
	for i, res := range resp.Resources {
		var v any
		var name string
		var err error
		switch resp.TypeURL {
		case xdswire.ListenerType:
			var r xdswire.Route
			r, err = xdswire.DecodeListener(res.Value)
			v, name = r, r.Cluster
		case xdswire.ClusterType:
			var s discovery.Service
			s, err = xdswire.DecodeCluster(res.Value)
			v, name = &s, xdswire.Name(s.Key())
		case xdswire.EndpointType:
			var eps []discovery.Endpoint
			name, eps, err = xdswire.DecodeEndpoints(res.Value)
			v = eps
		case xdswire.RouteType:
			var routes []discovery.Route
			name, routes, err = xdswire.DecodeRoutes(res.Value)
			v = routes
		case xdswire.InboundPolicyType:
			var ip discovery.InboundPolicy
			ip, err = xdswire.DecodeInboundPolicy(res.Value)
			v, name = &ip, res.Name
		default:
			return fmt.Errorf("a response of %s, which was not asked for", resp.TypeURL)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", res.Name, err)
		}
		if name != res.Name {
			return fmt.Errorf("resource %s holds %s", res.Name, name)
		}
		decoded[i] = v
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	versions := b.versions[resp.TypeURL]
	if versions == nil {
		versions = map[string]string{}
		b.versions[resp.TypeURL] = versions
	}
	for _, name := range resp.Removed {
		delete(versions, name)
	}
	for _, res := range resp.Resources {
		if b.wantedLocked(resp.TypeURL, res.Name) {
			versions[res.Name] = res.Version
		}
	}
	switch resp.TypeURL {
	case xdswire.ListenerType:
		for _, name := range resp.Removed {
			b.dropListenerLocked(name, "")
		}
		for _, v := range decoded {
			r := v.(xdswire.Route)
			b.dropListenerLocked(r.Cluster, r.RouteConfig)
			b.listeners[r.Cluster] = r
			b.routes[r.Key] = r
			for _, vip := range r.VIPs {
				b.byVIP[vip] = r.Cluster
			}
			b.touchLocked(r.Cluster)
		}
		b.askLocked() // a listener may name routes now, or no more
		if !b.connected {
			b.connected, b.lastErr, b.since = true, "", time.Now()
			b.Log.Info("xDS connected", slog.String("controller", b.Addr), slog.Int("services", len(b.routes)))
		}
		select {
		case <-b.routesIn:
		default:
			close(b.routesIn)
		}
	case xdswire.ClusterType:
		for _, name := range resp.Removed {
			if sub := b.clusters[name]; sub != nil && sub.svc != nil {
				// The service is gone: it is no longer delivered until it
				// comes back whole.
				sub.svc, sub.endpoints, sub.haveEps = nil, nil, false
				sub.delivered = make(chan struct{})
				b.touchLocked(name)
			}
		}
		for _, v := range decoded {
			s := v.(*discovery.Service)
			name := xdswire.Name(s.Key())
			if sub := b.clusters[name]; sub != nil {
				sub.svc = s
				b.touchLocked(name)
			}
		}
	case xdswire.EndpointType:
		for _, name := range resp.Removed {
			if sub := b.clusters[name]; sub != nil && sub.haveEps {
				sub.endpoints, sub.haveEps = nil, false
				b.touchLocked(name)
			}
		}
		for i, v := range decoded {
			name := resp.Resources[i].Name
			if sub := b.clusters[name]; sub != nil {
				sub.endpoints, sub.haveEps = v.([]discovery.Endpoint), true
				b.touchLocked(name)
			}
		}
	case xdswire.RouteType:
		type routes struct {
			routes []discovery.Route
			ok     bool // false: removed
		}
		got := make(map[string]routes, len(decoded)+len(resp.Removed))
		for i, v := range decoded {
			got[resp.Resources[i].Name] = routes{v.([]discovery.Route), true}
		}
		for _, name := range resp.Removed {
			got[name] = routes{}
		}
		for name, sub := range b.clusters {
			if r, ok := got[b.routeConfigLocked(name)]; ok {
				sub.routes, sub.haveRoutes = r.routes, r.ok
				b.touchLocked(name)
			}
		}
	case xdswire.InboundPolicyType:
		if len(decoded) == 0 {
			return nil // none built for the pod yet, or no more: keep what is in force
		}
		b.policy = decoded[0].(*discovery.InboundPolicy)
		b.policyChanged = true
	}
	b.deliverLocked()
	return nil
}

// wantedLocked says a resource is one the proxy still asks for: a
// response may cross the unsubscription of what it holds, and a version
// kept of that would be named to the controller at every reconnect.
func (b *Backend) wantedLocked(typ, name string) bool {
	switch typ {
	case xdswire.ClusterType, xdswire.EndpointType:
		return b.clusters[name] != nil
	case xdswire.RouteType:
		for cluster := range b.clusters {
			if b.routeConfigLocked(cluster) == name {
				return true
			}
		}
		return false
	}
	return true
}

// dropListenerLocked forgets the listener of a cluster: its name and
// virtual IPs, and the routes it named unless its successor names the
// same route configuration (which the controller then does not send
// again).
func (b *Backend) dropListenerLocked(cluster, nextRouteConfig string) {
	old, ok := b.listeners[cluster]
	if !ok {
		return
	}
	delete(b.listeners, cluster)
	if b.routes[old.Key].Cluster == cluster {
		delete(b.routes, old.Key)
	}
	for _, vip := range old.VIPs {
		if b.byVIP[vip] == cluster {
			delete(b.byVIP, vip)
		}
	}
	if sub := b.clusters[cluster]; sub != nil && old.RouteConfig != nextRouteConfig {
		// Its routes went with the listener that named them.
		sub.routes, sub.haveRoutes = nil, false
	}
	b.touchLocked(cluster)
}

// touchLocked marks a subscribed service as changed, to be built again
// and named as changed in the next state.
func (b *Backend) touchLocked(cluster string) {
	if sub := b.clusters[cluster]; sub != nil {
		sub.built = nil
		b.changed[cluster] = true
	}
}

// deliverLocked hands the proxy every subscribed service whose cluster and
// endpoints are both known, building again only those that changed, and
// names them (and the ones that went) as the changed ones.
func (b *Backend) deliverLocked() {
	if len(b.changed) == 0 && !b.policyChanged && b.revision > 0 {
		return // the first state goes out anyway: the directory is in
	}
	b.revision++
	state := discovery.State{Source: "xds " + b.Addr, Revision: strconv.Itoa(b.revision), Updated: time.Now(),
		Services: make([]discovery.Service, 0, len(b.clusters)), Changed: make(map[discovery.Key]bool, len(b.changed))}
	if b.policy != nil {
		state.Policies = []discovery.InboundPolicy{*b.policy}
	}
	for name := range b.changed {
		if k, err := xdswire.KeyOf(name); err == nil {
			state.Changed[k] = true
		}
	}
	var done []*subscription
	for _, name := range slices.Sorted(maps.Keys(b.clusters)) {
		sub := b.clusters[name]
		if sub.svc == nil || !sub.haveEps || !sub.haveRoutes && b.routeConfigLocked(name) != "" {
			continue
		}
		if sub.built == nil {
			s := *sub.svc
			s.Endpoints = sub.endpoints
			s.Routes = sub.routes
			s.Aliases = slices.Sorted(maps.Keys(sub.aliases))
			for _, v := range b.listeners[name].VIPs {
				if v.Port() == s.Port {
					s.Addresses = append(s.Addresses, v.Addr())
				}
			}
			sub.built = &s
		}
		state.Services = append(state.Services, *sub.built)
		done = append(done, sub)
	}
	clear(b.changed)
	b.policyChanged = false
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
		b.touchLocked(cluster)
		if sub.svc != nil && sub.haveEps {
			sub.delivered = make(chan struct{})
			b.deliverLocked()
		}
	}
	return sub.delivered
}

// Release implements discovery.Releaser: the proxy has not used these
// services for a while. Their subscriptions end, and the next state no
// longer holds them; a later Want subscribes again.
func (b *Backend) Release(keys []discovery.Key) {
	b.init()
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, k := range keys {
		name := xdswire.Name(k)
		if _, ok := b.clusters[name]; !ok {
			continue
		}
		b.changed[name] = true
		delete(b.clusters, name)
		n++
	}
	if n == 0 {
		return
	}
	b.Log.Debug("xDS: released services unused for a while", slog.Int("released", n), slog.Int("subscribed", len(b.clusters)))
	b.askLocked()
	b.deliverLocked()
}
