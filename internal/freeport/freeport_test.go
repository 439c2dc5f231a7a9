package freeport

import (
	"net"
	"testing"
)

func TestAPortTheKernelRepeatsIsNotReturnedTwice(t *testing.T) {
	// The kernel answers with the same port twice, then another.
	answers := []string{"127.0.0.1:40001", "127.0.0.1:40001", "127.0.0.1:40002"}
	next := func() (string, error) {
		a := answers[0]
		answers = answers[1:]
		return a, nil
	}
	first, _ := pick(next)
	second, err := pick(next)
	if err != nil || first == second {
		t.Fatalf("got %s then %s (%v); want two different ports", first, second, err)
	}
}

func TestLoopbackPortsCanBeListenedOn(t *testing.T) {
	a, err := Loopback()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", a)
	if err != nil {
		t.Fatalf("listen on %s: %v", a, err)
	}
	ln.Close()
}
