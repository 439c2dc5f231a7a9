package httpio

import "net"

// CloseWrite shuts down the writing side of c, beneath any wrappers that
// do not, or closes it when nothing beneath can.
func CloseWrite(c net.Conn) {
	for {
		switch v := c.(type) {
		case interface{ CloseWrite() error }:
			v.CloseWrite()
			return
		case interface{ Unwrap() net.Conn }:
			c = v.Unwrap()
		default:
			c.Close()
			return
		}
	}
}
