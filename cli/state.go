package cli

// How the diagnostics find the mesh: for now, the local demo's state file.

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/meshproj/mesh/inventory"
)

func addStateFlag(cmd *cobra.Command) {
	cmd.Flags().String("state-file", inventory.DefaultStatePath(), "state file of the local mesh (written by mesh demo)")
}

func meshFrom(ctx context.Context, cmd *cobra.Command) (*inventory.Mesh, error) {
	v, err := settings(cmd)
	if err != nil {
		return nil, err
	}
	return inventory.StateFile{Path: v.GetString("state-file")}.Mesh(ctx)
}
