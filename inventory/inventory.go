// Package inventory says which workloads a mesh has and where their
// proxies' admin endpoints are, so that stat, tap and check can ask them.
// The Source interface has a local implementation (the state file that
// `mesh demo` writes) and a Kubernetes one (inventory/kube: meshed pods
// grouped by workload, reached by port-forward).
package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// Instance is one running copy of a workload with its proxy.
type Instance struct {
	Name  string `json:"name"`
	Admin string `json:"admin"` // host:port of the proxy's admin endpoint
	// Inbound is the proxy's inbound address.
	Inbound string `json:"inbound,omitempty"`
	// PID is the local proxy process, when there is one.
	PID int `json:"pid,omitempty"`
	// ProxyVersion is the version of the proxy that runs, when known (on a
	// cluster, the tag of the proxy container's image).
	ProxyVersion string `json:"proxyVersion,omitempty"`
}

// Workload is a deployment-like group of instances.
type Workload struct {
	Kind      string `json:"kind"` // deploy
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Identity is the SPIFFE ID its proxies present.
	Identity string `json:"identity,omitempty"`
	// Service is the authority other workloads reach it by (host:port).
	Service string `json:"service,omitempty"`
	// Services are the Kubernetes Services (in the workload's namespace)
	// that select its pods.
	Services  []string   `json:"services,omitempty"`
	Instances []Instance `json:"instances"`
}

// Ref is kind/name, as users type it.
func (w Workload) Ref() string { return w.Kind + "/" + w.Name }

// Serves reports whether an authority, as a client wrote it (host or
// host:port), names this workload: its Service's host, or one of its
// Kubernetes Services by any name a pod may use for it (web, web.shop,
// web.shop.svc, web.shop.svc.cluster.local).
func (w Workload) Serves(authority string) bool {
	host := authority
	if h, _, err := net.SplitHostPort(authority); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if w.Service != "" {
		own := w.Service
		if h, _, err := net.SplitHostPort(own); err == nil {
			own = h
		}
		if host == own {
			return true
		}
	}
	for _, svc := range w.Services {
		inNS := svc + "." + w.Namespace
		if host == svc || host == inNS || host == inNS+".svc" || strings.HasPrefix(host, inNS+".svc.") {
			return true
		}
	}
	return false
}

// Mesh is everything a Source knows.
type Mesh struct {
	// ControlPlane lists control-plane endpoints for checks.
	ControlPlane ControlPlane `json:"controlPlane"`
	Workloads    []Workload   `json:"workloads"`
}

// ControlPlane is where the local control plane listens.
type ControlPlane struct {
	IdentityAddr  string `json:"identityAddr,omitempty"`
	TrustAnchors  string `json:"trustAnchors,omitempty"` // PEM file
	TrustDomain   string `json:"trustDomain,omitempty"`
	DiscoveryFile string `json:"discoveryFile,omitempty"`
}

// Source finds the mesh.
type Source interface {
	Mesh(ctx context.Context) (*Mesh, error)
}

// kinds maps what users type, as kubectl abbreviates it, to the kind a
// Workload carries.
var kinds = map[string]string{
	"deploy": "deploy", "deployment": "deploy", "deployments": "deploy", "workload": "deploy",
	"sts": "sts", "statefulset": "sts", "statefulsets": "sts",
	"ds": "ds", "daemonset": "ds", "daemonsets": "ds",
	"job": "job", "jobs": "job",
	"rs": "rs", "replicaset": "rs", "replicasets": "rs",
	"po": "po", "pod": "pod", "pods": "po",
	"ns": "ns", "namespace": "ns", "namespaces": "ns",
	"svc": "svc", "service": "svc", "services": "svc",
}

// Kind is the canonical kind for what a user typed ("deployments" is
// "deploy"), or "" if it names none.
func Kind(typed string) string {
	k := kinds[strings.ToLower(typed)]
	if k == "pod" {
		k = "po"
	}
	return k
}

