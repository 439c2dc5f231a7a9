package cli

// How the diagnostics find the mesh: the local demo's state file, or a
// Kubernetes cluster through the kubeconfig, as kubectl finds it. Which
// one is never a guess: the command says which it talks to.

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

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

// meshFrom finds the mesh: the cluster when a cluster flag is given or no
// local demo runs, else the demo. It tells errOut which, and what to type
// for the other. The closer stops what reaching the mesh started
// (port-forwards).
func meshFrom(ctx context.Context, cmd *cobra.Command, errOut interface{ Write([]byte) (int, error) }) (*inventory.Mesh, func(), error) {
	v, err := settings(cmd)
	if err != nil {
		return nil, nil, err
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
		return nil, nil, usagef("--local and --state-file are the demo on this machine; they take no cluster flags")
	}
	_, statErr := os.Stat(local.Path)
	if wantsLocal || (!wantsCluster && statErr == nil) {
		m, err := local.Mesh(ctx)
		if err == nil && !wantsLocal {
			fmt.Fprintf(errOut, "(the local demo, from %s; -n NAMESPACE or --context for a cluster)\n", local.Path)
		}
		return m, func() {}, err
	}
	src, err := kube.Load(kube.Options{Kubeconfig: v.GetString("kubeconfig"), Context: v.GetString("context"),
		Namespace: v.GetString("namespace"), AllNamespaces: v.GetBool("all-namespaces")})
	if err != nil {
		if !wantsCluster {
			return nil, nil, fmt.Errorf("no local demo runs (%s does not exist) and no cluster is reachable: %w", local.Path, err)
		}
		return nil, nil, err
	}
	fmt.Fprintf(errOut, "(%s)\n", src.Describe())
	m, err := src.Mesh(ctx)
	if err != nil {
		return nil, nil, err
	}
	return m, src.Close, nil
}

// localMesh is the demo's mesh, for the commands that have no cluster side
// yet.
func localMesh(ctx context.Context, cmd *cobra.Command) (*inventory.Mesh, error) {
	v, err := settings(cmd)
	if err != nil {
		return nil, err
	}
	return inventory.StateFile{Path: v.GetString("state-file")}.Mesh(ctx)
}
