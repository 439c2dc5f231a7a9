package httpio

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func testH1Client(maxConns int) *Client {
	tr := &http.Transport{}
	d := &net.Dialer{Timeout: time.Second}
	return NewClient(func(ctx context.Context, addr string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	}, time.Minute, maxConns, tr)
}

// countingServer serves h on loopback and counts the connections it took.
func countingServer(t *testing.T, h http.Handler) (addr string, conns *atomic.Int32, open *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns, open = &atomic.Int32{}, &atomic.Int32{}
	srv := &http.Server{Handler: h, ConnState: func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			conns.Add(1)
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), conns, open
}

// rawServer hands each connection on loopback to serve, which speaks
// HTTP/1.1 by hand to misbehave as real servers do; the connection closes
// when serve returns.
func rawServer(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

func get(t *testing.T, c http.RoundTripper, method, url string, body io.Reader) (*http.Response, string, error) {
	t.Helper()
	req, _ := http.NewRequest(method, url, body)
	resp, err := c.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

func TestH1ClientReusesConnections(t *testing.T) {
	addr, conns, _ := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Method+" "+r.URL.Path)
	}))
	c := testH1Client(0)
	defer c.CloseIdleConnections()
	for i := range 5 {
		method := "GET"
		if i%2 == 1 {
			method = "HEAD"
		}
		resp, body, err := get(t, c, method, "http://"+addr+"/x", nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]string{"GET": "GET /x", "HEAD": ""}[method]; resp.StatusCode != 200 || body != want {
			t.Fatalf("%s: %s %q, want %q", method, resp.Status, body, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for 5 sequential requests, want 1", n)
	}
}

func TestH1ClientSurvivesServerClosingIdleConnections(t *testing.T) {
	// The server closes every connection after one response without
	// saying so (no Connection: close), as a server whose keep-alive
	// timeout ran out does.
	var served atomic.Int32
	addr := rawServer(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		served.Add(1)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	c := testH1Client(0)
	defer c.CloseIdleConnections()
	url := "http://" + addr + "/"
	// Reused at once: the request fails on the closed connection and is
	// sent again on a new one. Reused after a pause: the peek finds the
	// connection closed before using it.
	for i, pause := range []time.Duration{0, 0, staleAfter + 100*time.Millisecond} {
		time.Sleep(pause)
		if _, body, err := get(t, c, "GET", url, nil); err != nil || body != "ok" {
			t.Fatalf("request %d after %s: %q, %v", i, pause, body, err)
		}
	}
	if n := served.Load(); n != 3 {
		t.Fatalf("server answered %d requests, want 3", n)
	}
	// A POST with a body cannot be sent again, so it never goes out on an
	// idle connection unchecked: the peek finds this one closed (wait for
	// the server's close to arrive) and the POST takes a new connection.
	if _, _, err := get(t, c, "GET", url, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if _, body, err := get(t, c, "POST", url, strings.NewReader("once")); err != nil || body != "ok" {
		t.Fatalf("POST after the server closed the connection: %q, %v", body, err)
	}
	if n := served.Load(); n != 5 {
		t.Fatalf("server answered %d requests, want 5", n)
	}
}

func TestH1ClientRefusesHugeResponseHeads(t *testing.T) {
	addr, _, _ := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		big := strings.Repeat("x", 64<<10)
		for i := range 20 {
			w.Header().Add("X-Big", big+string(rune('a'+i)))
		}
	}))
	c := testH1Client(0)
	_, _, err := get(t, c, "GET", "http://"+addr+"/", nil)
	if err == nil || !strings.Contains(err.Error(), "response head over") {
		t.Fatalf("err = %v, want a response head over the limit", err)
	}
}

func TestH1ClientTakesAnEarlyAnswerToAnUpload(t *testing.T) {
	addr, _, _ := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}))
	c := testH1Client(0)
	body := io.LimitReader(zeros{}, 64<<20)
	resp, text, err := get(t, c, "POST", "http://"+addr+"/", body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(text, "too large") {
		t.Fatalf("%s %q", resp.Status, text)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestH1ClientBoundsConnectionsPerEndpoint(t *testing.T) {
	var mu sync.Mutex
	inFlight, most := 0, 0
	addr, conns, _ := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
	}))
	c := testH1Client(2)
	defer c.CloseIdleConnections()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, _, err := get(t, c, "GET", "http://"+addr+"/", nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if most > 2 || conns.Load() > 2 {
		t.Fatalf("%d requests at once on %d connections, want at most 2", most, conns.Load())
	}
}

func TestH1ClientStopsWhenTheRequestIsCancelled(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	addr, _, open := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	c := testH1Client(0)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/", nil)
	errc := make(chan error, 1)
	go func() { _, err := c.RoundTrip(req); errc <- err }()
	select {
	case err := <-errc:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want the context's", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request outlived its context")
	}
	// The connection is closed, not pooled with a response still due.
	for deadline := time.Now().Add(5 * time.Second); open.Load() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open", open.Load())
		}
	}
}

func TestH1ClientDropsAConnectionWithBytesAfterTheResponse(t *testing.T) {
	// A broken server sends more than its Content-Length says; the extra
	// bytes must not be read as the next response.
	addr := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 500 Bogus\r\nContent-Length: 0\r\n\r\n")
		}
	})
	c := testH1Client(0)
	defer c.CloseIdleConnections()
	for i := range 3 {
		resp, body, err := get(t, c, "GET", "http://"+addr+"/", nil)
		if err != nil || resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %v %v %q", i, resp, err, body)
		}
	}
}
