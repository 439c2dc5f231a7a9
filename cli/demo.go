package cli

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/meshproj/mesh/demo"
)

func newDemoCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a whole mesh on this machine: control plane, services, proxies and traffic",
		Long: `Run a whole mesh on 127.0.0.1, no cluster needed: a local control plane (identity
service and discovery file), the workloads web, api (2 replicas, one slower) and
auth (a few percent errors), each with its own mesh proxy, mTLS between all of
them, and a traffic generator. Then, in another terminal: mesh stat, mesh tap,
mesh check. Ctrl-C (or --duration) stops it and removes every process and file
it made.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, log, err := settingsAndLogger(cmd, s.ErrOut)
			if err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			if v.GetDuration("duration") < 0 || v.GetInt("port-base") < 0 || v.GetInt("port-base") > 65000 {
				return usagef("--duration must not be negative and --port-base must be 1-65000")
			}
			return demo.Run(cmd.Context(), demo.Options{
				Mesh: self, Duration: v.GetDuration("duration"), PortBase: v.GetInt("port-base"),
				StatePath: v.GetString("state-file"), Rate: v.GetInt("rate"), Out: s.Out, Log: log,
			})
		},
	}
	cmd.Flags().Duration("duration", 0, "stop after this long (default: until Ctrl-C)")
	cmd.Flags().Int("port-base", 0, "number every port from this one (default: free ports)")
	cmd.Flags().Int("rate", 20, "requests per second the traffic generator sends")
	addStateFlag(cmd)
	return cmd
}
