package discovery

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Route sends the requests it matches to weighted backend services, with
// failure handling of its own: the Gateway API's HTTPRoute rule, attached
// to the service whose requests it routes. A service with routes answers
// 404 to a request none of them matches.
type Route struct {
	// Name identifies the route in metrics, tap and errors
	// ("namespace/name" for an HTTPRoute, with the rule's index).
	Name string `json:"name"`
	// Matches are alternatives; a route without any matches everything.
	Matches []RouteMatch `json:"matches,omitempty"`
	// Backends share the route's requests by weight; without any, the
	// service itself takes them.
	Backends []RouteBackend `json:"backends,omitempty"`
	// Timeouts and Retries, when set, replace the backend service's.
	Timeouts Timeouts `json:"timeouts,omitzero"`
	Retries  *Retries `json:"retries,omitempty"`
	// RequestHeaders and ResponseHeaders change the headers of the
	// requests the route sends and of the responses it returns.
	RequestHeaders  *HeaderModifier `json:"requestHeaders,omitempty"`
	ResponseHeaders *HeaderModifier `json:"responseHeaders,omitempty"`
	// Redirect, when set, answers every request the route matches with a
	// redirect instead of sending it anywhere.
	Redirect *Redirect `json:"redirect,omitempty"`
}

// HeaderModifier sets (replaces), adds (beside what is there) and
// removes headers, in that order, as the Gateway API's filter does.
type HeaderModifier struct {
	Set    []NameValue `json:"set,omitempty"`
	Add    []NameValue `json:"add,omitempty"`
	Remove []string    `json:"remove,omitempty"`
}

// Apply changes h.
func (m *HeaderModifier) Apply(h http.Header) {
	if m == nil {
		return
	}
	for _, nv := range m.Set {
		h.Set(nv.Name, nv.Value)
	}
	for _, nv := range m.Add {
		h.Add(nv.Name, nv.Value)
	}
	for _, name := range m.Remove {
		h.Del(name)
	}
}

// Redirect is where a redirect sends the client: each field left empty
// keeps the request's.
type Redirect struct {
	Scheme   string `json:"scheme,omitempty"` // http or https
	Hostname string `json:"hostname,omitempty"`
	// Port, when 0, is the scheme's own when the scheme changes, else
	// the request's.
	Port uint16 `json:"port,omitempty"`
	// FullPath replaces the path; PrefixMatch replaces the prefix the
	// route matched (only on a PathPrefix match).
	FullPath    *string `json:"fullPath,omitempty"`
	PrefixMatch *string `json:"prefixMatch,omitempty"`
	// StatusCode is 301, 302 (the default), 303, 307 or 308.
	StatusCode int `json:"statusCode,omitempty"`
}

// Location is where r, matched by m, is redirected to; port is the
// service port it was sent to, used when its Host names none. As the
// Gateway API asks, a redirect that names a scheme goes to that scheme's
// well-known port unless it names a port too.
func (rd *Redirect) Location(r *http.Request, m RouteMatch, port string) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host := r.Host
	if h, p, err := net.SplitHostPort(r.Host); err == nil {
		host, port = h, p
	}
	if rd.Scheme != "" {
		scheme, port = rd.Scheme, ""
	}
	if rd.Hostname != "" {
		host = rd.Hostname
	}
	if rd.Port != 0 {
		port = strconv.Itoa(int(rd.Port))
	}
	if port == "80" && scheme == "http" || port == "443" && scheme == "https" {
		port = ""
	}
	path := r.URL.Path
	switch {
	case rd.FullPath != nil:
		path = *rd.FullPath
	case rd.PrefixMatch != nil && m.PathType == PathPrefix:
		rest := strings.TrimPrefix(path, strings.TrimSuffix(m.Path, "/"))
		path = strings.TrimSuffix(*rd.PrefixMatch, "/") + rest
		if path == "" {
			path = "/"
		} else if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
	}
	u := url.URL{Scheme: scheme, Host: host, Path: path, RawQuery: r.URL.RawQuery}
	if port != "" {
		u.Host = net.JoinHostPort(host, port)
	}
	return u.String()
}

// Path match types, as the Gateway API names them.
const (
	PathExact  = "Exact"
	PathPrefix = "PathPrefix"
)

// RouteMatch is one set of conditions, all of which a request must meet.
type RouteMatch struct {
	// PathType is PathExact or PathPrefix (whole segments: /api matches
	// /api and /api/x, not /apix); empty matches any path.
	PathType string `json:"pathType,omitempty"`
	Path     string `json:"path,omitempty"`
	// Method, when set, must be the request's.
	Method string `json:"method,omitempty"`
	// Headers and QueryParams must each be present with exactly this value
	// (header names without regard to case).
	Headers     []NameValue `json:"headers,omitempty"`
	QueryParams []NameValue `json:"queryParams,omitempty"`
}

// NameValue is a header or query parameter to match.
type NameValue struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// RouteBackend is a service that takes a share of a route's requests.
type RouteBackend struct {
	Service Key    `json:"service"`
	Weight  uint32 `json:"weight"`
}

// Matches reports whether r meets every condition of m.
func (m RouteMatch) Matches(r *http.Request) bool {
	switch m.PathType {
	case PathExact:
		if r.URL.Path != m.Path {
			return false
		}
	case PathPrefix:
		if !pathHasPrefix(r.URL.Path, m.Path) {
			return false
		}
	}
	if m.Method != "" && r.Method != m.Method {
		return false
	}
	for _, h := range m.Headers {
		if r.Header.Get(h.Name) != h.Value {
			return false
		}
	}
	if len(m.QueryParams) > 0 {
		q := r.URL.Query()
		for _, p := range m.QueryParams {
			if vs, ok := q[p.Name]; !ok || vs[0] != p.Value {
				return false
			}
		}
	}
	return true
}

