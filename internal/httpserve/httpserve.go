// Package httpserve runs an HTTP server on a listener until its context
// ends, then lets requests in flight finish within a grace period: the one
// way the control plane's, the identity service's and the demo's servers
// start and stop. (The proxy drains its own way: it must stop accepting on
// every listener first and report not-ready while it drains.) It also
// keeps admin endpoints that tell too much (profiles, dumps, tap) to
// clients on the same host.
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// LoopbackOnly refuses clients that are not on this host: only the TCP
// peer counts, never a header. kubectl port-forward arrives from
// loopback, the pod network does not.
func LoopbackOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isLoopback(r.RemoteAddr) {
			http.Error(w, "forbidden: only loopback clients may use this endpoint (use kubectl port-forward)", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// Grace is how long Run lets requests in flight finish once ctx ends.
const Grace = 10 * time.Second

// Run serves srv on ln, with TLS when srv.TLSConfig is set (its
// certificates or GetCertificate), until ctx ends or serving fails. On ctx's
// end it shuts srv down, waiting up to Grace, and returns nil.
func Run(ctx context.Context, name string, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("%s: %w", name, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), Grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
