package stat

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/inventory"
	"github.com/meshproj/mesh/proxy/adminapi"
)

// AuthzRow is one line of `mesh authz`: what admits clients to a port of
// a workload (an authorization of a Server, the default policy, or the
// kubelet's probes), and how often the proxies decided by it in the window.
type AuthzRow struct {
	Workload string `json:"workload"`
	// Server selects the port; empty: ports no Server selects, which
	// follow the default policy.
	Server   string `json:"server,omitempty"`
	Port     uint16 `json:"port,omitempty"`
	Protocol string `json:"protocol,omitempty"`
	// Authorization is the AuthorizationPolicy; empty on the row that
	// counts what a Server (or the default policy) refused.
	Authorization string `json:"authorization,omitempty"`
	// Admits says who, in words: identities and networks, or the default
	// policy's name.
	Admits  string `json:"admits"`
	Allowed uint64 `json:"allowed"`
	Denied  uint64 `json:"denied"`
	// Audited would have been denied, and was let through in audit mode.
	Audited uint64 `json:"audited"`
	// Reasons are why clients were refused, most frequent first.
	Reasons []string `json:"reasons,omitempty"`
	// Stale is set when a proxy counted by a rule its current policy no
	// longer has (the policy changed within the window).
	Stale bool `json:"stale,omitempty"`
}

// DumpFetcher reads a proxy's /config_dump; tests swap in recorded data.
type DumpFetcher func(ctx context.Context, admin string) (*adminapi.ConfigDump, error)

// HTTPDump asks a proxy's admin endpoint for its /config_dump.
func HTTPDump(ctx context.Context, admin string) (*adminapi.ConfigDump, error) {
	c := &http.Client{Timeout: 3 * time.Second}
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+admin+"/config_dump", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/config_dump: %s", admin, resp.Status)
	}
	var d adminapi.ConfigDump
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		return nil, fmt.Errorf("%s/config_dump: %w", admin, err)
	}
	return &d, nil
}

// Authz lists, for each selected workload, the Servers and authorizations
// its proxies enforce and the default policy of the other ports, with the
// decisions they made over the window, summed over the workload's proxies.
func Authz(ctx context.Context, m *inventory.Mesh, resource string, window int, fetch Fetcher, dump DumpFetcher) ([]AuthzRow, error) {
	workloads, err := m.Select(resource)
	if err != nil {
		return nil, err
	}
	if window <= 0 {
		window = 10
	}
	results := fetchAll(ctx, workloads, window, fetch)
	var rows []AuthzRow
	for i, w := range workloads {
		var policy *discovery.InboundPolicy
		var lastErr error
		for _, inst := range w.Instances {
			d, err := dump(ctx, inst.Admin)
			if err != nil {
				lastErr = err
				continue
			}
			if policy == nil {
				policy = &d.InboundPolicy
			}
		}
		if policy == nil {
			if lastErr == nil {
				lastErr = fmt.Errorf("it has no running proxy")
			}
			if len(workloads) == 1 {
				return nil, fmt.Errorf("%s: no proxy answered: %w", w.Ref(), lastErr)
			}
			// Among many, a workload no proxy of which answers is left
			// out, as stat shows it with nothing meshed.
			continue
		}
		var stats []adminapi.AuthzStat
		for _, r := range results[i] {
			if r.stats != nil {
				stats = append(stats, r.stats.Authz...)
			}
		}
		rows = append(rows, authzRows(w.Ref(), policy, stats)...)
	}
	return rows, nil
}

