package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestTraceIDFromEachPropagation(t *testing.T) {
	for header, want := range map[[2]string]string{
		{"Traceparent", "00-4bf92f3577b34da6a3ce929d0e0736aa-00f067aa0ba902b7-01"}: "4bf92f3577b34da6a3ce929d0e0736aa",
		{"Traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}: "", // all zeros: invalid
		{"Traceparent", "00-4BF92F3577B34DA6A3CE929D0E0736AA-00f067aa0ba902b7-01"}: "", // upper case: invalid
		{"B3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"}:              "80f198ee56343ba864fe8b2a57d3eff7",
		{"B3", "0"}:                          "", // sampling decision only
		{"X-B3-TraceId", "463ac35c9f6413ad"}: "463ac35c9f6413ad",
		{"X-B3-TraceId", "xyz"}:              "",
	} {
		h := http.Header{}
		h.Set(header[0], header[1])
		if got := traceID(h); got != want {
			t.Errorf("%s: %s gives %q; want %q", header[0], header[1], got, want)
		}
	}
}

// The log's lines are written when the buffer is flushed, each a JSON
// object.
func TestAccessLogLinesAreJSON(t *testing.T) {
	var out bytes.Buffer
	l := newAccessLog(&out)
	l.write(&accessRecord{Time: time.Unix(1, 0).UTC(), Direction: "outbound", Method: "GET", Path: "/a\n\"b", Status: 200})
	if out.Len() != 0 {
		t.Fatal("written before the flush")
	}
	l.flush()
	var got accessRecord
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || got.Path != "/a\n\"b" || bytes.Count(out.Bytes(), []byte("\n")) != 1 {
		t.Errorf("line %q: %v", out.String(), err)
	}
}

// BenchmarkAccessLogLine is what a request pays with the access log on:
// the wrapper around the handler and one line written.
func BenchmarkAccessLogLine(b *testing.B) {
	p := &Proxy{accessLog: newAccessLog(io.Discard)}
	h := p.logged(outbound, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.noteAttempt(r.Context(), "10.0.0.1:8080", peer{tls: true, serverID: "spiffe://cluster.local/ns/shop/sa/api"})
		w.WriteHeader(200)
		w.Write([]byte("hello"))
	}))
	req := httptest.NewRequest("GET", "http://api.shop:80/items?x=1", nil)
	req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0736aa-00f067aa0ba902b7-01")
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
}
