package demo

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

func TestTrafficKeepsAtMost64RequestsInFlight(t *testing.T) {
	// A "proxy" that never answers: without a bound, every tick would
	// leave one more request waiting.
	var inFlight, most atomic.Int64
	release := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	defer close(release)

	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	traffic(ctx, ln.Addr().String(), 1000) // 500 ticks
	if m := most.Load(); m > 64 || m < 32 {
		t.Errorf("at most %d requests were in flight at once; want the bound of 64 reached and kept", m)
	}
}
