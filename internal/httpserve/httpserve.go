// Package httpserve runs an HTTP server on a listener until its context
// ends, then lets requests in flight finish within a grace period: the one
// way the control plane's, the identity service's and the demo's servers
// start and stop. (The proxy drains its own way: it must stop accepting on
// every listener first and report not-ready while it drains.)
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

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
