// Package inventory says which workloads a mesh has and where their
// proxies' admin endpoints are, so that stat, tap and check can ask them.
// The Source interface has a local implementation (the state file that
// `mesh demo` writes); the Kubernetes one (pods of a deployment, reached by
// port-forward) comes with the controller.
package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
}

// Workload is a deployment-like group of instances.
type Workload struct {
	Kind      string `json:"kind"` // deploy
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Identity is the SPIFFE ID its proxies present.
	Identity string `json:"identity,omitempty"`
	// Service is the authority other workloads reach it by (host:port).
	Service   string     `json:"service,omitempty"`
	Instances []Instance `json:"instances"`
}

// Ref is kind/name, as users type it.
func (w Workload) Ref() string { return w.Kind + "/" + w.Name }

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

// Select picks workloads by resource: "" (all), "NAME", or "KIND/NAME".
// Kinds may be abbreviated as kubectl does (deploy, deployment, deployments).
func (m *Mesh) Select(resource string) ([]Workload, error) {
	if resource == "" {
		out := append([]Workload(nil), m.Workloads...)
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
		return out, nil
	}
	kind, name, hasKind := strings.Cut(resource, "/")
	if !hasKind {
		name, kind = kind, ""
	}
	switch kind {
	case "", "deploy", "deployment", "deployments", "workload":
	default:
		return nil, fmt.Errorf("resource %q: unknown kind %q (use deploy/NAME)", resource, kind)
	}
	for _, w := range m.Workloads {
		if w.Name == name {
			return []Workload{w}, nil
		}
	}
	var names []string
	for _, w := range m.Workloads {
		names = append(names, w.Ref())
	}
	sort.Strings(names)
	return nil, fmt.Errorf("no workload %q in the mesh; it has %s", name, strings.Join(names, ", "))
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
