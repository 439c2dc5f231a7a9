package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshproj/mesh/inventory/kube"
)

// Version is set at build time with -ldflags "-X github.com/meshproj/mesh/cli.Version=v1.2.3".
var Version = ""

// VersionInfo describes this build.
type VersionInfo struct {
	Version  string `json:"version"`
	Commit   string `json:"commit,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

// BuildVersion returns what is known about this binary.
func BuildVersion() VersionInfo {
	v := VersionInfo{Version: Version, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v.Commit = s.Value
			}
		}
	}
	if v.Version == "" {
		v.Version = "dev"
	}
	return v
}

// versionReport is what mesh version says: this binary, and the control
// plane of the cluster the kubeconfig names when one answers.
type versionReport struct {
	VersionInfo
	ControlPlane *kube.ControlPlane `json:"controlPlane,omitempty"`
	// Cluster says why no control plane version is given, if it is not.
	Cluster string `json:"cluster,omitempty"`
}

func newVersionCommand(s Streams) *cobra.Command {
	var output string
	var short, client bool
	var kubeconfig, kubeContext, meshNamespace string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of this mesh binary and of the cluster's control plane",
		Long: `Print this binary's version and, when the kubeconfig names a cluster that
answers, the version of the mesh control plane installed there; a client and
a control plane of different versions are named as such. --client asks no
cluster.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r := versionReport{VersionInfo: BuildVersion()}
			if output != "" && output != "json" {
				return usagef("--output %q: want json, or nothing for text", output)
			}
			if short {
				fmt.Fprintln(s.Out, r.Version)
				return nil
			}
			if !client {
				r.ControlPlane, r.Cluster = controlPlaneVersion(cmd.Context(), kubeconfig, kubeContext, meshNamespace)
			}
			if output == "json" {
				enc := json.NewEncoder(s.Out)
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			fmt.Fprintf(s.Out, "mesh %s (%s, %s)\n", r.Version, r.Go, r.Platform)
			if r.Commit != "" {
				fmt.Fprintf(s.Out, "commit %s\n", r.Commit)
			}
			switch {
			case r.ControlPlane != nil:
				cp := r.ControlPlane
				fmt.Fprintf(s.Out, "control plane %s (%s/mesh-controller, %d/%d ready)\n", cp.Version, cp.Namespace, cp.Ready, cp.Replicas)
				if cp.Version != r.Version {
					fmt.Fprintf(s.Out, "the control plane runs %s and this client is %s: use a client of the same version, or upgrade with mesh install | kubectl apply -f -\n", cp.Version, r.Version)
				}
			case r.Cluster != "":
				fmt.Fprintf(s.Out, "control plane: %s\n", r.Cluster)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json")
	cmd.Flags().BoolVar(&short, "short", false, "print this binary's version alone")
	cmd.Flags().BoolVar(&client, "client", false, "this binary's version only; ask no cluster")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: KUBECONFIG, else ~/.kube/config)")
	cmd.Flags().StringVar(&kubeContext, "context", "", "kubeconfig context (default: the current one)")
	cmd.Flags().StringVar(&meshNamespace, "mesh-namespace", "mesh-system", "namespace of the control plane")
	return cmd
}

// controlPlaneVersion asks the cluster, briefly; when it cannot, it says
// why instead.
func controlPlaneVersion(ctx context.Context, kubeconfig, kubeContext, ns string) (*kube.ControlPlane, string) {
	src, err := kube.Load(kube.Options{Kubeconfig: kubeconfig, Context: kubeContext})
	if err != nil {
		return nil, "no cluster (" + err.Error() + ")"
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cp, err := src.ControlPlane(ctx, ns)
	if err != nil {
		return nil, err.Error()
	}
	return cp, ""
}
