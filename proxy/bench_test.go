package proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/meshproj/mesh/discovery"
)

// staticDiscovery delivers one fixed state, for in-process proxies.
type staticDiscovery struct{ state discovery.State }

func (s staticDiscovery) Run(ctx context.Context, update func(discovery.State)) error {
	update(s.state)
	<-ctx.Done()
	return nil
}

// startInProcess runs a proxy in this process with one HTTP service "web"
// in front of addr, and returns its outbound address.
func startInProcess(tb testing.TB, addr string) string {
	tb.Helper()
	return runWeb(tb, addr, nil).OutboundAddr().String()
}

// runWeb runs a proxy in this process, on loopback, with one HTTP service
// "web" in front of addr, until the test ends; edit, when given, changes
// its configuration first. It returns once the proxy is ready.
func runWeb(tb testing.TB, addr string, edit func(*Config)) *Proxy {
	tb.Helper()
	cfg := Config{
		OutboundAddr: "127.0.0.1:0", InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Discovery: staticDiscovery{discovery.State{Source: "test", Services: []discovery.Service{{
			Name: "web", Port: 80, LoadBalancer: discovery.PeakEWMA, Endpoints: []discovery.Endpoint{{Address: netip.MustParseAddrPort(addr)}},
		}}}},
		Log: slog.New(slog.DiscardHandler),
	}
	if edit != nil {
		edit(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Error(err)
		}
	})
	for deadline := time.Now().Add(5 * time.Second); !p.ready.Load(); {
		if time.Now().After(deadline) {
			tb.Fatal("proxy not ready")
		}
		time.Sleep(time.Millisecond)
	}
	return p
}

// startBackend serves h on loopback with net/http, as an app would.
func startBackend(tb testing.TB, h http.HandlerFunc) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// startHelloBackend answers every request with 100 bytes.
func startHelloBackend(tb testing.TB) string {
	body := make([]byte, 100)
	return startBackend(tb, func(w http.ResponseWriter, _ *http.Request) { w.Write(body) })
}

// toWeb is a request for the in-process proxy's service "web".
func toWeb(out, method, path string, body io.Reader) *http.Request {
	req, _ := http.NewRequest(method, "http://"+out+path, body)
	req.Host = "web"
	return req
}

func benchmarkGET(b *testing.B, addr, host string) {
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	req.Host = host
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// BenchmarkRequest compares one HTTP/1.1 request sent directly with the
// same request through the proxy. The difference is the proxy's cost;
// allocations include the client's and the backend's, which are the same
// in both.
func BenchmarkRequest(b *testing.B) {
	backend := startHelloBackend(b)
	b.Run("direct", func(b *testing.B) { benchmarkGET(b, backend, "web") })
	b.Run("proxy", func(b *testing.B) { benchmarkGET(b, startInProcess(b, backend), "web") })
}

func TestInProcessProxyForwards(t *testing.T) {
	out := startInProcess(t, startHelloBackend(t))
	resp, err := http.DefaultClient.Do(toWeb(out, "GET", "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || len(b) != 100 {
		t.Fatalf("%s, %d bytes", resp.Status, len(b))
	}
}
