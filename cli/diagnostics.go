package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/identity"
	"github.com/meshproj/mesh/inventory"
	"github.com/meshproj/mesh/pki"
	"github.com/meshproj/mesh/proxy/discovery/file"
	"github.com/meshproj/mesh/proxy/discovery/xds"
)

func newDiagnosticsCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "diagnostics",
		Short: "Raw views of a proxy and of the controller, for when stat and check are not enough",
		Args:  noArgs,
	}
	cmd.AddCommand(newProxyMetricsCommand(s), newConfigDumpCommand(s), newEndpointsCommand(s))
	return cmd
}

func newProxyMetricsCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "proxy-metrics RESOURCE",
		Short: "Print the Prometheus metrics of each proxy of a workload, as Prometheus scrapes them",
		Example: `  mesh diagnostics proxy-metrics po/web-5d8c-x2x9q -n shop
  mesh diagnostics proxy-metrics deploy/web -n shop | grep request_total`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			insts, done, err := instancesOf(cmd, s.ErrOut, args[0])
			if err != nil {
				return err
			}
			defer done()
			bodies := make([][]byte, len(insts))
			errs := make([]error, len(insts))
			var wg sync.WaitGroup
			for i, inst := range insts {
				wg.Add(1)
				go func() {
					defer wg.Done()
					bodies[i], errs[i] = adminGet(cmd.Context(), inst.Admin, "/metrics")
				}()
			}
			wg.Wait()
			failed := 0
			for i, inst := range insts {
				if errs[i] != nil {
					failed++
					fmt.Fprintf(s.ErrOut, "mesh diagnostics proxy-metrics: %s: %v\n", inst.Name, errs[i])
					continue
				}
				// Comments, so that the whole output is still the text format.
				fmt.Fprintf(s.Out, "#\n# POD %s (%d of %d)\n#\n", inst.Name, i+1, len(insts))
				s.Out.Write(bodies[i])
			}
			if failed > 0 {
				return fmt.Errorf("the metrics of %d of %d proxies could not be read", failed, len(insts))
			}
			return nil
		},
	}
	addClusterFlags(cmd)
	return cmd
}

func newConfigDumpCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config RESOURCE",
		Short: "Print one proxy's configuration and live state (its /config_dump) as JSON",
		Long: `Print what one proxy runs with: its identity and certificate, where its
discovery comes from and whether it is connected, its listeners, and every
service it uses with the live state of each endpoint (pending requests,
latency, ejections). RESOURCE must name one pod (po/NAME, or a workload
with one pod).`,
		Example: `  mesh diagnostics config po/web-5d8c-x2x9q -n shop
  mesh diagnostics config deploy/web -n shop | jq .services`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			insts, done, err := instancesOf(cmd, s.ErrOut, args[0])
			if err != nil {
				return err
			}
			defer done()
			if len(insts) > 1 {
				var names []string
				for _, inst := range insts {
					names = append(names, "po/"+inst.Name)
				}
				return fmt.Errorf("%s has %d pods: name one of %s", args[0], len(insts), strings.Join(names, ", "))
			}
			body, err := adminGet(cmd.Context(), insts[0].Admin, "/config_dump")
			if err != nil {
				return fmt.Errorf("%s: %w", insts[0].Name, err)
			}
			_, err = s.Out.Write(body)
			return err
		},
	}
	addClusterFlags(cmd)
	return cmd
}

// instancesOf finds the proxies of a resource.
func instancesOf(cmd *cobra.Command, errOut io.Writer, resource string) ([]inventory.Instance, func(), error) {
	m, done, err := meshFrom(cmd.Context(), cmd, errOut)
	if err != nil {
		return nil, nil, err
	}
	ws, err := m.Select(resource)
	if err != nil {
		done()
		return nil, nil, err
	}
	var insts []inventory.Instance
	for _, w := range ws {
		insts = append(insts, w.Instances...)
	}
	return insts, done, nil
}

