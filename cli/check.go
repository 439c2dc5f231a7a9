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
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := settings(cmd)
			if err != nil {
				return err
			}
			format, err := outputFormat(v, "table or json", "table", "json")
			if err != nil {
				return err
			}
			m, err := localMesh(cmd.Context(), cmd)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			results := check.Run(ctx, check.Local(m, v.GetBool("proxy")))
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
	addStateFlag(cmd)
	return cmd
}