// authzRows lays out one workload's policy and counts: per Server its
// authorizations, then what it refused; the default policy; probes; and
// counts by rules the policy no longer has.
func authzRows(workload string, pol *discovery.InboundPolicy, stats []adminapi.AuthzStat) []AuthzRow {
	type ruleKey struct{ server, authorization string }
	allowed := map[ruleKey]uint64{}
	denied, audited := map[string]uint64{}, map[string]uint64{}
	reasons := map[string]map[string]uint64{}
	for _, s := range stats {
		switch s.Verdict {
		case "allowed":
			allowed[ruleKey{s.Server, s.Authorization}] += s.Count
		case "denied", "audited":
			if s.Verdict == "denied" {
				denied[s.Server] += s.Count
			} else {
				audited[s.Server] += s.Count
			}
			if reasons[s.Server] == nil {
				reasons[s.Server] = map[string]uint64{}
			}
			reasons[s.Server][s.Reason] += s.Count
		}
	}
	take := func(k ruleKey) uint64 { n := allowed[k]; delete(allowed, k); return n }
	refusals := func(r *AuthzRow) {
		r.Denied, r.Audited, r.Reasons = denied[r.Server], audited[r.Server], byCount(reasons[r.Server])
		delete(denied, r.Server)
		delete(audited, r.Server)
	}
	var rows []AuthzRow
	for _, s := range pol.Servers {
		for _, a := range s.Authorizations {
			rows = append(rows, AuthzRow{Workload: workload, Server: s.Name, Port: s.Port, Protocol: s.Protocol,
				Authorization: a.Name, Admits: admits(a), Allowed: take(ruleKey{s.Name, a.Name})})
		}
		r := AuthzRow{Workload: workload, Server: s.Name, Port: s.Port, Protocol: s.Protocol, Admits: "nobody else"}
		if len(s.Authorizations) == 0 {
			r.Admits = "nobody: no AuthorizationPolicy targets this Server"
		}
		refusals(&r)
		rows = append(rows, r)
	}
	def := pol.Default
	if def == "" {
		def = discovery.AllUnauthenticated
	}
	r := AuthzRow{Workload: workload, Admits: "default policy " + string(def), Allowed: take(ruleKey{})}
	refusals(&r)
	rows = append(rows, r)
	if n := take(ruleKey{"", "probe"}); n > 0 {
		rows = append(rows, AuthzRow{Workload: workload, Authorization: "probe", Admits: "the kubelet's probes, whatever the policy", Allowed: n})
	}
	// What the proxies counted by rules their policy no longer has.
	var stale []AuthzRow
	for k, n := range allowed {
		stale = append(stale, AuthzRow{Workload: workload, Server: k.server, Authorization: k.authorization, Admits: "(no longer in the policy)", Allowed: n, Stale: true})
	}
	for server := range merge(denied, audited) {
		r := AuthzRow{Workload: workload, Server: server, Admits: "(no longer in the policy)", Stale: true}
		refusals(&r)
		stale = append(stale, r)
	}
	sort.Slice(stale, func(i, j int) bool {
		return stale[i].Server+"/"+stale[i].Authorization < stale[j].Server+"/"+stale[j].Authorization
	})
	return append(rows, stale...)
}

func merge(a, b map[string]uint64) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

func byCount(m map[string]uint64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if m[out[i]] != m[out[j]] {
			return m[out[i]] > m[out[j]]
		}
		return out[i] < out[j]
	})
	if len(out) == 0 {
		return nil
	}
	return out
}

// admits says in words who an authorization lets in.
func admits(a discovery.Authorization) string {
	var who string
	switch {
	case len(a.Identities) == 0:
		who = "any client"
	case len(a.Identities) == 1 && a.Identities[0] == "*":
		who = "any mesh identity"
	default:
		who = strings.Join(a.Identities, ", ")
	}
	var nets []string
	everywhere := false
	for _, n := range a.Networks {
		if n.CIDR.Bits() == 0 && len(n.Except) == 0 {
			everywhere = true
			continue
		}
		s := n.CIDR.String()
		if len(n.Except) > 0 {
			var ex []string
			for _, e := range n.Except {
				ex = append(ex, e.String())
			}
			s += " except " + strings.Join(ex, ", ")
		}
		nets = append(nets, s)
	}
	if len(nets) > 0 && !everywhere {
		who += " from " + strings.Join(nets, ", ")
	}
	return who
}

// RenderAuthz writes rows as a table or JSON.
func RenderAuthz(w io.Writer, rows []AuthzRow, format string) error {
	if done, err := asJSON(w, rows, format); done {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "WORKLOAD\tSERVER\tPORT\tAUTHORIZATION\tADMITS\tALLOWED\tDENIED\tAUDITED\tWHY DENIED")
	for _, r := range rows {
		server, port, auth := r.Server, "*", r.Authorization
		if server == "" {
			server = "-"
		}
		if r.Port != 0 {
			port = strconv.Itoa(int(r.Port))
			if r.Protocol != "" {
				port += "/" + r.Protocol
			}
		}
		if auth == "" {
			auth = "-"
		}
		why := strings.Join(r.Reasons, "; ")
		if why == "" {
			why = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", r.Workload, server, port, auth, r.Admits, r.Allowed, r.Denied, r.Audited, why)
	}
	return tw.Flush()
}
