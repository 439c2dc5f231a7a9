// Package origdst recovers the address a client meant to reach when the
// kernel redirected its connection to the proxy (nftables redirect or
// DNAT): the SO_ORIGINAL_DST socket option. Without interception there is
// no original destination and Lookup says so.
package origdst

import (
	"errors"
	"net"
	"net/netip"
)

// ErrNotRedirected means the connection reached the proxy directly.
var ErrNotRedirected = errors.New("connection was not redirected")

// Lookup returns the original destination of an accepted connection, or
// ErrNotRedirected when it is the address the proxy listens on.
func Lookup(c net.Conn) (netip.AddrPort, error) {
	// Wrappers (a bounded listener's, for one) keep the TCP connection
	// beneath them.
	for {
		u, ok := c.(interface{ Unwrap() net.Conn })
		if !ok {
			break
		}
		c = u.Unwrap()
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, ErrNotRedirected
	}
	dst, err := lookup(tc)
	if err != nil {
		return netip.AddrPort{}, err
	}
	local := tc.LocalAddr().(*net.TCPAddr).AddrPort()
	if dst == local || (dst.Port() == local.Port() && dst.Addr().Unmap() == local.Addr().Unmap()) {
		return netip.AddrPort{}, ErrNotRedirected
	}
	return dst, nil
}
