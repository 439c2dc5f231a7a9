package cli

import (
	"context"
	"errors"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshproj/mesh/check"
)

// errChecksFailed makes `mesh check` exit 1 after printing its results.
var errChecksFailed = errors.New("some checks failed")

func newCheckCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that the mesh is healthy, and say how to fix what is not",
		Long: `Check the mesh and say how to fix what is not right: ✓ passes, ‼ is a
warning, × a failure (exit 1). On a cluster: the API server and its
version, the clocks, the CRDs, the controller's pods and version, the
webhook and its caBundle, the trust anchors and the issuer; then the data
plane: every running pod of a namespace that asks for the mesh has a
proxy (those that do not are named, with why), and every proxy is ready,
connected to the controller, on a supported version and holding a valid
certificate. -n limits the data plane to one namespace. On the local demo:
its identity service, discovery file and proxies.`,
		Example: `  mesh check
  mesh check --proxy -n shop
  mesh check -o json | jq '.checks[] | select(.status != "ok")'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := settings(cmd)
			if err != nil {
				return err
			}
			format, err := outputFormat(v, "table or json", "table", "json")
			if err != nil {
				return err
			}
			w, err := whereIs(cmd, s.ErrOut)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 60*time.Second)
			defer cancel()
			checks, done, err := w.checks(ctx, v.GetString("mesh-namespace"), v.GetBool("proxy"))
			if err != nil {
				return err
			}
			defer done()
			results := check.Run(ctx, checks)
			if err := check.Render(s.Out, results, format, colorFor(s.Out)); err != nil {
				return err
			}
			if check.Failed(results) {
				return errChecksFailed
			}
			return nil
		},
	}
	cmd.Flags().Bool("proxy", false, "check only the data plane (the proxies)")
	cmd.Flags().StringP("output", "o", "table", "output format: table or json")
	cmd.Flags().String("mesh-namespace", "mesh-system", "namespace of the control plane")
	addClusterFlags(cmd)
	return cmd
}
