// Package dashboard serves the mesh in a browser: the workloads with their
// golden signals, a topology of who calls whom, a workload's edges, routes
// and live tap, and the mesh check. It computes nothing of its own: every
// answer is what `mesh stat`, `mesh edges`, `mesh routes`, `mesh tap` and
// `mesh check` print with -o json, from the same packages, and the page
// (embedded, no network needed) draws them.
//
// It is for the person at this machine: it listens on loopback by default
// and answers only requests whose Host names loopback, so that a web page
// elsewhere cannot read it through DNS rebinding; and it changes nothing.
package dashboard

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/meshproj/mesh/check"
	"github.com/meshproj/mesh/inventory"
	"github.com/meshproj/mesh/stat"
	"github.com/meshproj/mesh/tap"
)

//go:embed assets
var assets embed.FS

// Source is the mesh the dashboard shows: the local demo or a cluster, as
// the other diagnostics find it.
type Source struct {
	// Describe says which, for the page's header.
	Describe string
	// Mesh lists the workloads now.
	Mesh func(ctx context.Context) (*inventory.Mesh, error)
	// Checks are those mesh check runs.
	Checks func(ctx context.Context) ([]check.Check, error)
}

// Server answers the page and its API.
type Server struct {
	Source Source
	// Fetch reads a proxy's stats (stat.HTTPFetcher unless a test gives
	// another).
	Fetch stat.Fetcher
	Log   *slog.Logger
}

// maxTapEvents bounds one tap stream; the page opens another when it ends.
const maxTapEvents = 10000

// Handler is the dashboard's HTTP handler.
func (s *Server) Handler() http.Handler {
	if s.Fetch == nil {
		s.Fetch = stat.HTTPFetcher
	}
	if s.Log == nil {
		s.Log = slog.Default()
	}
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // embedded at build time
	}
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(static))
	mux.HandleFunc("GET /api/source", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]string{"source": s.Source.Describe})
	})
	mux.HandleFunc("GET /api/stat", s.meshJSON(func(ctx context.Context, m *inventory.Mesh, q query, buf *bytes.Buffer) error {
		rows, err := stat.Collect(ctx, m, stat.Options{Resource: q.resource, To: q.get("to"), From: q.get("from"), Window: q.window}, s.Fetch)
		if err != nil {
			return err
		}
		return stat.Render(buf, rows, "json", false)
	}))
	mux.HandleFunc("GET /api/edges", s.meshJSON(func(ctx context.Context, m *inventory.Mesh, q query, buf *bytes.Buffer) error {
		edges, err := stat.Edges(ctx, m, q.resource, int(q.window/time.Second), s.Fetch)
		if err != nil {
			return err
		}
		return stat.RenderEdges(buf, edges, "json")
	}))
	mux.HandleFunc("GET /api/routes", s.meshJSON(func(ctx context.Context, m *inventory.Mesh, q query, buf *bytes.Buffer) error {
		if q.resource == "" {
			return errors.New("routes are a client's: name the workload (resource=deploy/web)")
		}
		rows, err := stat.Routes(ctx, m, stat.Options{Resource: q.resource, To: q.get("to"), Window: q.window}, s.Fetch)
		if err != nil {
			return err
		}
		return stat.RenderRoutes(buf, rows, "json")
	}))
	mux.HandleFunc("GET /api/check", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
		defer cancel()
		checks, err := s.Source.Checks(ctx)
		if err != nil {
			apiError(w, http.StatusBadGateway, err)
			return
		}
		var buf bytes.Buffer
		if err := check.Render(&buf, check.Run(ctx, checks), "json", false); err != nil {
			apiError(w, http.StatusInternalServerError, err)
			return
		}
		writeRaw(w, buf.Bytes())
	})
	mux.HandleFunc("GET /api/tap", s.tap)
	return localOnly(securityHeaders(mux))
}

// query is what the API takes from a request's query string.
type query struct {
	resource string
	window   time.Duration
	values   map[string][]string
}

