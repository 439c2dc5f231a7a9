package controller

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshproj/mesh/discovery/xdswire"
	"github.com/meshproj/mesh/kubeapi"
	"github.com/meshproj/mesh/kubepolicy"
)

// Policies serves each meshed pod its inbound policy over xDS, as a
// resource its proxy asks for by name (xdswire.InboundPolicyName), built
// from the policy.mesh.io resources of the pod's namespace.
type Policies struct {
	Client      *kubeapi.Client
	TrustDomain string
	Log         *slog.Logger

	once     sync.Once
	pods     *kubeapi.Informer[kubepolicy.Pod]
	servers  *kubeapi.Informer[kubepolicy.Server]
	aps      *kubeapi.Informer[kubepolicy.AuthorizationPolicy]
	mtls     *kubeapi.Informer[kubepolicy.MeshTLSAuthentication]
	nets     *kubeapi.Informer[kubepolicy.NetworkAuthentication]
	cache    *cache.LinearCache
	current  map[string]string // resource name -> JSON
	problems map[string]bool   // what is wrong with the resources now
	changed  chan struct{}
	synced   chan struct{}
	Rebuilds atomic.Int64
	// Problems is how many things are wrong with the policy resources
	// (each logged once when it appears).
	Problems atomic.Int64
}

func (p *Policies) init() {
	p.once.Do(func() {
		p.changed = make(chan struct{}, 1)
		p.synced = make(chan struct{})
		poke := func() {
			select {
			case p.changed <- struct{}{}:
			default:
			}
		}
		const api = "/apis/policy.mesh.io/v1alpha1/"
		p.pods = &kubeapi.Informer[kubepolicy.Pod]{Client: p.Client, Path: "/api/v1/pods", Log: p.Log, OnChange: poke,
			Meta: func(o *kubepolicy.Pod) *kubeapi.ObjectMeta { return &o.Metadata }}
		p.servers = &kubeapi.Informer[kubepolicy.Server]{Client: p.Client, Path: api + "servers", Log: p.Log, OnChange: poke, Optional: true,
			Meta: func(o *kubepolicy.Server) *kubeapi.ObjectMeta { return &o.Metadata }}
		p.aps = &kubeapi.Informer[kubepolicy.AuthorizationPolicy]{Client: p.Client, Path: api + "authorizationpolicies", Log: p.Log, OnChange: poke, Optional: true,
			Meta: func(o *kubepolicy.AuthorizationPolicy) *kubeapi.ObjectMeta { return &o.Metadata }}
		p.mtls = &kubeapi.Informer[kubepolicy.MeshTLSAuthentication]{Client: p.Client, Path: api + "meshtlsauthentications", Log: p.Log, OnChange: poke, Optional: true,
			Meta: func(o *kubepolicy.MeshTLSAuthentication) *kubeapi.ObjectMeta { return &o.Metadata }}
		p.nets = &kubeapi.Informer[kubepolicy.NetworkAuthentication]{Client: p.Client, Path: api + "networkauthentications", Log: p.Log, OnChange: poke, Optional: true,
			Meta: func(o *kubepolicy.NetworkAuthentication) *kubeapi.ObjectMeta { return &o.Metadata }}
		p.cache = cache.NewLinearCache(xdswire.InboundPolicyType, cache.WithVersionPrefix(strconv.FormatInt(time.Now().UnixNano(), 36)+"-"))
		p.current = map[string]string{}
		p.problems = map[string]bool{}
	})
}

// Undecodable counts the policy resources and pods skipped because they
// did not decode (each is logged).
func (p *Policies) Undecodable() int64 {
	p.init()
	return p.pods.Undecodable.Load() + p.servers.Undecodable.Load() + p.aps.Undecodable.Load() + p.mtls.Undecodable.Load() + p.nets.Undecodable.Load()
}

// Cache is what the xDS server serves for the policy type.
func (p *Policies) Cache() *cache.LinearCache { p.init(); return p.cache }

// Synced is closed once every pod's policy is built: before that a proxy
// must not hear that it has none.
func (p *Policies) Synced() <-chan struct{} { p.init(); return p.synced }

// Run watches the API server and keeps the policies current.
func (p *Policies) Run(ctx context.Context) error {
	p.init()
	for _, inf := range []interface{ Run(context.Context) }{p.pods, p.servers, p.aps, p.mtls, p.nets} {
		go inf.Run(ctx)
	}
	syncThenRebuild(ctx, []<-chan struct{}{p.pods.Synced(), p.servers.Synced(), p.aps.Synced(), p.mtls.Synced(), p.nets.Synced()},
		p.changed, p.rebuild, p.synced, nil)
	return nil
}

func (p *Policies) rebuild() {
	p.Rebuilds.Add(1)
	set := &kubepolicy.Set{Servers: p.servers.List(), AuthorizationPolicies: p.aps.List(),
		MeshTLS: map[string]*kubepolicy.MeshTLSAuthentication{}, Networks: map[string]*kubepolicy.NetworkAuthentication{}}
	for _, m := range p.mtls.List() {
		set.MeshTLS[m.Metadata.Key()] = m
	}
	for _, n := range p.nets.List() {
		set.Networks[n.Metadata.Key()] = n
	}
	pods := p.pods.List()
	want := map[string]string{}
	problems := map[string]bool{}
	for _, pod := range pods {
		b, err := json.Marshal(set.ForPod(pod, p.TrustDomain))
		if err != nil {
			continue
		}
		want[xdswire.InboundPolicyName(pod.Metadata.Namespace, pod.Metadata.Name)] = string(b)
	}
	for _, pr := range set.Problems(pods, p.TrustDomain) {
		problems[pr.String()] = true
	}
	for pr := range problems {
		if !p.problems[pr] {
			p.Log.Warn("inbound policy: " + pr)
		}
	}
	p.problems = problems
	p.Problems.Store(int64(len(problems)))
	updates := map[string]types.Resource{}
	for name, js := range want {
		if p.current[name] != js {
			updates[name] = wrapperspb.Bytes([]byte(js))
		}
	}
	var gone []string
	for name := range p.current {
		if _, ok := want[name]; !ok {
			gone = append(gone, name)
		}
	}
	if len(updates) > 0 || len(gone) > 0 {
		if err := p.cache.UpdateResources(updates, gone); err != nil {
			p.Log.Error("updating inbound policies", slog.Any("error", err))
			return
		}
	}
	p.current = want
}
