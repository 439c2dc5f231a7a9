package origdst

import (
	"errors"
	"net"
	"testing"
)

func TestDirectConnectionIsNotRedirected(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			defer c.Close()
			c.Read(make([]byte, 1))
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := Lookup(c); !errors.Is(err, ErrNotRedirected) {
		t.Fatalf("Lookup on a direct connection = %v, want ErrNotRedirected", err)
	}
}
