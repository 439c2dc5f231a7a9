package cli

// How the diagnostics find the mesh: the local demo's state file, or a
// Kubernetes cluster through the kubeconfig, as kubectl finds it. Which
// one is never a guess: the command says which it talks to.

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/meshproj/mesh/check"
	"github.com/meshproj/mesh/inventory"
	"github.com/meshproj/mesh/inventory/kube"
)

func addStateFlag(cmd *cobra.Command) {
	cmd.Flags().String("state-file", inventory.DefaultStatePath(), "state file of the local mesh (written by mesh demo)")
}

// addClusterFlags adds kubectl's flags for finding a cluster, and --local
// for the demo.
func addClusterFlags(cmd *cobra.Command) {
	addStateFlag(cmd)
	f := cmd.Flags()
	f.String("kubeconfig", "", "kubeconfig file (default: KUBECONFIG, else ~/.kube/config)")
	f.String("context", "", "kubeconfig context (default: the current one)")
	f.StringP("namespace", "n", "", "namespace (default: the context's)")
	f.BoolP("all-namespaces", "A", false, "every namespace")
	f.Bool("local", false, "the local mesh of mesh demo, even when a cluster is reachable")
}

// where is the mesh a command talks to: the local demo's state file, or
// a cluster.
type where struct {
	local   *inventory.StateFile
	cluster *kube.Source
}

// whereIs picks the cluster when a cluster flag is given or no local demo
// runs, else the demo, and tells errOut which, and what to type for the
// other.
func whereIs(cmd *cobra.Command, errOut io.Writer) (*where, error) {
	v, err := settings(cmd)
	if err != nil {
		return nil, err
	}
	local := inventory.StateFile{Path: v.GetString("state-file")}
	wantsCluster := false
	for _, name := range []string{"kubeconfig", "context", "namespace", "all-namespaces"} {
		if f := cmd.Flags().Lookup(name); f != nil && f.Changed {
			wantsCluster = true
		}
	}
	// --state-file names the demo as plainly as --local does.
	wantsLocal := v.GetBool("local") || cmd.Flags().Lookup("state-file").Changed
	if wantsLocal && wantsCluster {
		return nil, usagef("--local and --state-file are the demo on this machine; they take no cluster flags")
	}
	_, statErr := os.Stat(local.Path)
	if wantsLocal || (!wantsCluster && statErr == nil) {
		if !wantsLocal {
			fmt.Fprintf(errOut, "(the local demo, from %s; -n NAMESPACE or --context for a cluster)\n", local.Path)
		}
		return &where{local: &local}, nil
	}
	src, err := kube.Load(kube.Options{Kubeconfig: v.GetString("kubeconfig"), Context: v.GetString("context"),
		Namespace: v.GetString("namespace"), AllNamespaces: v.GetBool("all-namespaces")})
	if err != nil {
		if !wantsCluster {
			return nil, fmt.Errorf("no local demo runs (%s does not exist) and no cluster is reachable: %w", local.Path, err)
		}
		return nil, err
	}
	fmt.Fprintf(errOut, "(%s)\n", src.Describe())
	return &where{cluster: src}, nil
}

// mesh lists the workloads; the closer stops what reaching them started
// (port-forwards).
func (w *where) mesh(ctx context.Context) (*inventory.Mesh, func(), error) {
	if w.local != nil {
		m, err := w.local.Mesh(ctx)
		return m, func() {}, err
	}
	m, err := w.cluster.Mesh(ctx)
	if err != nil {
		return nil, nil, err
	}
	return m, w.cluster.Close, nil
}

// describe says which mesh, for humans.
func (w *where) describe() string {
	if w.local != nil {
		return "the local demo (" + w.local.Path + ")"
	}
	return w.cluster.Describe()
}

// close stops the port-forwards the cluster's listings opened.
func (w *where) close() {
	if w.cluster != nil {
		w.cluster.Close()
	}
}

// checks are what mesh check runs against the mesh; done ends what they
// opened (port-forwards).
func (w *where) checks(ctx context.Context, meshNamespace string, proxyOnly bool) (checks []check.Check, done func(), err error) {
	if w.local != nil {
		m, err := w.local.Mesh(ctx)
		if err != nil {
			return nil, nil, err
		}
		return check.Local(m, proxyOnly), func() {}, nil
	}
	c := &check.Cluster{Source: w.cluster, Namespace: meshNamespace, ClientVersion: BuildVersion().Version, ProxyOnly: proxyOnly}
	return c.Checks(), c.Close, nil
}

// meshFrom finds the mesh (see whereIs) and lists its workloads.
func meshFrom(ctx context.Context, cmd *cobra.Command, errOut io.Writer) (*inventory.Mesh, func(), error) {
	w, err := whereIs(cmd, errOut)
	if err != nil {
		return nil, nil, err
	}
	return w.mesh(ctx)
}
