package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshproj/mesh/tap"
)

func newTapCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tap RESOURCE",
		Short: "Stream live requests through a workload's proxies",
		Long: `Stream requests as they pass through the proxies of a workload: a request event,
a response event (status, latency) and an end event (duration, bytes) for each,
with source, destination, identities and TLS. Filtering happens in the proxies,
which pay nothing while nobody taps.`,
		Example: `  mesh tap deploy/web -n shop
  mesh tap deploy/api
  mesh tap deploy/web --to deploy/api --method GET --path /items --max 20
  mesh tap deploy/auth -o json | jq .status`,
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
			}, func(err error) { fmt.Fprintln(s.ErrOut, "mesh tap:", err, "(the others go on)") })
		},
	}
	f := cmd.Flags()
	f.String("method", "", "only requests with this method")
	f.String("path", "", "only requests whose path starts with this")
	f.String("authority", "", "only requests to this authority (host or host:port)")
	f.String("to", "", "only requests to this workload (deploy/NAME)")
	f.Int("max", 0, "stop after this many events (default: until Ctrl-C)")
	f.StringP("output", "o", "", "output format: json (NDJSON), or nothing for lines")
	addClusterFlags(cmd)
	return cmd
}
