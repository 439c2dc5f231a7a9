// Package otlptest is an OTLP/HTTP trace receiver on loopback for tests:
// it keeps the spans exporters send it, with each one's service.name.
package otlptest

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Receiver takes exports at URL/v1/traces until the test ends.
type Receiver struct {
	URL     string
	mu      sync.Mutex
	spans   []*tracepb.Span
	service map[*tracepb.Span]string
}

// Start serves a Receiver on loopback, closed when t ends.
func Start(t testing.TB) *Receiver {
	rc := &Receiver{service: map[*tracepb.Span]string{}}
	srv := httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(srv.Close)
	rc.URL = srv.URL
	return rc
}

func (rc *Receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req coltrace.ExportTraceServiceRequest
	if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
		http.Error(w, "not an OTLP trace export", http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	for _, rs := range req.ResourceSpans {
		name := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				name = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				rc.spans = append(rc.spans, s)
				rc.service[s] = name
			}
		}
	}
	rc.mu.Unlock()
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

// Spans are all the spans received so far.
func (rc *Receiver) Spans() []*tracepb.Span {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]*tracepb.Span(nil), rc.spans...)
}

// Trace is the spans received of one trace (hex ID).
func (rc *Receiver) Trace(id string) []*tracepb.Span {
	var out []*tracepb.Span
	for _, s := range rc.Spans() {
		if hex.EncodeToString(s.TraceId) == id {
			out = append(out, s)
		}
	}
	return out
}

// Service is the service.name of the resource a span came with.
func (rc *Receiver) Service(s *tracepb.Span) string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.service[s]
}

// Attr is a span attribute's value (string, int64 or bool), or nil.
func Attr(s *tracepb.Span, key string) any {
	for _, a := range s.Attributes {
		if a.Key != key {
			continue
		}
		switch v := a.Value.Value.(type) {
		case *commonpb.AnyValue_StringValue:
			return v.StringValue
		case *commonpb.AnyValue_IntValue:
			return v.IntValue
		case *commonpb.AnyValue_BoolValue:
			return v.BoolValue
		}
	}
	return nil
}
