package freeport

import (
	"net"
	"testing"
)

func TestPortsAreNeverRepeatedAndCanBeListenedOn(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		a, err := Loopback()
		if err != nil {
			t.Fatal(err)
		}
		if seen[a] {
			t.Fatalf("%s returned twice", a)
		}
		seen[a] = true
	}
	a, _ := Loopback()
	ln, err := net.Listen("tcp", a)
	if err != nil {
		t.Fatalf("listen on %s: %v", a, err)
	}
	ln.Close()
}