func (q query) get(k string) string {
	if v := q.values[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func parseQuery(r *http.Request) (query, error) {
	q := query{resource: r.URL.Query().Get("resource"), window: 10 * time.Second, values: r.URL.Query()}
	if w := r.URL.Query().Get("window"); w != "" {
		d, err := time.ParseDuration(w)
		if err != nil || d < time.Second || d > time.Minute {
			return q, fmt.Errorf("window %q: want a duration from 1s to 60s", w)
		}
		q.window = d
	}
	return q, nil
}

// meshJSON answers with what render writes about the mesh as it is now.
func (s *Server) meshJSON(render func(context.Context, *inventory.Mesh, query, *bytes.Buffer) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, err := parseQuery(r)
		if err != nil {
			apiError(w, http.StatusBadRequest, err)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
		defer cancel()
		m, err := s.Source.Mesh(ctx)
		if err != nil {
			apiError(w, http.StatusBadGateway, err)
			return
		}
		var buf bytes.Buffer
		if err := render(ctx, m, q, &buf); err != nil {
			apiError(w, http.StatusBadRequest, err)
			return
		}
		writeRaw(w, buf.Bytes())
	}
}

// tap streams a workload's requests as server-sent events, each event's
// data a line of `mesh tap -o json`; proxies that fail are reported as
// "warning" events while the others go on.
func (s *Server) tap(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r)
	if err != nil {
		apiError(w, http.StatusBadRequest, err)
		return
	}
	if q.resource == "" {
		apiError(w, http.StatusBadRequest, errors.New("tap needs a workload (resource=deploy/web)"))
		return
	}
	m, err := s.Source.Mesh(r.Context())
	if err != nil {
		apiError(w, http.StatusBadGateway, err)
		return
	}
	ws, f, err := tap.Targets(m, q.resource, q.get("to"), tap.Filter{Method: q.get("method"), PathPrefix: q.get("path"), Authority: q.get("authority")})
	if err != nil {
		apiError(w, http.StatusBadRequest, err)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		apiError(w, http.StatusInternalServerError, errors.New("streaming is not supported here"))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	send := func(event string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return err
		}
		flusher.Flush()
		return nil
	}
	err = tap.Stream(r.Context(), ws, f, maxTapEvents, func(e tap.Event) error { return send("tap", e) },
		func(err error) { send("warning", map[string]string{"error": err.Error()}) })
	if err != nil && r.Context().Err() == nil {
		send("warning", map[string]string{"error": err.Error()})
	}
	send("end", map[string]string{})
}

func writeRaw(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

func writeJSON(w http.ResponseWriter, v any) {
	b, _ := json.Marshal(v)
	writeRaw(w, b)
}

func apiError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	b, _ := json.Marshal(map[string]string{"error": err.Error()})
	w.Write(b)
}

// securityHeaders keep the page to its own scripts and out of frames.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// localOnly answers requests whose Host is a loopback address or
// localhost, and refuses the rest: a page elsewhere that rebinds its own
// name to 127.0.0.1 still sends its own name as the Host.
func localOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !LoopbackHost(r.Host) {
			http.Error(w, fmt.Sprintf("forbidden: the dashboard answers only requests to localhost or a loopback address, not to %q", r.Host), http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// LoopbackHost reports whether a Host header names this machine's
// loopback: localhost, or a loopback IP, with or without a port.
func LoopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	a, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && a.Unmap().IsLoopback()
}

// Listen opens the dashboard's listener: addr, or a free port on
// loopback for "".
func Listen(addr string) (net.Listener, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--addr %q: %w", addr, err)
	}
	if _, err := strconv.Atoi(port); err != nil {
		return nil, fmt.Errorf("--addr %q: port %q is not a number", addr, port)
	}
	if a, err := netip.ParseAddr(host); host != "localhost" && (err != nil || !a.IsLoopback()) {
		return nil, fmt.Errorf("--addr %q: the dashboard listens on loopback only (127.0.0.1, ::1 or localhost): it shows live requests, and has no login", addr)
	}
	return net.Listen("tcp", addr)
}
