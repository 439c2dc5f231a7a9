package file

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/meshproj/mesh/discovery"
)

// route is one of a service's routes in the file.
type route struct {
	Name            string          `yaml:"name"`
	Matches         []routeMatch    `yaml:"matches"`
	Backends        []routeBackend  `yaml:"backends"`
	Timeouts        *timeouts       `yaml:"timeouts"`
	Retries         *retries        `yaml:"retries"`
	RequestHeaders  *headerModifier `yaml:"requestHeaders"`
	ResponseHeaders *headerModifier `yaml:"responseHeaders"`
	Redirect        *redirect       `yaml:"redirect"`
}

type headerModifier struct {
	Set    []nameValue `yaml:"set"`
	Add    []nameValue `yaml:"add"`
	Remove []string    `yaml:"remove"`
}

type redirect struct {
	Scheme      string  `yaml:"scheme"`
	Hostname    string  `yaml:"hostname"`
	Port        uint16  `yaml:"port"`
	FullPath    *string `yaml:"fullPath"`
	PrefixMatch *string `yaml:"prefixMatch"`
	StatusCode  int     `yaml:"statusCode"`
}

type routeMatch struct {
	Path        *pathMatch  `yaml:"path"`
	Method      string      `yaml:"method"`
	Headers     []nameValue `yaml:"headers"`
	QueryParams []nameValue `yaml:"queryParams"`
}

type pathMatch struct {
	Type  string `yaml:"type"`
	Value string `yaml:"value"`
}

type nameValue struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

type routeBackend struct {
	Service string  `yaml:"service"`
	Weight  *uint32 `yaml:"weight"`
}

// methods are those a route may match on.
var methods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace}

// routes checks a service's routes; p is the service's policy parser.
func (p policy) routes(svc *discovery.Service, in []route) error {
	names := map[string]int{}
	for j, r := range in {
		rp := policy{
			at:    func(path ...any) int { return p.at(append([]any{"routes", j}, path...)...) },
			field: func(f string) string { return p.field(fmt.Sprintf("routes[%d].%s", j, f)) },
			fail:  p.fail,
		}
		out := discovery.Route{Name: r.Name}
		if out.Name == "" {
			out.Name = fmt.Sprintf("%s:%d/%d", svc.Name, svc.Port, j)
		}
		if prev, dup := names[out.Name]; dup {
			return rp.fail(rp.at("name"), "%s %q is also routes[%d]'s name", rp.field("name"), out.Name, prev)
		}
		names[out.Name] = j
		for k, m := range r.Matches {
			mf := func(f string) string { return rp.field(fmt.Sprintf("matches[%d].%s", k, f)) }
			var dm discovery.RouteMatch
			if m.Path != nil {
				switch m.Path.Type {
				case "", discovery.PathPrefix:
					dm.PathType = discovery.PathPrefix
				case discovery.PathExact:
					dm.PathType = discovery.PathExact
				default:
					return rp.fail(rp.at("matches", k, "path", "type"), "%s %q is not Exact or PathPrefix", mf("path.type"), m.Path.Type)
				}
				dm.Path = m.Path.Value
				if dm.Path == "" {
					dm.Path = "/"
				}
				if !strings.HasPrefix(dm.Path, "/") {
					return rp.fail(rp.at("matches", k, "path", "value"), "%s %q must start with /", mf("path.value"), m.Path.Value)
				}
			}
			if m.Method != "" {
				dm.Method = strings.ToUpper(m.Method)
				if !slices.Contains(methods, dm.Method) {
					return rp.fail(rp.at("matches", k, "method"), "%s %q is not an HTTP method (%s)", mf("method"), m.Method, strings.Join(methods, ", "))
				}
			}
			for l, h := range m.Headers {
				if h.Name == "" || strings.ContainsAny(h.Name, " :\t\r\n") {
					return rp.fail(rp.at("matches", k, "headers", l, "name"), "%s %q is not a header name", mf(fmt.Sprintf("headers[%d].name", l)), h.Name)
				}
				dm.Headers = append(dm.Headers, discovery.NameValue(h))
			}
			for l, q := range m.QueryParams {
				if q.Name == "" {
					return rp.fail(rp.at("matches", k, "queryParams", l, "name"), "%s is required", mf(fmt.Sprintf("queryParams[%d].name", l)))
				}
				dm.QueryParams = append(dm.QueryParams, discovery.NameValue(q))
			}
			out.Matches = append(out.Matches, dm)
		}
		total := uint32(0)
		for k, b := range r.Backends {
			key, err := discovery.ParseAuthority(b.Service, 0)
			if err != nil || key.Port == 0 {
				return rp.fail(rp.at("backends", k, "service"), "%s %q is not a service as NAME:PORT", rp.field(fmt.Sprintf("backends[%d].service", k)), b.Service)
			}
			w := uint32(1)
			if b.Weight != nil {
				w = *b.Weight
			}
			if w > 1_000_000 {
				return rp.fail(rp.at("backends", k, "weight"), "%s must be at most 1000000, got %d", rp.field(fmt.Sprintf("backends[%d].weight", k)), w)
			}
			total += w
			out.Backends = append(out.Backends, discovery.RouteBackend{Service: key, Weight: w})
		}
		if len(r.Backends) > 0 && total == 0 {
			return rp.fail(rp.at("backends"), "%s all have weight 0: the route would refuse every request", rp.field("backends"))
		}
		if r.Timeouts != nil {
			var err error
			if out.Timeouts, err = rp.timeouts(r.Timeouts); err != nil {
				return err
			}
		}
		if r.Retries != nil {
			var tmp discovery.Service
			if err := rp.retries(&tmp, r.Retries); err != nil {
				return err
			}
			out.Retries = tmp.Retries
		}
		for _, hm := range []struct {
			field string
			in    *headerModifier
			out   **discovery.HeaderModifier
		}{{"requestHeaders", r.RequestHeaders, &out.RequestHeaders}, {"responseHeaders", r.ResponseHeaders, &out.ResponseHeaders}} {
			if hm.in == nil {
				continue
			}
			m := &discovery.HeaderModifier{Remove: hm.in.Remove}
			for _, nv := range hm.in.Set {
				m.Set = append(m.Set, discovery.NameValue(nv))
			}
			for _, nv := range hm.in.Add {
				m.Add = append(m.Add, discovery.NameValue(nv))
			}
			*hm.out = m
		}
		if rd := r.Redirect; rd != nil {
			if len(r.Backends) > 0 {
				return rp.fail(rp.at("redirect"), "%s and %s: a route that redirects sends nothing to backends", rp.field("redirect"), rp.field("backends"))
			}
			out.Redirect = &discovery.Redirect{Scheme: rd.Scheme, Hostname: rd.Hostname, Port: rd.Port, FullPath: rd.FullPath, PrefixMatch: rd.PrefixMatch, StatusCode: rd.StatusCode}
		}
		if err := out.Validate(); err != nil {
			return rp.fail(rp.at(), "%s: %v", strings.TrimSuffix(rp.field(""), "."), err)
		}
		svc.Routes = append(svc.Routes, out)
	}
	return nil
}
