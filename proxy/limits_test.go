package proxy

import (
	"net"
	"strings"
	"testing"

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
