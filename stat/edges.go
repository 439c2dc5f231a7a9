package stat

import (
	"context"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"

	"github.com/meshproj/mesh/inventory"
	"github.com/meshproj/mesh/proxy/adminapi"
)

// Edge is one pair of workloads that talked in the window, with the
// identities each side proved. Either side may be outside the mesh: a
// client without a proxy has no name here ("-"), a destination without
// one is named by the authority the client used.
type Edge struct {
	Src          string `json:"src"`
	SrcNamespace string `json:"srcNamespace,omitempty"`
	Dst          string `json:"dst"`
	DstNamespace string `json:"dstNamespace,omitempty"`
	// ClientID and ServerID are the SPIFFE IDs proved in the mTLS
	// handshake; empty when the traffic was not mTLS.
	ClientID string `json:"clientIdentity,omitempty"`
	ServerID string `json:"serverIdentity,omitempty"`
	MTLS     bool   `json:"mtls"`
	Requests uint64 `json:"requests"`
	// SuccessRate is the share of the requests that did not fail, as the
	// side that counted them saw it (the client, where it has a proxy);
	// nil without requests.
	SuccessRate *float64 `json:"successRate"`
	// Why says, for an edge that is not mTLS, what the proxies saw.
	Why string `json:"why,omitempty"`

	// What each side counted, summed over its instances.
	sent, served, sentOK, servedOK uint64
}

// Unmeshed names a client the mesh cannot name: it has no proxy, so it
// proved no identity.
const Unmeshed = "-"

// Edges computes who talked to whom among the selected workloads (either
// end selected), from every proxy's window: a proxy's inbound entries name
// the client by the identity it proved, its outbound ones the server by
// the authority the app used and the identity the server proved.
func Edges(ctx context.Context, m *inventory.Mesh, resource string, window int, fetch Fetcher) ([]Edge, error) {
	selected, err := m.Select(resource)
	if err != nil {
		return nil, err
	}
	inSel := map[string]bool{}
	for _, w := range selected {
		inSel[w.Namespace+"/"+w.Ref()] = true
	}
	if window <= 0 {
		window = 10
	}
	all := m.Workloads
	results := fetchAll(ctx, all, window, fetch)
	byID := map[string][]int{}
	for i, w := range all {
		if w.Identity != "" {
			byID[w.Identity] = append(byID[w.Identity], i)
		}
	}
	type key struct{ src, dst string }
	edges := map[key]*Edge{}
	add := func(e Edge) {
		k := key{e.SrcNamespace + "/" + e.Src, e.DstNamespace + "/" + e.Dst}
		if old := edges[k]; old != nil {
			// Both sides saw it: the client's count is what it sent.
			old.ClientID = first(old.ClientID, e.ClientID)
			old.ServerID = first(old.ServerID, e.ServerID)
			old.MTLS = old.MTLS || e.MTLS
			old.sent += e.sent
			old.served += e.served
			old.sentOK += e.sentOK
			old.servedOK += e.servedOK
			old.Requests = max(old.sent, old.served)
			if old.MTLS {
				old.Why = ""
			}
			return
		}
		if !inSel[k.src] && !inSel[k.dst] {
			return
		}
		edges[k] = &e
	}
	for i, w := range all {
		for _, r := range results[i] {
			if r.stats == nil {
				continue
			}
			for _, s := range r.stats.Stats {
				switch s.Direction {
				case "inbound":
					add(inboundEdge(all, byID, w, s))
				case "outbound":
					add(outboundEdge(all, w, s))
				}
			}
		}
	}
	out := make([]Edge, 0, len(edges))
	for _, e := range edges {
		if e.Src == e.ClientID && seenByClient(edges, e) {
			continue
		}
		ok := e.servedOK
		if e.sent >= e.served {
			ok = e.sentOK
		}
		if e.Requests > 0 {
			rate := float64(ok) / float64(e.Requests)
			e.SuccessRate = &rate
		}
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.SrcNamespace+a.Src != b.SrcNamespace+b.Src {
			return a.SrcNamespace+a.Src < b.SrcNamespace+b.Src
		}
		return a.DstNamespace+a.Dst < b.DstNamespace+b.Dst
	})
	return out, nil
}

// seenByClient reports whether an edge the server named only by a shared
// identity is one a client's proxy named better.
func seenByClient[K comparable](edges map[K]*Edge, e *Edge) bool {
	for _, o := range edges {
		if o != e && o.Dst == e.Dst && o.DstNamespace == e.DstNamespace && o.ClientID == e.ClientID && o.Src != o.ClientID {
			return true
		}
	}
	return false
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// inboundEdge is what the server's proxy saw: the client by the identity
// it proved, if it proved one.
func inboundEdge(all []inventory.Workload, byID map[string][]int, w inventory.Workload, s adminapi.WindowStat) Edge {
	e := Edge{Dst: w.Ref(), DstNamespace: w.Namespace, Requests: s.Requests, served: s.Requests, servedOK: s.Successes, Src: Unmeshed}
	if s.Peer == "" {
		e.Why = "the client proved no identity: it has no proxy, or its proxy has no certificate"
		return e
	}
	e.ClientID, e.ServerID, e.MTLS = s.Peer, w.Identity, true
	if ids := byID[s.Peer]; len(ids) == 1 {
		e.Src, e.SrcNamespace = all[ids[0]].Ref(), all[ids[0]].Namespace
	} else {
		// Several workloads share the identity (one ServiceAccount), or the
		// client is outside what we listed: the identity is its name.
		e.Src = s.Peer
	}
	return e
}

// outboundEdge is what the client's proxy saw: the server by the authority
// the app used, and the identity the server proved.
func outboundEdge(all []inventory.Workload, w inventory.Workload, s adminapi.WindowStat) Edge {
	e := Edge{Src: w.Ref(), SrcNamespace: w.Namespace, Dst: s.Authority, Requests: s.Requests, sent: s.Requests, sentOK: s.Successes}
	for _, d := range all {
		if d.Serves(s.Authority) {
			e.Dst, e.DstNamespace = d.Ref(), d.Namespace
			break
		}
	}
	if s.Peer == "" {
		e.Why = "the server proved no identity: it has no proxy, or is outside the mesh"
		return e
	}
	e.ClientID, e.ServerID, e.MTLS = w.Identity, s.Peer, true
	return e
}

// RenderEdges writes edges as a table or JSON.
func RenderEdges(w io.Writer, edges []Edge, format string) error {
	if done, err := asJSON(w, edges, format); done {
		return err
	}
	if len(edges) == 0 {
		_, err := fmt.Fprintln(w, "No traffic found.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "SRC\tDST\tSRC_NS\tDST_NS\tCLIENT_ID\tSERVER_ID\tSECURED")
	for _, e := range edges {
		secured := "√"
		if !e.MTLS {
			secured = "× " + e.Why
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Src, e.Dst, dash(e.SrcNamespace), dash(e.DstNamespace),
			dash(e.ClientID), dash(e.ServerID), secured)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
