package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshproj/mesh/check"
	"github.com/meshproj/mesh/demo"
	"github.com/meshproj/mesh/inventory"
	"github.com/meshproj/mesh/stat"
	"github.com/meshproj/mesh/tap"
)

// errChecksFailed makes `mesh check` exit 1 after printing its results.
var errChecksFailed = errors.New("some checks failed")

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

func newStatCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stat [RESOURCE]",
		Short: "Show success rate, request rate and latency per workload or per edge",
		Long: `Show the golden signals of workloads, computed at once from their proxies'
own recent traffic: SUCCESS (share of responses that are not failures), RPS,
latency percentiles, and open TCP connections. RESOURCE is deploy/NAME or NAME;
without one, every workload. --to and --from show one edge instead.`,
		Example: `  mesh stat
  mesh stat deploy/api
  mesh stat deploy/web --to deploy/api
  mesh stat deploy/api --from deploy/web -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := settings(cmd)
			if err != nil {
				return err
			}
			m, err := meshFrom(cmd.Context(), cmd)
			if err != nil {
				return err
			}
			o := stat.Options{From: v.GetString("from"), To: v.GetString("to"), Window: v.GetDuration("window")}
			if len(args) == 1 {
				o.Resource = args[0]
			}
			if (o.From != "" || o.To != "") && o.Resource == "" {
				return usagef("--from and --to need a RESOURCE: mesh stat deploy/web --to deploy/api")
			}
			format, err := outputFormat(v, "table, wide or json", "table", "wide", "json")
			if err != nil {
				return err
			}
			rows, err := stat.Collect(cmd.Context(), m, o, stat.HTTPFetcher)
			if err != nil {
				return err
			}
			return stat.Render(s.Out, rows, format, colorFor(s.Out))
		},
	}
	cmd.Flags().StringP("output", "o", "table", "output format: table, wide or json")
	cmd.Flags().String("from", "", "only traffic from this workload (deploy/NAME)")
	cmd.Flags().String("to", "", "only traffic to this workload (deploy/NAME)")
	cmd.Flags().Duration("window", 10*time.Second, "how much recent traffic to count (at most 60s)")
	addStateFlag(cmd)
	return cmd
}

func newTapCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tap RESOURCE",
		Short: "Stream live requests through a workload's proxies",
		Long: `Stream requests as they pass through the proxies of a workload: a request event,
a response event (status, latency) and an end event (duration, bytes) for each,
with source, destination, identities and TLS. Filtering happens in the proxies,
which pay nothing while nobody taps.`,
		Example: `  mesh tap deploy/api
  mesh tap deploy/web --to deploy/api --method GET --path /items --max 20
  mesh tap deploy/auth -o json | jq .status`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := settings(cmd)
			if err != nil {
				return err
			}
			m, err := meshFrom(cmd.Context(), cmd)
			if err != nil {
				return err
			}
			ws, err := m.Select(args[0])
			if err != nil {
				return err
			}
			f := tap.Filter{Method: v.GetString("method"), PathPrefix: v.GetString("path"), Authority: v.GetString("authority")}
			if to := v.GetString("to"); to != "" {
				dst, err := m.Select(to)
				if err != nil {
					return err
				}
				if dst[0].Service == "" {
					return fmt.Errorf("%s serves no traffic to tap", dst[0].Ref())
				}
				f.Authority, f.Direction = dst[0].Service, "outbound"
			}
			format, err := outputFormat(v, "json, or nothing for lines", "", "json")
			if err != nil {
				return err
			}
			enc := json.NewEncoder(s.Out)
			return tap.Stream(cmd.Context(), ws, f, v.GetInt("max"), func(e tap.Event) error {
				if format == "json" {
					return enc.Encode(e)
				}
				_, err := fmt.Fprintln(s.Out, tap.Line(e))
				return err
			})
		},
	}
	f := cmd.Flags()
	f.String("method", "", "only requests with this method")
	f.String("path", "", "only requests whose path starts with this")
	f.String("authority", "", "only requests to this authority (host or host:port)")
	f.String("to", "", "only requests to this workload (deploy/NAME)")
	f.Int("max", 0, "stop after this many events (default: until Ctrl-C)")
	f.StringP("output", "o", "", "output format: json (NDJSON), or nothing for lines")
	addStateFlag(cmd)
	return cmd
}

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
			m, err := meshFrom(cmd.Context(), cmd)
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
