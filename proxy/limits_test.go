package proxy

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshproj/mesh/discovery"
)

func TestNewBindsNothingWhenAListenerCannotBind(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	free, _ := net.Listen("tcp", "127.0.0.1:0")
	outbound := free.Addr().String()
	free.Close()
	_, err = New(Config{Discovery: staticDiscovery{discovery.State{Source: "test"}},
		OutboundAddr: outbound, InboundAddr: taken.Addr().String(), AdminAddr: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "inbound listener") {
		t.Fatalf("New with the inbound address taken: %v; want an error naming the inbound listener", err)
	}
	ln, err := net.Listen("tcp", outbound)
	if err != nil {
		t.Fatalf("the outbound address stayed bound after New failed: %v", err)
	}
	ln.Close()
}

func TestInboundForwardToTheProxysOwnPortIsRefused(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	outbound := ln.Addr().String()
	ln.Close()
	_, err := New(Config{Discovery: staticDiscovery{discovery.State{Source: "test"}},
		OutboundAddr: outbound, InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", InboundForward: outbound})
	if err == nil || !strings.Contains(err.Error(), "one of the proxy's own listeners") {
		t.Fatalf("New with --inbound-forward at its own outbound port: %v; want it refused", err)
	}
}

// TestAtTheBoundASlowClientGivesWayAndARequestInFlightKeepsItsPlace fills
// a listener of two places with a request in flight and a client that has
// sent half a head; a third client's request must take the slow client's
// place, and the request in flight must still be answered.
func TestAtTheBoundASlowClientGivesWayAndARequestInFlightKeepsItsPlace(t *testing.T) {
	release, arrived := make(chan struct{}), make(chan struct{})
	backend := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(arrived)
			<-release
		}
		w.Write([]byte("answered " + r.URL.Path))
	})
	defer close(release) // before the proxy stops, at the test's end
	p := runWeb(t, backend, func(c *Config) { c.MaxConnections = 2 })
	addr := p.OutboundAddr().String()
	dial := func(send string) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.Write([]byte(send))
		return c
	}
	inFlight := dial("GET /slow HTTP/1.1\r\nHost: web\r\n\r\n")
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the first request never reached the backend")
	}
	slow := dial("GET / HTTP/1.1\r\nHost: we")
	for deadline := time.Now().Add(5 * time.Second); p.openConns("outbound") < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the slow client was never accepted")
		}
	}
	fast := dial("GET /fast HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
	fast.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, _ := io.ReadAll(fast); !strings.Contains(string(b), "answered /fast") {
		t.Fatalf("the new client's request at the bound got %q; want it served", b)
	}
	slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := slow.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("the slow client kept its place (read %d, %v)", n, err)
	}
	release <- struct{}{}
	inFlight.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, _ := io.ReadAtLeast(inFlight, buf, 1)
	if !strings.Contains(string(buf[:n]), "answered /slow") {
		t.Fatalf("the request in flight got %q; want it answered", buf[:n])
	}
}
