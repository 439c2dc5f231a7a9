package httpserve

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestRunServesUntilCancelledAndLetsARequestInFlightFinish(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(started)
		time.Sleep(200 * time.Millisecond)
		w.Write([]byte("finished"))
	})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, "test", srv, ln) }()
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String())
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-started
	cancel()
	if s := <-got; s != "finished" {
		t.Errorf("the request in flight got %q; want it to finish", s)
	}
	if err := <-done; err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("still accepting after Run returned")
	}
}

func TestRunReportsAServerThatCannotServe(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ln.Close()
	if err := Run(context.Background(), "broken", &http.Server{}, ln); err == nil {
		t.Fatal("no error for a closed listener")
	}
}

func TestLoopbackOnlyRefusesPodNetworkClients(t *testing.T) {
	h := LoopbackOnly(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("secret")) }))
	for remote, want := range map[string]int{
		"127.0.0.1:5000":        200,
		"[::1]:5000":            200,
		"[::ffff:127.0.0.1]:80": 200,
		"10.1.2.3:5000":         403,
		"[fd00::1]:5000":        403,
		"garbage":               403,
	} {
		// Headers a client controls change nothing: only the TCP peer counts.
		for _, hdr := range [][2]string{{}, {"X-Forwarded-For", "127.0.0.1"}, {"X-Real-IP", "127.0.0.1"}, {"Forwarded", "for=127.0.0.1"}, {"Host", "127.0.0.1:4191"}} {
			r := httptest.NewRequest("GET", "/config_dump", nil)
			r.RemoteAddr = remote
			if hdr[0] == "Host" {
				r.Host = hdr[1]
			} else if hdr[0] != "" {
				r.Header.Set(hdr[0], hdr[1])
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != want {
				t.Errorf("client %s with %v: %d, want %d", remote, hdr, w.Code, want)
			}
		}
	}
}
