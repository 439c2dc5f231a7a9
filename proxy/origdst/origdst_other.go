//go:build !linux

package origdst

import (
	"net"
	"net/netip"
)

func lookup(*net.TCPConn) (netip.AddrPort, error) { return netip.AddrPort{}, ErrNotRedirected }
