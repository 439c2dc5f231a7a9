// Package stat computes `mesh stat`: success rate, request rate and latency
// percentiles per workload, or per edge between two workloads, from the
// rolling windows that proxies keep (their /stats endpoint). It asks the
// proxies; it keeps nothing itself.
package stat

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/meshproj/mesh/inventory"
	"github.com/meshproj/mesh/proxy/adminapi"
)

// Options select what to show.
type Options struct {
	Resource string        // "" for every workload
	From, To string        // edges: traffic from or to this workload
	Window   time.Duration // how much recent traffic (at most 60s)
}

// Row is one line of `mesh stat`.
type Row struct {
	Name        string   `json:"name"`
	Namespace   string   `json:"namespace,omitempty"`
	From        string   `json:"from,omitempty"`
	To          string   `json:"to,omitempty"`
	MeshedReady int      `json:"meshedReady"`
	Instances   int      `json:"instances"`
	Requests    uint64   `json:"requests"`
	SuccessRate *float64 `json:"successRate"` // nil with no requests
	RPS         float64  `json:"rps"`
	P50MS       *float64 `json:"latencyP50Ms"`
	P95MS       *float64 `json:"latencyP95Ms"`
	P99MS       *float64 `json:"latencyP99Ms"`
	TCPConn     int64    `json:"tcpConnections"`
	Identity    string   `json:"identity,omitempty"`
}

// instanceStats is what one proxy answered.
type instanceStats struct {
	ready bool
	stats *adminapi.Stats
}

// Fetcher reads a proxy's readiness and stats; tests swap in recorded data.
type Fetcher func(ctx context.Context, admin string, seconds int) (ready bool, st *adminapi.Stats, err error)

// HTTPFetcher asks a proxy's admin endpoint.
func HTTPFetcher(ctx context.Context, admin string, seconds int) (bool, *adminapi.Stats, error) {
	c := &http.Client{Timeout: 3 * time.Second}
	ready := false
	if req, err := http.NewRequestWithContext(ctx, "GET", "http://"+admin+"/ready", nil); err == nil {
		if resp, err := c.Do(req); err == nil {
			ready = resp.StatusCode == http.StatusOK
			resp.Body.Close()
		}
	}
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://%s/stats?seconds=%d", admin, seconds), nil)
	if err != nil {
		return false, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return ready, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ready, nil, fmt.Errorf("%s/stats: %s", admin, resp.Status)
	}
	var st adminapi.Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return ready, nil, fmt.Errorf("%s/stats: %w", admin, err)
	}
	return ready, &st, nil
}

// seconds is the window in whole seconds, 10 when none is given.
func (o Options) seconds() int {
	if s := int(o.Window / time.Second); s > 0 {
		return s
	}
	return 10
}

// Collect asks every proxy of the selected workloads and computes rows.
func Collect(ctx context.Context, m *inventory.Mesh, o Options, fetch Fetcher) ([]Row, error) {
	seconds := o.seconds()
	workloads, err := m.Select(o.Resource)
	if err != nil {
		return nil, err
	}
	var peer *inventory.Workload
	if o.From != "" || o.To != "" {
		if o.From != "" && o.To != "" {
			return nil, fmt.Errorf("give --from or --to, not both")
		}
		ref := o.From + o.To
		ws, err := m.Select(ref)
		if err != nil {
			return nil, err
		}
		peer = &ws[0]
	}
	results := fetchAll(ctx, workloads, seconds, fetch)
	var rows []Row
	for i, w := range workloads {
		row := Row{Name: w.Ref(), Namespace: w.Namespace, Instances: len(w.Instances), Identity: w.Identity}
		var agg aggregate
		for _, r := range results[i] {
			if r.ready {
				row.MeshedReady++
			}
			if r.stats == nil {
				continue
			}
			agg.bounds = r.stats.LatencyBuckets
			for _, s := range r.stats.Stats {
				if include(s, w, peer, o) {
					agg.add(s)
				}
			}
			if o.To == "" {
				row.TCPConn += r.stats.OpenConnections["inbound"]
			} else {
				row.TCPConn += r.stats.OpenConnections["outbound"]
			}
		}
		if peer != nil {
			if o.To != "" {
				row.From, row.To = w.Ref(), peer.Ref()
			} else {
				row.From, row.To = peer.Ref(), w.Ref()
			}
			row.Name = row.From + " -> " + row.To
		}
		agg.fill(&row, float64(seconds))
		rows = append(rows, row)
	}
	return rows, nil
}

// include decides whether a proxy's window entry belongs to the row: a
// workload's own numbers are what its inbound side served; an edge is the
// source's outbound traffic to the target (--to) or the target's inbound
// traffic from the source (--from).
func include(s adminapi.WindowStat, w inventory.Workload, peer *inventory.Workload, o Options) bool {
	switch {
	case peer == nil:
		return s.Direction == "inbound"
	case o.To != "":
		return s.Direction == "outbound" && peer.Serves(s.Authority)
	default:
		return s.Direction == "inbound" && s.Peer != "" && s.Peer == peer.Identity
	}
}

func fetchAll(ctx context.Context, ws []inventory.Workload, seconds int, fetch Fetcher) [][]instanceStats {
	out := make([][]instanceStats, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		out[i] = make([]instanceStats, len(w.Instances))
		for j, inst := range w.Instances {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ready, st, err := fetch(ctx, inst.Admin, seconds)
				if err != nil {
					st = nil
				}
				out[i][j] = instanceStats{ready: ready, stats: st}
			}()
		}
	}
	wg.Wait()
	return out
}

// aggregate merges window entries.
type aggregate struct {
	requests, successes uint64
	counts              []uint64
	bounds              []float64
}

func (a *aggregate) add(s adminapi.WindowStat) {
	a.requests += s.Requests
	a.successes += s.Successes
	if a.counts == nil {
		a.counts = make([]uint64, len(s.Latency))
	}
	for i, c := range s.Latency {
		if i < len(a.counts) {
			a.counts[i] += c
		}
	}
}

func (a *aggregate) fill(r *Row, seconds float64) {
	r.Requests = a.requests
	if a.requests == 0 {
		return
	}
	sr := float64(a.successes) / float64(a.requests)
	r.SuccessRate = &sr
	r.RPS = float64(a.requests) / seconds
	r.P50MS, r.P95MS, r.P99MS = a.quantile(0.50), a.quantile(0.95), a.quantile(0.99)
}

// quantile estimates a latency quantile from bucket counts, interpolating
// linearly inside the bucket, as Prometheus' histogram_quantile does.
func (a *aggregate) quantile(q float64) *float64 {
	var total uint64
	for _, c := range a.counts {
		total += c
	}
	if total == 0 || len(a.bounds) == 0 {
		return nil
	}
	rank := q * float64(total)
	var cum uint64
	for i, c := range a.counts {
		if float64(cum+c) >= rank && c > 0 {
			if i >= len(a.bounds) { // +Inf bucket: the highest finite bound
				v := a.bounds[len(a.bounds)-1]
				return &v
			}
			lo := 0.0
			if i > 0 {
				lo = a.bounds[i-1]
			}
			hi := a.bounds[i]
			v := lo + (hi-lo)*(rank-float64(cum))/float64(c)
			return &v
		}
		cum += c
	}
	v := a.bounds[len(a.bounds)-1]
	return &v
}