// Select picks workloads by resource: "" (all), "NAME", "KIND" (every
// workload of that kind), "KIND/NAME", "ns/NAME" (every workload in a
// namespace) or "svc/NAME" (the workloads behind a Service). Kinds may be
// written as kubectl does (deploy, deployment, deployments; sts, ds, job,
// rs, po, svc).
func (m *Mesh) Select(resource string) ([]Workload, error) {
	all := append([]Workload(nil), m.Workloads...)
	sort.SliceStable(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	if resource == "" {
		return all, nil
	}
	typed, name, hasKind := strings.Cut(resource, "/")
	kind := Kind(typed)
	if hasKind && kind == "" {
		return nil, fmt.Errorf("resource %q: unknown kind %q (use deploy/NAME, sts/NAME, ds/NAME, job/NAME, po/NAME, svc/NAME or ns/NAME)", resource, typed)
	}
	if kind == "svc" {
		return m.behind(resource, name, hasKind)
	}
	if kind == "po" && hasKind {
		// A pod of a bigger workload (deploy/web's web-5d8c-x2x9q) is a
		// workload of one.
		for _, w := range all {
			for _, inst := range w.Instances {
				if inst.Name == name {
					one := w
					one.Kind, one.Name, one.Instances = "po", inst.Name, []Instance{inst}
					return []Workload{one}, nil
				}
			}
		}
	}
	var out []Workload
	for _, w := range all {
		switch {
		case !hasKind && kind != "": // a kind alone: all of that kind
			if w.Kind == kind {
				out = append(out, w)
			}
		case kind == "ns":
			if w.Namespace == name {
				out = append(out, w)
			}
		case !hasKind: // a name alone
			if w.Name == typed {
				return []Workload{w}, nil
			}
		case w.Kind == kind && w.Name == name:
			return []Workload{w}, nil
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	if !hasKind && kind != "" {
		return nil, fmt.Errorf("no %s in the mesh", typed)
	}
	var names []string
	for _, w := range all {
		names = append(names, w.Ref())
	}
	sort.Strings(names)
	if !hasKind {
		name = typed
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no workload %q: nothing is meshed here", name)
	}
	return nil, fmt.Errorf("no workload %q in the mesh; it has %s", name, strings.Join(names, ", "))
}

// behind selects the workloads behind Service name, or with no name,
// every workload that some Service selects.
func (m *Mesh) behind(resource, name string, hasName bool) ([]Workload, error) {
	var out []Workload
	for _, w := range m.Workloads {
		if !hasName && (len(w.Services) > 0 || w.Service != "") {
			out = append(out, w)
			continue
		}
		if hasName && (slices.Contains(w.Services, name) || w.Serves(name)) {
			out = append(out, w)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if len(out) == 0 {
		if !hasName {
			return nil, errors.New("no service in the mesh")
		}
		return nil, fmt.Errorf("%s: no meshed workload is behind service %q", resource, name)
	}
	return out, nil
}

// StateFile is a local mesh's description, written by `mesh demo`.
type StateFile struct {
	Path string
}

// DefaultStatePath is where `mesh demo` writes its state unless told
// otherwise; MESH_STATE_FILE overrides it.
func DefaultStatePath() string {
	if p := os.Getenv("MESH_STATE_FILE"); p != "" {
		return p
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "mesh", "demo.json")
}

// ErrNoMesh means no local mesh is running.
var ErrNoMesh = errors.New("no local mesh found")

// Mesh implements Source.
func (s StateFile) Mesh(context.Context) (*Mesh, error) {
	data, err := os.ReadFile(s.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist (start one with 'mesh demo')", ErrNoMesh, s.Path)
	}
	if err != nil {
		return nil, err
	}
	var m Mesh
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("reading %s: %w", s.Path, err)
	}
	return &m, nil
}

// Write saves a mesh description atomically (write, then rename), so a
// reader never sees half a file.
func (s StateFile) Write(m *Mesh) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o755); err != nil {
		return err
	}
	tmp := s.Path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, s.Path)
}
