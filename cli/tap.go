package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/meshproj/mesh/inventory"
	"github.com/meshproj/mesh/proxy/adminapi"
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
			format, err := outputFormat(v, "json, or nothing for lines", "", "json")
			if err != nil {
				return err
			}
			m, done, err := meshFrom(cmd.Context(), cmd, s.ErrOut)
			if err != nil {
				return err
			}
			defer done()
			ws, f, err := tapTargets(m, args[0], v)
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
			}, tapWarning(s.ErrOut, "mesh tap"))
		},
	}
	addTapFilterFlags(cmd)
	cmd.Flags().Int("max", 0, "stop after this many events (default: until Ctrl-C)")
	cmd.Flags().StringP("output", "o", "", "output format: json (NDJSON), or nothing for lines")
	addClusterFlags(cmd)
	return cmd
}

func newTopCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "top RESOURCE",
		Short: "Show the most frequent live request paths through a workload's proxies",
		Long: `Tap a workload's proxies and count the requests that finish, by source,
destination, method and path: count, best, worst and last duration, and
success rate, most frequent first. On a terminal the table is redrawn every
--interval until Ctrl-C, --max requests or --duration; otherwise it is
printed once at the end. Callers are named by the identity they proved.`,
		Example: `  mesh top deploy/web -n shop
  mesh top deploy/api --path /items --duration 30s`,
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
			ws, f, err := tapTargets(m, args[0], v)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if d := v.GetDuration("duration"); d > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, d)
				defer cancel()
			}
			top := &tap.Top{Names: tap.NamesFor(m.Workloads)}
			rows := v.GetInt("rows")
			live := colorFor(s.Out) // a terminal that may be redrawn
			if live {
				stop := make(chan struct{})
				defer close(stop)
				go redraw(s.Out, top, rows, v.GetDuration("interval"), stop)
			}
			// Only end events count, so the proxies are asked for them alone
			// and --max counts requests.
			f.Match = onlyEnds(f.Match)
			err = tap.Stream(ctx, ws, f, v.GetInt("max"), func(e tap.Event) error { top.Add(e); return nil },
				tapWarning(s.ErrOut, "mesh top"))
			if ctx.Err() != nil && cmd.Context().Err() == nil {
				err = nil // --duration ran out
			}
			if live {
				fmt.Fprint(s.Out, clearScreen)
			}
			if rerr := tap.RenderTop(s.Out, top.Rows(), rows); err == nil {
				err = rerr
			}
			return err
		},
	}
	addTapFilterFlags(cmd)
	f := cmd.Flags()
	f.Int("max", 0, "stop after this many requests (default: until Ctrl-C or --duration)")
	f.Duration("duration", 0, "stop after this long (default: until Ctrl-C or --max)")
	f.Duration("interval", time.Second, "how often to redraw the table on a terminal")
	f.Int("rows", 20, "show at most this many paths (0: all)")
	addClusterFlags(cmd)
	return cmd
}

const clearScreen = "\x1b[H\x1b[2J"

func redraw(w io.Writer, top *tap.Top, rows int, every time.Duration, stop <-chan struct{}) {
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			fmt.Fprint(w, clearScreen)
			tap.RenderTop(w, top.Rows(), rows)
		}
	}
}

func onlyEnds(match func(*adminapi.TapEvent) bool) func(*adminapi.TapEvent) bool {
	return func(e *adminapi.TapEvent) bool { return e.Type == "end" && (match == nil || match(e)) }
}

func addTapFilterFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.String("method", "", "only requests with this method")
	f.String("path", "", "only requests whose path starts with this")
	f.String("authority", "", "only requests to this authority (host or host:port)")
	f.String("to", "", "only requests to this workload (deploy/NAME, svc/NAME)")
}

// tapTargets are the workloads to tap and the filter the flags ask for.
func tapTargets(m *inventory.Mesh, resource string, v *viper.Viper) ([]inventory.Workload, tap.Filter, error) {
	return tap.Targets(m, resource, v.GetString("to"),
		tap.Filter{Method: v.GetString("method"), PathPrefix: v.GetString("path"), Authority: v.GetString("authority")})
}

func tapWarning(errOut io.Writer, command string) func(error) {
	return func(err error) { fmt.Fprintln(errOut, command+":", err, "(the others go on)") }
}
