package stat

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/meshproj/mesh/inventory"
)

// This file is `mesh routes` (and `mesh stat --by route`): a client
// workload's outbound traffic per route, from its proxies' windows.
// Routes are followed by the client's proxy, so that is where their
// numbers are.

// NoRoute names, in the ROUTE column, the traffic to services without
// routes (and requests no route matched, which fail).
const NoRoute = "[none]"

// RouteRow is one route of one client workload.
type RouteRow struct {
	Workload string `json:"workload"`
	Route    string `json:"route"`
	// Services are the backends the route sent requests to (for NoRoute,
	// the one service).
	Services    []string `json:"services"`
	Requests    uint64   `json:"requests"`
	SuccessRate *float64 `json:"successRate"`
	RPS         float64  `json:"rps"`
	P50MS       *float64 `json:"latencyP50Ms"`
	P95MS       *float64 `json:"latencyP95Ms"`
	P99MS       *float64 `json:"latencyP99Ms"`
}

// Routes collects the selected workloads' outbound traffic by route;
// with o.To, only traffic to that workload's services.
func Routes(ctx context.Context, m *inventory.Mesh, o Options, fetch Fetcher) ([]RouteRow, error) {
	seconds := o.seconds()
	workloads, err := m.Select(o.Resource)
	if err != nil {
		return nil, err
	}
	var to *inventory.Workload
	if o.To != "" {
		ws, err := m.Select(o.To)
		if err != nil {
			return nil, err
		}
		to = &ws[0]
	}
	results := fetchAll(ctx, workloads, seconds, fetch)
	var rows []RouteRow
	for i, w := range workloads {
		type key struct{ route, service string }
		aggs := map[key]*aggregate{}
		services := map[key]map[string]bool{}
		for _, r := range results[i] {
			if r.stats == nil {
				continue
			}
			for _, s := range r.stats.Stats {
				if s.Direction != "outbound" || to != nil && !to.Serves(s.Authority) {
					continue
				}
				// A route's rows merge its backends; traffic without one is
				// per service.
				k := key{route: s.Route}
				if k.route == "" {
					k = key{route: NoRoute, service: s.Authority}
				}
				a := aggs[k]
				if a == nil {
					a = &aggregate{}
					aggs[k] = a
				}
				a.bounds = r.stats.LatencyBuckets
				a.add(s)
				if services[k] == nil {
					services[k] = map[string]bool{}
				}
				services[k][s.Authority] = true
			}
		}
		for k, a := range aggs {
			row := RouteRow{Workload: w.Ref(), Route: k.route, Services: slices.Sorted(maps.Keys(services[k]))}
			var r Row
			a.fill(&r, float64(seconds))
			row.Requests, row.SuccessRate, row.RPS, row.P50MS, row.P95MS, row.P99MS = r.Requests, r.SuccessRate, r.RPS, r.P50MS, r.P95MS, r.P99MS
			rows = append(rows, row)
		}
	}
	// Routed traffic first, by route; then each service without routes.
	slices.SortFunc(rows, func(a, b RouteRow) int {
		unrouted := func(r RouteRow) int {
			if r.Route == NoRoute {
				return 1
			}
			return 0
		}
		return cmp.Or(cmp.Compare(a.Workload, b.Workload), cmp.Compare(unrouted(a), unrouted(b)),
			cmp.Compare(a.Route, b.Route), slices.Compare(a.Services, b.Services))
	})
	return rows, nil
}

// RenderRoutes writes route rows as a table or JSON.
func RenderRoutes(w io.Writer, rows []RouteRow, format string) error {
	if done, err := asJSON(w, rows, format); done {
		return err
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintln(w, "No outbound traffic found.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROUTE\tSERVICES\tSUCCESS\tRPS\tLATENCY_P50\tLATENCY_P95\tLATENCY_P99")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Workload, r.Route, strings.Join(r.Services, ","), percent(r.SuccessRate),
			rps(Row{Requests: r.Requests, RPS: r.RPS}), latency(r.P50MS), latency(r.P95MS), latency(r.P99MS))
	}
	return tw.Flush()
}