func adminGet(ctx context.Context, admin, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+admin+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s: %s", path, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

func newEndpointsCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "endpoints AUTHORITY",
		Short: "Show what the controller serves for a service: its endpoints, their identities, weights and zones",
		Long: `Ask the control plane for a service, as a proxy does, and show what it
answers: each endpoint's address, weight, the identity its proxy must
present (none: not meshed) and zone. AUTHORITY is host:port as an app
writes it (web.shop:8080, web.shop.svc.cluster.local:8080, or web:8080 with
-n shop). On a cluster the question goes over xDS to a controller pod,
through a port-forward, with the controller's identity checked against the
trust anchors; on the local demo it is read from the discovery file.`,
		Example: `  mesh diagnostics endpoints web.shop:8080
  mesh diagnostics endpoints web:8080 -n shop -o json`,
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
			key, err := discovery.ParseAuthority(args[0], 80)
			if err != nil {
				return usageError{err}
			}
			w, err := whereIs(cmd, s.ErrOut)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			var svc *discovery.Service
			if w.local != nil {
				svc, err = localEndpoints(ctx, w.local, key)
			} else {
				defer w.cluster.Close()
				svc, err = clusterEndpoints(ctx, w, v.GetString("mesh-namespace"), key)
			}
			if err != nil {
				return err
			}
			return renderEndpoints(s.Out, svc, format)
		},
	}
	cmd.Flags().StringP("output", "o", "table", "output format: table or json")
	cmd.Flags().String("mesh-namespace", "mesh-system", "namespace of the control plane")
	addClusterFlags(cmd)
	return cmd
}

func localEndpoints(ctx context.Context, sf *inventory.StateFile, key discovery.Key) (*discovery.Service, error) {
	m, err := sf.Mesh(ctx)
	if err != nil {
		return nil, err
	}
	st, _, err := file.Load(m.ControlPlane.DiscoveryFile)
	if err != nil {
		return nil, err
	}
	for i := range st.Services {
		svc := &st.Services[i]
		if svc.Port == key.Port && (svc.Key().Host == key.Host || slices.Contains(svc.Aliases, key.Host)) {
			return svc, nil
		}
	}
	var known []string
	for _, svc := range st.Services {
		known = append(known, svc.Key().String())
	}
	slices.Sort(known)
	return nil, fmt.Errorf("%w: %s is not in %s (it has %s)", discovery.ErrNotFound, key, m.ControlPlane.DiscoveryFile, strings.Join(known, ", "))
}

// clusterEndpoints subscribes to the service over xDS, as a proxy in the
// source's namespace would, and returns the first full answer.
func clusterEndpoints(ctx context.Context, w *where, meshNS string, key discovery.Key) (*discovery.Service, error) {
	src := w.cluster
	anchorsPEM, err := src.TrustAnchors(ctx, meshNS)
	if err != nil {
		return nil, fmt.Errorf("reading the trust anchors, to check the controller's identity: %w", err)
	}
	anchors, err := pki.ParseCerts(anchorsPEM)
	if err != nil {
		return nil, fmt.Errorf("trust anchors in %s: %w", meshNS, err)
	}
	addr, err := src.ForwardController(ctx, meshNS, 8086)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var last discovery.State
	b := &xds.Backend{Addr: addr, NodeID: "mesh-diagnostics." + src.Namespace(), Namespace: src.Namespace(),
		TLS: identity.ControlPlaneTLS(pki.Pool(anchors...), src.TrustDomain()), Log: slog.New(slog.DiscardHandler)}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go b.Run(runCtx, func(st discovery.State) { mu.Lock(); last = st; mu.Unlock() })
	if err := b.Want(ctx, key); err != nil {
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range last.Services {
		svc := &last.Services[i]
		if svc.Port == key.Port && (svc.Key().Host == key.Host || slices.Contains(svc.Aliases, key.Host)) {
			return svc, nil
		}
	}
	return nil, fmt.Errorf("the controller answered without %s", key)
}

func renderEndpoints(w io.Writer, svc *discovery.Service, format string) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(svc)
	}
	fmt.Fprintf(w, "%s (balancer %s, %d endpoints)\n", svc.Key(), svc.LoadBalancer, len(svc.Endpoints))
	if len(svc.Endpoints) == 0 {
		_, err := fmt.Fprintln(w, "No endpoints: no ready pod backs the service.")
		return err
	}
	eps := slices.Clone(svc.Endpoints)
	slices.SortFunc(eps, func(a, b discovery.Endpoint) int { return a.Address.Compare(b.Address) })
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tWEIGHT\tIDENTITY\tZONE")
	for _, e := range eps {
		id := e.Identity
		if id == "" {
			id = "- (not meshed)"
		}
		zone := e.Zone
		if zone == "" {
			zone = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", e.Address, e.Weight, id, zone)
	}
	return tw.Flush()
}
