// Package freeport picks unused TCP ports on 127.0.0.1 for programs that
// must name a port before something listens on it (the demo, tests,
// benchmarks). The kernel may hand the same ephemeral port out again as
// soon as the probing listener closes, so a port is never returned twice
// in one process.
package freeport

import (
	"fmt"
	"net"
	"sync"
)

var (
	mu    sync.Mutex
	given = map[string]bool{}
)

// Loopback returns an address "127.0.0.1:port" whose port was free a moment
// ago and has not been returned before by this process.
func Loopback() (string, error) { return pick(probe) }

// probe asks the kernel for a free port.
func probe() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func pick(probe func() (string, error)) (string, error) {
	mu.Lock()
	defer mu.Unlock()
	for range 100 {
		a, err := probe()
		if err != nil {
			return "", err
		}
		if !given[a] {
			given[a] = true
			return a, nil
		}
	}
	return "", fmt.Errorf("no unused port on 127.0.0.1 after 100 tries")
}
