package proxy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"

	"github.com/meshproj/mesh/discovery"
)

// This file is where a service's routes decide where each of its HTTP
// requests goes: the most specific matching route, then one of its
// backend services by weight, with the route's timeout and retries.

// route is a discovery route prepared for the request path.
type route struct {
	name     string
	backends []discovery.RouteBackend
	// cumulative weights of backends, for a pick by weight.
	cumulative []uint32
	// override holds the route's timeout and retries, nil when it sets
	// neither; retries says whether it sets retries (override's are
	// defaults otherwise).
	override *policy
	retries  bool
	// Filters: header changes each way, or a redirect instead of a
	// backend.
	reqHeaders, respHeaders *discovery.HeaderModifier
	redirect                *discovery.Redirect
}

// timeout reports whether the route sets a request timeout.
func (r *route) timeout() bool { return r.override != nil && r.override.requestTimeout > 0 }

// weightless reports whether the route has backends, all of weight 0.
func (r *route) weightless() bool {
	return len(r.cumulative) > 0 && r.cumulative[len(r.cumulative)-1] == 0
}

// routeEntry is one match of a route; a route without matches has one
// entry that matches everything.
type routeEntry struct {
	match discovery.RouteMatch
	route *route
}

// routeTable is a service's routes, their matches ordered most specific
// first.
type routeTable struct {
	entries []routeEntry
	byName  map[string]*route
}

// newRouteTable prepares a service's routes. A route's retry budget
// carries over from prev while its settings stay the same.
func newRouteTable(routes []discovery.Route, prev *routeTable) *routeTable {
	if len(routes) == 0 {
		return nil
	}
	t := &routeTable{byName: make(map[string]*route, len(routes))}
	prepared := make([]*route, len(routes))
	for i, dr := range routes {
		r := &route{name: dr.Name, backends: dr.Backends, retries: dr.Retries != nil,
			reqHeaders: dr.RequestHeaders, respHeaders: dr.ResponseHeaders, redirect: dr.Redirect}
		var sum uint32
		for _, b := range dr.Backends {
			sum += b.Weight
			r.cumulative = append(r.cumulative, sum)
		}
		if dr.Timeouts.Request > 0 || dr.Timeouts.Attempt > 0 || r.retries {
			var old *policy
			if prev != nil && prev.byName[dr.Name] != nil {
				old = prev.byName[dr.Name].override
			}
			r.override = newPolicy(&discovery.Service{Timeouts: dr.Timeouts, Retries: dr.Retries}, old)
		}
		t.byName[r.name] = r
		prepared[i] = r
	}
	for _, e := range discovery.OrderRoutes(routes) {
		t.entries = append(t.entries, routeEntry{match: e.Match, route: prepared[e.Route]})
	}
	return t
}

// match returns the most specific match for r, or nil.
func (t *routeTable) match(r *http.Request) *routeEntry {
	for i := range t.entries {
		if t.entries[i].match.Matches(r) {
			return &t.entries[i]
		}
	}
	return nil
}

// pick chooses a backend by weight; ok is false when the route has none.
func (r *route) pick() (discovery.Key, bool) {
	if len(r.backends) == 0 || r.weightless() {
		return discovery.Key{}, false
	}
	n := rand.Uint32N(r.cumulative[len(r.cumulative)-1])
	i, _ := slices.BinarySearch(r.cumulative, n+1)
	return r.backends[i].Service, true
}

type routeKey struct{}

// routeOf returns the route a request was routed by, or nil.
func routeOf(ctx context.Context) *route {
	r, _ := ctx.Value(routeKey{}).(*route)
	return r
}

// routeName is the name of the route a request was routed by, or "".
func routeName(ctx context.Context) string { return routeOf(ctx).nameOrNone() }

// nameOrNone is the route's name, "" for no route.
func (r *route) nameOrNone() string {
	if r == nil {
		return ""
	}
	return r.name
}

// with returns pol with what the route replaces: its timeout, its retries
// and their budget.
func (r *route) with(pol *policy) *policy {
	if r == nil || r.override == nil {
		return pol
	}
	p := *pol
	if r.timeout() {
		p.requestTimeout = r.override.requestTimeout
	}
	if r.override.attemptTimeout > 0 {
		p.attemptTimeout = r.override.attemptTimeout
	}
	if r.retries {
		p.maxRetries, p.statuses, p.grpcCodes, p.budget, p.backoff = r.override.maxRetries, r.override.statuses, r.override.grpcCodes, r.override.budget, r.override.backoff
	}
	return &p
}

// serveService sends a request to a service, or where its routes say.
func (p *Proxy) serveService(w http.ResponseWriter, r *http.Request, svc *service) {
	rt := svc.routes.Load()
	if rt == nil {
		svc.forward.ServeHTTP(w, r)
		return
	}
	e := rt.match(r)
	if e == nil {
		p.window.record(outbound, svc.authority, "", "", 0, false)
		p.fail(w, r, outbound, http.StatusNotFound, "no_route",
			fmt.Sprintf("no route of %s matches %s %s", svc.authority, r.Method, r.URL.Path))
		return
	}
	ro := e.route
	if rd := ro.redirect; rd != nil {
		code := rd.StatusCode
		if code == 0 {
			code = http.StatusFound
		}
		p.window.record(outbound, svc.authority, "", ro.name, 0, true)
		w.Header().Set("Location", rd.Location(r, e.match, strconv.Itoa(int(svc.settings.Load().Port))))
		w.WriteHeader(code)
		return
	}
	ro.reqHeaders.Apply(r.Header)
	if ro.respHeaders != nil {
		w = &modifiedHeaders{ResponseWriter: w, m: ro.respHeaders}
	}
	if ro.weightless() {
		p.window.record(outbound, svc.authority, "", ro.name, 0, false)
		p.fail(w, r, outbound, http.StatusInternalServerError, "route_backend_unknown",
			fmt.Sprintf("route %s of %s: every backend has weight 0", ro.name, svc.authority))
		return
	}
	target := svc
	if key, ok := ro.pick(); ok && key != svc.settings.Load().Key() {
		b, err := p.lookup(r.Context(), key)
		if err != nil {
			p.window.record(outbound, key.String(), "", ro.name, 0, false)
			p.fail(w, r, outbound, http.StatusInternalServerError, "route_backend_unknown",
				fmt.Sprintf("route %s of %s: backend %s: %v", ro.name, svc.authority, key, err))
			return
		}
		target = b
	}
	p.noteRoute(r.Context(), ro.name)
	r = r.WithContext(context.WithValue(r.Context(), routeKey{}, ro))
	target.forward.ServeHTTP(w, r)
}

// modifiedHeaders changes a response's headers as a route says, once,
// before they are written.
type modifiedHeaders struct {
	http.ResponseWriter
	m    *discovery.HeaderModifier
	done bool
}

func (w *modifiedHeaders) WriteHeader(code int) {
	if !w.done && code >= 200 {
		w.done = true
		w.m.Apply(w.Header())
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *modifiedHeaders) Write(b []byte) (int, error) {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController flush the response underneath.
func (w *modifiedHeaders) Unwrap() http.ResponseWriter { return w.ResponseWriter }
