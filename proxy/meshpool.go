//lint:file-ignore SA1019 x/net's HTTP/2 client is deprecated in favour of net/http's, which has no per-address dial coalescing: measured here, 100 concurrent requests opened 100 connections with it and 1 with this.

package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/http2"
)

// meshPool multiplexes requests to meshed endpoints over one HTTP/2
// connection per endpoint. It dials once per endpoint however many requests
// wait for the first connection.
type meshPool struct {
	t *http2.Transport
}

func newMeshPool(dial func(ctx context.Context, addr string, protos []string) (*tls.Conn, error), idleTimeout time.Duration) *meshPool {
	return &meshPool{t: &http2.Transport{
		DialTLSContext: func(ctx context.Context, _, addr string, _ *tls.Config) (net.Conn, error) {
			return dial(ctx, addr, []string{"h2"})
		},
		DisableCompression: true,
		IdleConnTimeout:    idleTimeout,
		ReadIdleTimeout:    30 * time.Second, // ping a quiet connection to find it dead
	}}
}

// RoundTrip sends one request.
func (m *meshPool) RoundTrip(req *http.Request) (*http.Response, error) { return m.t.RoundTrip(req) }

// CloseIdleConnections closes connections that carry no request.
func (m *meshPool) CloseIdleConnections() { m.t.CloseIdleConnections() }
