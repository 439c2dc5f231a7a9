package cli

import (
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/meshproj/mesh/inventory"
	"github.com/meshproj/mesh/stat"
)

func newStatCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stat [RESOURCE]",
		Short: "Show success rate, request rate and latency per workload or per edge",
		Long: `Show the golden signals of workloads, computed at once from their proxies'
own recent traffic: SUCCESS (share of responses that are not failures), RPS,
latency percentiles, and open TCP connections. RESOURCE is KIND/NAME (deploy,
sts, ds, job, po), a kind alone (every one of it), ns/NAME, or NAME; without
one, every workload. --to and --from show one edge instead.

On a cluster (-n, --context, --kubeconfig, or when no local demo runs) the
proxies are reached by port-forward through the API server, as kubectl
port-forward does.`,
		Example: `  mesh stat
  mesh stat deploy -n shop
  mesh stat deploy/api
  mesh stat deploy/web --to deploy/api
  mesh stat deploy/api --from deploy/web -o json
  mesh stat --by route deploy/web`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := settings(cmd)
			if err != nil {
				return err
			}
			m, done, err := meshFrom(cmd.Context(), cmd, s.ErrOut)
			if err != nil {
				return err
			}
			defer done()
			o := stat.Options{From: v.GetString("from"), To: v.GetString("to"), Window: v.GetDuration("window")}
			if len(args) == 1 {
				o.Resource = args[0]
			}
			if (o.From != "" || o.To != "") && o.Resource == "" {
				return usagef("--from and --to need a RESOURCE: mesh stat deploy/web --to deploy/api")
			}
			switch by := v.GetString("by"); by {
			case "route":
				if o.From != "" {
					return usagef("--by route shows a client's routes: use --to, not --from")
				}
				return showRoutes(cmd, s, v, m, o)
			case "", "workload":
			default:
				return usagef("--by %q: use workload or route", by)
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
	cmd.Flags().String("by", "workload", "workload, or route: the workload's outbound traffic by the route that sent it (as mesh routes)")
	cmd.Flags().String("from", "", "only traffic from this workload (deploy/NAME)")
	cmd.Flags().String("to", "", "only traffic to this workload (deploy/NAME)")
	cmd.Flags().Duration("window", 10*time.Second, "how much recent traffic to count (at most 60s)")
	addClusterFlags(cmd)
	return cmd
}

func newRoutesCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "routes RESOURCE",
		Short: "Show a client workload's outbound traffic by route",
		Long: `Show the traffic a workload sends, by the route (an HTTPRoute or GRPCRoute
rule, or a route of the discovery file) its proxies chose for each request:
the services the route sent to, SUCCESS, RPS and latency percentiles, summed
over the workload's proxies. Routes are followed by the client's proxy, so
this is the client's view; traffic to services without routes is shown as
[none], per service. RESOURCE is as for mesh stat; --to keeps the traffic
to one workload's services.`,
		Example: `  mesh routes deploy/web
  mesh routes deploy/web --to svc/api -n shop -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := settings(cmd)
			if err != nil {
				return err
			}
			m, done, err := meshFrom(cmd.Context(), cmd, s.ErrOut)
			if err != nil {
				return err
			}
			defer done()
			return showRoutes(cmd, s, v, m, stat.Options{Resource: args[0], To: v.GetString("to"), Window: v.GetDuration("window")})
		},
	}
	cmd.Flags().StringP("output", "o", "table", "output format: table or json")
	cmd.Flags().String("to", "", "only traffic to this workload's services (deploy/NAME, svc/NAME)")
	cmd.Flags().Duration("window", 10*time.Second, "how much recent traffic to count (at most 60s)")
	addClusterFlags(cmd)
	return cmd
}

// showRoutes is mesh routes, and mesh stat --by route.
func showRoutes(cmd *cobra.Command, s Streams, v *viper.Viper, m *inventory.Mesh, o stat.Options) error {
	if o.Resource == "" {
		return usagef("routes are a client's: name the workload, as mesh stat --by route deploy/web")
	}
	format, err := outputFormat(v, "table or json", "table", "json")
	if err != nil {
		return err
	}
	rows, err := stat.Routes(cmd.Context(), m, o, stat.HTTPFetcher)
	if err != nil {
		return err
	}
	return stat.RenderRoutes(s.Out, rows, format)
}

func newEdgesCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "edges [RESOURCE]",
		Short: "Show who talks to whom, with the identity each side proved and whether it was mTLS",
		Long: `Show the edges between workloads in recent traffic, as their proxies saw it:
the client's proxy names the server by the authority the app used and the
identity the server proved; the server's proxy names the client by the
identity it proved. A client without a proxy proves none and is shown as -;
an edge that is not mTLS says why. RESOURCE is as for mesh stat; an edge is
shown when either end is selected.`,
		Example: `  mesh edges deploy -n shop
  mesh edges deploy/web
  mesh edges -A -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := settings(cmd)
			if err != nil {
				return err
			}
			format, err := outputFormat(v, "table or json", "table", "json")
			if err != nil {
				return err
			}
			m, done, err := meshFrom(cmd.Context(), cmd, s.ErrOut)
			if err != nil {
				return err
			}
			defer done()
			resource := ""
			if len(args) == 1 {
				resource = args[0]
			}
			edges, err := stat.Edges(cmd.Context(), m, resource, int(v.GetDuration("window")/time.Second), stat.HTTPFetcher)
			if err != nil {
				return err
			}
			return stat.RenderEdges(s.Out, edges, format)
		},
	}
	cmd.Flags().StringP("output", "o", "table", "output format: table or json")
	cmd.Flags().Duration("window", 10*time.Second, "how much recent traffic to look at (at most 60s)")
	addClusterFlags(cmd)
	return cmd
}

func newAuthzCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "authz RESOURCE",
		Short: "Show the inbound policy a workload's proxies enforce, and what it allowed and denied",
		Long: `Show who may reach a workload: each Server its proxies enforce, with the
authorizations that admit clients to its port and who they admit; the
default policy of the ports no Server selects; and how many requests (HTTP)
and connections (opaque TCP) each allowed or denied in recent traffic,
summed over the workload's proxies, with why clients were denied. AUDITED
counts what audit mode let through that the policy would deny. The policy
shown is the one in force in the proxies, as the controller (or the
discovery file) gave it to them. RESOURCE is as for mesh stat.`,
		Example: `  mesh authz deploy/api
  mesh authz deploy/api -n shop --window 60s
  mesh authz deploy -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := settings(cmd)
			if err != nil {
				return err
			}
			format, err := outputFormat(v, "table or json", "table", "json")
			if err != nil {
				return err
			}
			m, done, err := meshFrom(cmd.Context(), cmd, s.ErrOut)
			if err != nil {
				return err
			}
			defer done()
			rows, err := stat.Authz(cmd.Context(), m, args[0], int(v.GetDuration("window")/time.Second), stat.HTTPFetcher, stat.HTTPDump)
			if err != nil {
				return err
			}
			return stat.RenderAuthz(s.Out, rows, format)
		},
	}
	cmd.Flags().StringP("output", "o", "table", "output format: table or json")
	cmd.Flags().Duration("window", 10*time.Second, "how much recent traffic to count (at most 60s)")
	addClusterFlags(cmd)
	return cmd
}
