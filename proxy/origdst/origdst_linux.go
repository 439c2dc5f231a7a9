package origdst

import (
	"encoding/binary"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/ip6_tables.h.
const ip6tSOOriginalDst = 80

func lookup(c *net.TCPConn) (netip.AddrPort, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var dst netip.AddrPort
	var serr error
	err = raw.Control(func(fd uintptr) {
		local := c.LocalAddr().(*net.TCPAddr).AddrPort()
		if local.Addr().Unmap().Is4() {
			// sockaddr_in, read through the 16-byte ip_mreqn-sized helper.
			var m *unix.IPv6Mreq
			m, serr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
			if serr != nil {
				return
			}
			port := binary.BigEndian.Uint16(m.Multiaddr[2:4])
			dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(m.Multiaddr[4:8])), port)
			return
		}
		var info *unix.IPv6MTUInfo
		info, serr = unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, ip6tSOOriginalDst)
		if serr != nil {
			return
		}
		// The port field holds network-order bytes.
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&info.Addr.Port))[:])
		dst = netip.AddrPortFrom(netip.AddrFrom16(info.Addr.Addr), port)
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	if serr != nil {
		// ENOENT: no conntrack entry, the connection was not NATed.
		return netip.AddrPort{}, ErrNotRedirected
	}
	return dst, nil
}
