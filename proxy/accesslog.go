package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// This file is the access log: with --access-log json, one line per
// request the proxy handled (for a retried request, one per attempt),
// written to its output beside its own log. Off, the request path pays
// one nil check.

// AccessLogFormats are the formats --access-log takes ("" is off).
var AccessLogFormats = []string{"json"}

// accessRecord is one line of the access log.
type accessRecord struct {
	Time          time.Time `json:"time"` // when the request began
	Direction     string    `json:"direction"`
	Method        string    `json:"method"`
	Authority     string    `json:"authority"`
	Path          string    `json:"path"`
	Protocol      string    `json:"protocol"`
	Status        int       `json:"status"`
	GRPCStatus    string    `json:"grpcStatus,omitempty"`
	LatencyMS     float64   `json:"latencyMs"`  // to response headers
	DurationMS    float64   `json:"durationMs"` // to the end of the response
	ResponseBytes int64     `json:"responseBytes"`
	Client        string    `json:"client"`             // address
	Upstream      string    `json:"upstream,omitempty"` // address
	ClientID      string    `json:"clientID,omitempty"`
	ServerID      string    `json:"serverID,omitempty"`
	TLS           bool      `json:"tls"`
	Route         string    `json:"route,omitempty"`
	TraceID       string    `json:"traceID,omitempty"`
	UserAgent     string    `json:"userAgent,omitempty"`
	// Error is why the proxy answered the request itself.
	Error string `json:"error,omitempty"`
}

// accessLog writes records as JSON lines through a buffer that is
// flushed at least every flushEvery, and when the proxy stops.
type accessLog struct {
	mu  sync.Mutex
	w   *bufio.Writer
	enc *json.Encoder
}

const accessLogFlushEvery = 250 * time.Millisecond

func newAccessLog(w io.Writer) *accessLog {
	bw := bufio.NewWriterSize(w, 64<<10)
	return &accessLog{w: bw, enc: json.NewEncoder(bw)}
}

func (l *accessLog) write(rec *accessRecord) {
	l.mu.Lock()
	l.enc.Encode(rec)
	l.mu.Unlock()
}

func (l *accessLog) flush() {
	l.mu.Lock()
	l.w.Flush()
	l.mu.Unlock()
}

// run flushes the log until stop is closed, then once more.
func (l *accessLog) run(stop <-chan struct{}) {
	t := time.NewTicker(accessLogFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			l.flush()
			return
		case <-t.C:
			l.flush()
		}
	}
}

// accessInfo is what the handlers below learn of a request that its line
// needs: the route, and the last attempt's upstream and peer.
type accessInfo struct {
	mu       sync.Mutex
	route    string
	upstream string
	peer     peer
	attempts int
}

type accessInfoKey struct{}

// noteAttempt records where an attempt of a logged request went.
func (p *Proxy) noteAttempt(ctx context.Context, target string, pr peer) {
	if p.accessLog == nil && p.tracing == nil {
		return
	}
	if ai, _ := ctx.Value(accessInfoKey{}).(*accessInfo); ai != nil {
		ai.mu.Lock()
		ai.upstream, ai.peer = target, pr
		ai.attempts++
		n := ai.attempts
		ai.mu.Unlock()
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			span.AddEvent("attempt", trace.WithAttributes(attribute.Int("mesh.attempt", n), attribute.String("network.peer.address", target),
				attribute.String("mesh.server.identity", pr.serverID)))
		}
	}
}

// noteRoute records the route a logged request was sent by.
func (p *Proxy) noteRoute(ctx context.Context, route string) {
	if p.accessLog == nil && p.tracing == nil {
		return
	}
	if ai, _ := ctx.Value(accessInfoKey{}).(*accessInfo); ai != nil {
		ai.mu.Lock()
		ai.route = route
		ai.mu.Unlock()
	}
}

// logged wraps a direction's handler to write a line for each request
// once its response is done, and to trace it; without an access log or a
// trace collector, it is h itself.
func (p *Proxy) logged(d direction, h http.Handler) http.Handler {
	if p.accessLog == nil && p.tracing == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var span trace.Span
		if p.tracing != nil {
			// Without an access log, a request that is not traced, or whose
			// trace is not sampled, needs nothing of what follows.
			if r, span = p.tracing.start(r, d); p.accessLog == nil && (span == nil || !span.IsRecording()) {
				h.ServeHTTP(w, r)
				if span != nil {
					span.End()
				}
				return
			}
		}
		ai := &accessInfo{}
		if ci := infoOf(r.Context()); ci != nil {
			ai.peer = ci.peer
		}
		lw := &loggedWriter{ResponseWriter: w, began: time.Now()}
		h.ServeHTTP(lw, r.WithContext(context.WithValue(r.Context(), accessInfoKey{}, ai)))
		rec := &accessRecord{
			Time: lw.began, Direction: d.String(), Method: r.Method, Authority: r.Host, Path: r.URL.Path, Protocol: r.Proto,
			Status: lw.status, DurationMS: ms(time.Since(lw.began)), ResponseBytes: lw.bytes, Client: r.RemoteAddr,
			TraceID: traceID(r.Header), UserAgent: r.Header.Get("User-Agent"), Error: w.Header().Get(ErrorHeader),
		}
		if lw.status != 0 {
			rec.LatencyMS = ms(lw.headersAt.Sub(lw.began))
		}
		hdr := w.Header()
		rec.GRPCStatus = hdr.Get("Grpc-Status")
		if rec.GRPCStatus == "" {
			rec.GRPCStatus = hdr.Get(http.TrailerPrefix + "Grpc-Status")
		}
		ai.mu.Lock()
		rec.Route, rec.Upstream = ai.route, ai.upstream
		rec.ClientID, rec.ServerID, rec.TLS = ai.peer.clientID, ai.peer.serverID, ai.peer.tls
		attempts := ai.attempts
		ai.mu.Unlock()
		if p.accessLog != nil {
			p.accessLog.write(rec)
		}
		if span != nil {
			p.tracing.end(span, d, r, rec, attempts)
		}
	})
}

// loggedWriter sees the status and the size of a response.
type loggedWriter struct {
	http.ResponseWriter
	began, headersAt time.Time
	status           int
	bytes            int64
}

func (w *loggedWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status, w.headersAt = code, time.Now()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *loggedWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status, w.headersAt = http.StatusOK, time.Now()
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController flush and hijack underneath.
func (w *loggedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// traceID is the trace a request belongs to, from W3C Trace Context
// (traceparent) or B3 (single b3 header, or X-B3-TraceId), or "".
func traceID(h http.Header) string {
	if tp := h.Get("Traceparent"); len(tp) >= 55 && tp[2] == '-' && tp[35] == '-' {
		if id := tp[3:35]; hexID(id) {
			return id
		}
	}
	if b3 := h.Get("B3"); b3 != "" {
		id, _, _ := strings.Cut(b3, "-")
		if (len(id) == 32 || len(id) == 16) && hexID(id) {
			return id
		}
	}
	if id := h.Get("X-B3-Traceid"); (len(id) == 32 || len(id) == 16) && hexID(id) {
		return id
	}
	return ""
}

// hexID reports whether s is lower-case hex and not all zeros, as trace
// IDs must be.
func hexID(s string) bool {
	zero := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '0':
		case c >= '1' && c <= '9' || c >= 'a' && c <= 'f':
			zero = false
		default:
			return false
		}
	}
	return !zero
}