// pathHasPrefix matches whole path segments: "/api" and "/api/" both
// match "/api" and "/api/x" but not "/apix".
func pathHasPrefix(path, prefix string) bool {
	prefix = strings.TrimSuffix(prefix, "/")
	if prefix == "" {
		return true
	}
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

// MoreSpecific orders matches as the Gateway API asks when several routes
// match a request: an exact path first, then the longest prefix, then a
// method, then more headers, then more query parameters.
func MoreSpecific(a, b RouteMatch) bool {
	if (a.PathType == PathExact) != (b.PathType == PathExact) {
		return a.PathType == PathExact
	}
	if len(a.Path) != len(b.Path) {
		return len(a.Path) > len(b.Path)
	}
	if (a.Method != "") != (b.Method != "") {
		return a.Method != ""
	}
	if len(a.Headers) != len(b.Headers) {
		return len(a.Headers) > len(b.Headers)
	}
	return len(a.QueryParams) > len(b.QueryParams)
}

// RouteEntry is one match of one route: a route without matches has one
// entry, matching everything.
type RouteEntry struct {
	Match RouteMatch
	// Route is the route's index in the list ordered.
	Route int
}

// OrderRoutes lists every match of routes most specific first, as the
// Gateway API ranks them; among equally specific matches the route
// listed first wins, so routes must come oldest first.
func OrderRoutes(routes []Route) []RouteEntry {
	var out []RouteEntry
	for i, r := range routes {
		if len(r.Matches) == 0 {
			out = append(out, RouteEntry{Route: i})
		}
		for _, m := range r.Matches {
			out = append(out, RouteEntry{Match: m, Route: i})
		}
	}
	slices.SortStableFunc(out, func(a, b RouteEntry) int {
		switch {
		case MoreSpecific(a.Match, b.Match):
			return -1
		case MoreSpecific(b.Match, a.Match):
			return 1
		}
		return 0
	})
	return out
}

// Validate checks what a proxy relies on in a route it was sent: a name,
// known path types on absolute paths, backends with a host and a port,
// weights within the Gateway API's bound, and a sane retry count.
func (r *Route) Validate() error {
	if r.Name == "" {
		return errors.New("no name")
	}
	for i, m := range r.Matches {
		switch m.PathType {
		case "", PathExact, PathPrefix:
		default:
			return fmt.Errorf("match %d: unknown path type %q", i, m.PathType)
		}
		if m.PathType != "" && !strings.HasPrefix(m.Path, "/") {
			return fmt.Errorf("match %d: path %q does not start with /", i, m.Path)
		}
	}
	for i, b := range r.Backends {
		if b.Service.Host == "" || b.Service.Port == 0 {
			return fmt.Errorf("backend %d: %q is not a service port", i, b.Service)
		}
		if b.Weight > 1_000_000 {
			return fmt.Errorf("backend %d: weight %d over 1000000", i, b.Weight)
		}
	}
	if r.Retries != nil && (r.Retries.MaxRetries < 0 || r.Retries.MaxRetries > 10) {
		return fmt.Errorf("%d retries: want 0 to 10", r.Retries.MaxRetries)
	}
	if r.Retries != nil && (r.Retries.Backoff < 0 || r.Retries.Backoff > time.Minute) {
		return fmt.Errorf("retry backoff %s: want at most a minute", r.Retries.Backoff)
	}
	if t := r.Timeouts; t.Request < 0 || t.Attempt < 0 || t.Request > 0 && t.Attempt > t.Request {
		return fmt.Errorf("timeouts: request %s, per attempt %s: an attempt cannot outlast the request", t.Request, t.Attempt)
	}
	for _, m := range []*HeaderModifier{r.RequestHeaders, r.ResponseHeaders} {
		if err := m.validate(); err != nil {
			return err
		}
	}
	if rd := r.Redirect; rd != nil {
		switch {
		case rd.Scheme != "" && rd.Scheme != "http" && rd.Scheme != "https":
			return fmt.Errorf("redirect scheme %q: want http or https", rd.Scheme)
		case !slices.Contains([]int{0, 301, 302, 303, 307, 308}, rd.StatusCode):
			return fmt.Errorf("redirect status %d: want 301, 302, 303, 307 or 308", rd.StatusCode)
		case rd.FullPath != nil && rd.PrefixMatch != nil:
			return errors.New("a redirect replaces the full path or the prefix, not both")
		case strings.ContainsAny(rd.Hostname, "/?#@ "):
			return fmt.Errorf("redirect hostname %q", rd.Hostname)
		}
	}
	return nil
}

func (m *HeaderModifier) validate() error {
	if m == nil {
		return nil
	}
	for _, nv := range append(slices.Clone(m.Set), m.Add...) {
		if !httpguts.ValidHeaderFieldName(nv.Name) || !httpguts.ValidHeaderFieldValue(nv.Value) {
			return fmt.Errorf("header %q: not a header name and value", nv.Name)
		}
	}
	for _, name := range m.Remove {
		if !httpguts.ValidHeaderFieldName(name) {
			return fmt.Errorf("header %q: not a header name", name)
		}
	}
	return nil
}
