package tap

import (
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"sync"
	"text/tabwriter"

	"github.com/meshproj/mesh/inventory"
	"github.com/meshproj/mesh/proxy/metrics"
)

// Path is one line of mesh top: requests from a source to a destination
// with one method and path, as the tap saw them end.
type Path struct {
	Source      string  `json:"source"`
	Destination string  `json:"destination"`
	Method      string  `json:"method"`
	Path        string  `json:"path"`
	Count       int     `json:"count"`
	Successes   int     `json:"successes"`
	BestMS      float64 `json:"bestMs"`
	WorstMS     float64 `json:"worstMs"`
	LastMS      float64 `json:"lastMs"`
}

// Top counts tapped requests by path. Add may be called from one
// goroutine while Rows is called from another.
type Top struct {
	// Names maps identities to the workload they belong to, to name a
	// caller by what it proved rather than by its address.
	Names map[string]string

	mu    sync.Mutex
	paths map[pathKey]*Path
}

type pathKey struct{ src, dst, method, path string }

// NamesFor maps each identity that exactly one of the workloads presents
// to that workload's kind/name.
func NamesFor(ws []inventory.Workload) map[string]string {
	names, seen := map[string]string{}, map[string]int{}
	for _, w := range ws {
		if w.Identity != "" {
			seen[w.Identity]++
			names[w.Identity] = w.Ref()
		}
	}
	for id, n := range seen {
		if n > 1 {
			delete(names, id)
		}
	}
	return names
}

// Add counts an event; only end events (a request that finished) count.
func (t *Top) Add(e Event) {
	if e.Type != "end" {
		return
	}
	src, dst := e.Instance, e.Authority
	if e.Direction == "inbound" {
		src, dst = t.caller(e), e.Instance
	}
	k := pathKey{src, dst, e.Method, e.Path}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.paths == nil {
		t.paths = map[pathKey]*Path{}
	}
	p := t.paths[k]
	if p == nil {
		p = &Path{Source: src, Destination: dst, Method: e.Method, Path: e.Path, BestMS: e.DurationMS, WorstMS: e.DurationMS}
		t.paths[k] = p
	}
	p.Count++
	if succeeded(e) {
		p.Successes++
	}
	p.BestMS, p.WorstMS, p.LastMS = min(p.BestMS, e.DurationMS), max(p.WorstMS, e.DurationMS), e.DurationMS
}

// caller names an inbound request's client: its workload when the
// identity it proved is one workload's, else the identity, else its
// address (it proved none).
func (t *Top) caller(e Event) string {
	if e.ClientID != "" {
		if n, ok := t.Names[e.ClientID]; ok {
			return n
		}
		return e.ClientID
	}
	if host, _, err := net.SplitHostPort(e.Source); err == nil {
		return host
	}
	return e.Source
}

// succeeded is what the proxies count as success (no 5xx, no gRPC error),
// on a response that also reached its end.
func succeeded(e Event) bool {
	return e.Error == "" && metrics.Classify(e.Status, e.GRPCStatus) == "success"
}

// Rows are the paths, most requests first.
func (t *Top) Rows() []Path {
	t.mu.Lock()
	out := make([]Path, 0, len(t.paths))
	for _, p := range t.paths {
		out = append(out, *p)
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		return a.Source+a.Destination+a.Method+a.Path < b.Source+b.Destination+b.Method+b.Path
	})
	return out
}

// RenderTop writes at most limit rows (0: all) as a table.
func RenderTop(w io.Writer, rows []Path, limit int) error {
	if len(rows) == 0 {
		_, err := fmt.Fprintln(w, "(no requests seen yet)")
		return err
	}
	if limit > 0 && len(rows) > limit {
		rows = rows[:limit]
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tDESTINATION\tMETHOD\tPATH\tCOUNT\tBEST\tWORST\tLAST\tSUCCESS")
	for _, p := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", p.Source, p.Destination, p.Method, p.Path, p.Count,
			ms(p.BestMS), ms(p.WorstMS), ms(p.LastMS), strconv.FormatFloat(100*float64(p.Successes)/float64(p.Count), 'f', 2, 64)+"%")
	}
	return tw.Flush()
}

func ms(v float64) string {
	if v < 10 {
		return strconv.FormatFloat(v, 'f', 1, 64) + "ms"
	}
	return strconv.FormatFloat(v, 'f', 0, 64) + "ms"
}
