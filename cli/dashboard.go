package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshproj/mesh/check"
	"github.com/meshproj/mesh/dashboard"
	"github.com/meshproj/mesh/internal/httpserve"
	"github.com/meshproj/mesh/inventory"
)

func newDashboardCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Show the mesh in a browser: workloads, topology, live requests and checks",
		Long: `Serve a dashboard of the mesh on this machine and open it in a browser:
namespaces and workloads with MESHED, SUCCESS, RPS and latency (what mesh
stat shows), refreshed live; a topology of who calls whom, arrows coloured
by success rate and dashed where the traffic is not mTLS (mesh edges); a
workload's inbound and outbound edges, routes, and a live tap with the
filters of mesh tap; and the results of mesh check with their hints.

It finds the mesh as the other diagnostics do: the local demo, or a
cluster (-n, --context, --kubeconfig). It listens on loopback only, answers
only requests addressed to localhost, changes nothing, and needs no
internet access: the page is in the binary.`,
		Example: `  mesh demo &   # then, beside it:
  mesh dashboard
  mesh dashboard --show url --addr 127.0.0.1:50750
  mesh dashboard -n shop`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := settings(cmd)
			if err != nil {
				return err
			}
			show := v.GetString("show")
			if show != "browser" && show != "url" {
				return usagef("--show %q: use browser or url", show)
			}
			w, err := whereIs(cmd, s.ErrOut)
			if err != nil {
				return err
			}
			ln, err := dashboard.Listen(v.GetString("addr"))
			if err != nil {
				return err
			}
			// The cluster's port-forwards are shared by every request (a
			// tap stream uses them for as long as it runs), reused from
			// one refresh to the next, and closed when the dashboard stops.
			defer w.close()
			src := dashboard.Source{Describe: w.describe(),
				Mesh: func(ctx context.Context) (*inventory.Mesh, error) {
					m, _, err := w.mesh(ctx)
					return m, err
				},
				Checks: func(ctx context.Context) ([]check.Check, error) {
					checks, _, err := w.checks(ctx, v.GetString("mesh-namespace"), false)
					return checks, err
				}}
			srv := &dashboard.Server{Source: src}
			url := "http://" + ln.Addr().String() + "/"
			fmt.Fprintln(s.Out, url)
			if show == "browser" {
				if err := openBrowser(url); err != nil {
					fmt.Fprintf(s.ErrOut, "could not open a browser (%v): open %s yourself\n", err, url)
				}
			}
			hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
			err = httpserve.Run(cmd.Context(), "dashboard", hs, ln)
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	cmd.Flags().String("addr", "127.0.0.1:0", "where to listen: a loopback address and port (default: a free port)")
	cmd.Flags().String("show", "browser", "browser: open the dashboard in the default browser; url: only print its address")
	cmd.Flags().String("mesh-namespace", "mesh-system", "namespace of the control plane, for the checks")
	addClusterFlags(cmd)
	return cmd
}

// openBrowser opens url in the desktop's browser.
func openBrowser(url string) error {
	var c *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		c = exec.Command("open", url)
	case "windows":
		c = exec.Command("rundll32", "url.dll,FileProtocolHandler", url)
	default:
		c = exec.Command("xdg-open", url)
	}
	if err := c.Start(); err != nil {
		return err
	}
	go c.Wait()
	return nil
}
