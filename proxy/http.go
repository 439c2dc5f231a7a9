package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/proxy/adminapi"
	"github.com/meshproj/mesh/proxy/balance"
	"github.com/meshproj/mesh/proxy/httpio"
	"github.com/meshproj/mesh/proxy/metrics"
	"github.com/meshproj/mesh/proxy/rawsock"
)

// ErrorHeader is the response header in which the proxy says why it
// answered a request itself instead of forwarding it.
const ErrorHeader = "mesh-error"

// transports are the connection pools to endpoints: one for HTTP/1.1 and
// one for HTTP/2 without TLS (h2c, for gRPC). Both pool per address, so
// each endpoint gets its own pool with keep-alive reuse.
type transports struct {
	h1 *httpio.Client
	h2 *http.Transport
}

func newTransports(connectTimeout, idleTimeout time.Duration, maxConns int) transports {
	dialer := &net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return rawsock.Wrap(c), nil
	}
	base := func(protocols *http.Protocols) *http.Transport {
		return &http.Transport{
			Proxy:                 nil, // the proxy is the proxy; ignore HTTP_PROXY
			DialContext:           dial,
			MaxIdleConnsPerHost:   httpio.MaxIdlePerEndpoint,
			MaxConnsPerHost:       maxConns,
			IdleConnTimeout:       idleTimeout,
			ExpectContinueTimeout: time.Second,
			// Never add Accept-Encoding or decompress: bodies pass untouched.
			DisableCompression: true,
			Protocols:          protocols,
		}
	}
	var p1, p2 http.Protocols
	p1.SetHTTP1(true)
	p2.SetUnencryptedHTTP2(true)
	h2 := base(&p2)
	h2.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		// HTTP/2 writes a request's HEADERS and DATA apart; corked they
		// leave together (see httpio.CorkedConn).
		return httpio.CorkNow(c), nil
	}
	h1 := httpio.NewClient(func(ctx context.Context, addr string) (net.Conn, error) {
		return dial(ctx, "tcp", addr)
	}, idleTimeout, maxConns, base(&p1))
	return transports{h1: h1, h2: h2}
}

func (t transports) closeIdle() {
	t.h1.CloseIdleConnections()
	t.h2.CloseIdleConnections()
}

// pick chooses the transport that keeps the client's protocol: HTTP/2
// requests (gRPC among them) go out as HTTP/2, the rest as HTTP/1.1.
func (t transports) pick(r *http.Request) http.RoundTripper {
	if r.ProtoMajor == 2 {
		return t.h2
	}
	return t.h1
}

// serveOutbound routes a request from the local app by its authority: the
// Host header, :authority, or the host of an absolute-form URI (so that
// HTTP_PROXY pointing at the outbound listener works).
func (p *Proxy) serveOutbound(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		p.fail(w, r, outbound, http.StatusMethodNotAllowed, "connect_unsupported",
			"CONNECT tunnels are not supported; reach TCP services through an outbound TCP port (--outbound-tcp)")
		return
	}
	if ci := infoOf(r.Context()); ci != nil && ci.dst.IsValid() {
		// Intercepted: a service's virtual IP is balanced across the
		// service's endpoints; any other address is where the client goes.
		if svc := p.vip(r.Context(), ci.dst); svc != nil {
			p.serveService(w, r, svc)
			return
		}
		p.originalDst.ServeHTTP(w, r)
		return
	}
	authority := r.Host
	if authority == "" {
		authority = r.URL.Host
	}
	key, err := discovery.ParseAuthority(authority, defaultPort(r))
	if err != nil {
		p.fail(w, r, outbound, http.StatusBadRequest, "bad_authority", err.Error())
		return
	}
	svc, err := p.lookup(r.Context(), key)
	if err != nil {
		p.fail(w, r, outbound, http.StatusServiceUnavailable, "unknown_authority", err.Error())
		return
	}
	p.serveService(w, r, svc)
}

func defaultPort(r *http.Request) uint16 {
	if r.URL.Scheme == "https" {
		return 443
	}
	return 80
}

// serveInbound forwards a request to the local app.
func (p *Proxy) serveInbound(w http.ResponseWriter, r *http.Request) {
	if ci := infoOf(r.Context()); ci != nil && !p.admitRequest(w, r, ci) {
		return
	}
	p.inboundForward.ServeHTTP(w, r)
}

// forwardedHeaders are headers httputil.ReverseProxy strips in Rewrite mode.
// A sidecar is transparent: what the client sent, the server gets.
var forwardedHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// newForwarder builds the HTTP forwarder for one direction and transport.
// httputil.ReverseProxy brings hop-by-hop header handling (RFC 9110 7.6.1),
// trailers, streaming and protocol upgrades.
func (p *Proxy) newForwarder(d direction, rt http.RoundTripper) http.Handler {
	return forwarder{&httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			// ReverseProxy re-encodes the query for Rewrite, dropping
			// parameters with a semicolon and adding "=" to bare keys;
			// a sidecar passes it on as the client wrote it.
			pr.Out.URL.RawQuery = pr.In.URL.RawQuery
			// The server fills in request trailers only when the body has
			// been read, long after the clone: share the map so that the
			// transport sends them.
			pr.Out.Trailer = pr.In.Trailer
			for _, h := range forwardedHeaders {
				if v, ok := pr.In.Header[h]; ok {
					pr.Out.Header[h] = v
				}
			}
		},
		Transport: rt,
		// No FlushInterval: ReverseProxy already flushes at once when the
		// length is unknown (gRPC, server-sent events, chunked streams).
		// Forcing it for every response would flush the headers of a gRPC
		// trailers-only response early, turning its status into plain
		// headers that clients ignore.
		BufferPool: bufferPool{},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.upstreamFailed(w, r, d, err)
		},
		ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}}
}

// forwarder is a ReverseProxy that keeps responses as the app sent them.
type forwarder struct{ rp *httputil.ReverseProxy }

func (f forwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// net/http's servers guess a Content-Type from the body when a response
	// has none, unless the field is present and empty: a response the app
	// sent without one must not gain one on the way.
	if h := w.Header(); h["Content-Type"] == nil {
		h["Content-Type"] = nil
	}
	f.rp.ServeHTTP(w, r)
}

// inboundTransport sends requests to the local app.
type inboundTransport struct{ p *Proxy }

func (t inboundTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ci := infoOf(req.Context())
	if ci == nil || !ci.dst.IsValid() {
		return nil, &proxyError{status: http.StatusServiceUnavailable, reason: "no_destination", msg: "inbound request has no destination"}
	}
	target := ci.dst.String()
	req.URL.Host = target
	req.URL.Scheme = "http"
	var tr http.RoundTripper = t.p.transports.h1
	if req.Header.Get(origProtoHeader) != "" {
		// An HTTP/1 request that crossed the mesh as HTTP/2: restore it.
		req.Header.Del(origProtoHeader)
	} else if req.ProtoMajor == 2 {
		tr = t.p.transports.h2
	}
	return t.p.roundTrip(req, tr, inbound, req.Host, target, nil, nil, ci.peer)
}

// originalDstTransport sends intercepted requests to the address the client
// was connecting to, with mTLS when discovery knows that address as a
// meshed endpoint.
type originalDstTransport struct{ p *Proxy }

func (t originalDstTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ci := infoOf(req.Context())
	if ci == nil || !ci.dst.IsValid() {
		return nil, &proxyError{status: http.StatusServiceUnavailable, reason: "no_destination", msg: "request has no original destination"}
	}
	target := ci.dst.String()
	req.URL.Host = target
	var tr http.RoundTripper = t.p.transports.pick(req)
	var pr peer
	if id, ok := t.p.meshIDs.Load(target); ok && t.p.cfg.Identity != nil {
		tr, pr = t.p.meshTransport(req), peer{tls: true, serverID: id.(string)}
	}
	return t.p.roundTrip(req, tr, outbound, req.Host, target, nil, nil, pr)
}

// requestHash computes a consistent-hashing key. A request that lacks the
// key is spread at random rather than piled onto one endpoint.
func requestHash(k discovery.HashKey, r *http.Request) uint64 {
	switch {
	case k.Header != "":
		if v := r.Header[textproto.CanonicalMIMEHeaderKey(k.Header)]; len(v) > 0 {
			return balance.HashString(v[0])
		}
	case k.Cookie != "":
		if v, ok := cookieValue(r.Header["Cookie"], k.Cookie); ok {
			return balance.HashString(v)
		}
	case k.SourceIP:
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			return balance.HashAddr(ap.Addr())
		}
	}
	return rand.Uint64()
}

// cookieValue finds one cookie without allocating the whole jar.
func cookieValue(headers []string, name string) (string, bool) {
	for _, h := range headers {
		for part := range strings.SplitSeq(h, ";") {
			part = strings.TrimSpace(part)
			if k, v, ok := strings.Cut(part, "="); ok && k == name {
				return strings.Trim(v, `"`), true
			}
		}
	}
	return "", false
}

// roundTrip sends a request to one address and counts it. ep, when not nil,
// is told of the request's progress for load balancing, and its outcome is
// reported to bal for failure accrual.
func (p *Proxy) roundTrip(req *http.Request, tr http.RoundTripper, d direction, authority, target string, ep *balance.Endpoint, bal *balance.Balancer, pr peer) (*http.Response, error) {
	labels := pr.labels(d, authority, target)
	labels.Route = routeName(req.Context())
	p.noteAttempt(req.Context(), target, pr)
	p.metrics.Request(&labels)
	began := time.Now()
	tapID := p.tapStart(req, d, target, pr)
	var start int64
	if ep != nil {
		start = ep.Begin()
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		pe := upstreamError(err, target)
		if req.Context().Err() == nil {
			p.window.record(d, authority, pr.peerID(d), labels.Route, time.Since(began), false)
		}
		if tapID != 0 {
			p.tapEnd(tapID, req, d, target, pr, pe.status, "", time.Since(began), time.Since(began), 0, pe.msg)
		}
		if ep != nil {
			ep.Done()
			if bal != nil && pe.reason != "client_canceled" {
				bal.Report(ep, false)
			}
		}
		if req.Context().Err() == nil {
			p.metrics.Response(&labels, httpio.StatusText(pe.status), "failure")
		}
		return nil, pe
	}
	if ep != nil {
		ep.Observe(start)
	}
	if resp.Header.Get("Grpc-Status") != "" {
		// A trailers-only gRPC response: nothing follows the headers, and it
		// must go out as one HEADERS frame that ends the stream.
		resp.ContentLength = 0
	}
	status := httpio.StatusText(resp.StatusCode)
	p.metrics.Latency(&labels, status, float64(time.Since(began))/float64(time.Millisecond))
	latency := time.Since(began)
	tb := &trackedBody{ReadCloser: resp.Body, resp: resp, p: p, labels: labels, ep: ep, bal: bal,
		d: d, peer: pr, began: began, latency: latency, tapID: tapID, req: req}
	if tapID != 0 {
		p.tap.publish(adminapi.TapEvent{Type: "response", ID: tapID, Time: time.Now(), Direction: d.String(), Source: req.RemoteAddr,
			Destination: target, TLS: pr.tls, ClientID: pr.clientID, ServerID: pr.serverID, Method: req.Method,
			Authority: req.Host, Path: req.URL.Path, Status: resp.StatusCode, LatencyMS: ms(latency)})
	}
	if rw, ok := resp.Body.(io.ReadWriteCloser); ok && resp.StatusCode == http.StatusSwitchingProtocols {
		// An upgraded connection: ReverseProxy needs to write to it too.
		resp.Body = &trackedRWBody{trackedBody: tb, w: rw}
	} else {
		resp.Body = tb
	}
	return resp, nil
}

// trackedBody notices the end of a response, when its outcome (trailers
// included) is known.
type trackedBody struct {
	io.ReadCloser
	resp   *http.Response
	p      *Proxy
	labels metrics.Labels
	ep     *balance.Endpoint
	bal    *balance.Balancer
	done   atomic.Bool
	// onDone runs once the response is over (a request timeout's cleanup).
	onDone func()

	// For mesh stat and tap.
	d       direction
	peer    peer
	began   time.Time
	latency time.Duration
	tapID   uint64
	req     *http.Request
	bytes   int64
}

func (b *trackedBody) Read(buf []byte) (int, error) {
	n, err := b.ReadCloser.Read(buf)
	b.bytes += int64(n)
	if err != nil {
		b.finish()
	}
	return n, err
}

func (b *trackedBody) Close() error {
	err := b.ReadCloser.Close()
	b.finish()
	return err
}

func (b *trackedBody) finish() {
	if b.done.Swap(true) {
		return
	}
	if b.ep != nil {
		b.ep.Done()
	}
	grpc := b.resp.Trailer.Get("Grpc-Status")
	if grpc == "" {
		grpc = b.resp.Header.Get("Grpc-Status") // trailers-only response
	}
	class := metrics.Classify(b.resp.StatusCode, grpc)
	b.p.metrics.Response(&b.labels, httpio.StatusText(b.resp.StatusCode), class)
	b.p.window.record(b.d, b.labels.Authority, b.peer.peerID(b.d), b.labels.Route, b.latency, class == "success")
	if b.tapID != 0 {
		b.p.tapEnd(b.tapID, b.req, b.d, b.labels.TargetAddr, b.peer, b.resp.StatusCode, grpc, b.latency, time.Since(b.began), b.bytes, "")
	}
	if b.bal != nil {
		b.bal.Report(b.ep, !endpointFailed(b.resp.StatusCode, grpc))
	}
	if b.onDone != nil {
		b.onDone()
	}
}

// endpointFailed says whether a response counts against its endpoint for
// failure accrual: server errors, not the caller's mistakes.
func endpointFailed(status int, grpc string) bool {
	switch grpc {
	case "2", "13", "14": // UNKNOWN, INTERNAL, UNAVAILABLE
		return true
	}
	return status >= 500
}

type trackedRWBody struct {
	*trackedBody
	w io.Writer
}

func (b *trackedRWBody) Write(p []byte) (int, error) { return b.w.Write(p) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// tapEnd publishes the end of a tapped request.
func (p *Proxy) tapEnd(id uint64, req *http.Request, d direction, target string, pr peer, status int, grpc string, latency, duration time.Duration, bytes int64, errMsg string) {
	p.tap.publish(adminapi.TapEvent{Type: "end", ID: id, Time: time.Now(), Direction: d.String(), Source: req.RemoteAddr,
		Destination: target, TLS: pr.tls, ClientID: pr.clientID, ServerID: pr.serverID, Method: req.Method,
		Authority: req.Host, Path: req.URL.Path, Status: status, GRPCStatus: grpc, LatencyMS: ms(latency),
		DurationMS: ms(duration), Bytes: bytes, Error: errMsg})
}

// proxyError is a failure the proxy answers for itself.
type proxyError struct {
	status int
	reason string // metric label
	msg    string // for the mesh-error header
	err    error
}

func (e *proxyError) Error() string { return e.msg }
func (e *proxyError) Unwrap() error { return e.err }

// upstreamError explains why a request to target failed.
func upstreamError(err error, target string) *proxyError {
	var pe *proxyError
	if errors.As(err, &pe) {
		return pe
	}
	var op *net.OpError
	var ie *identityError
	var te *tlsError
	switch {
	case errors.As(err, &ie):
		return &proxyError{status: http.StatusBadGateway, reason: "identity_mismatch", msg: ie.Error(), err: err}
	case errors.As(err, &te):
		return &proxyError{status: http.StatusBadGateway, reason: "tls_failed", msg: oneLine(te.Error()), err: err}
	case errors.As(err, &op) && op.Op == "dial":
		if op.Timeout() {
			return &proxyError{status: http.StatusGatewayTimeout, reason: "connect_timeout", msg: fmt.Sprintf("connecting to %s timed out", target), err: err}
		}
		return &proxyError{status: http.StatusBadGateway, reason: "connect_failed", msg: fmt.Sprintf("connecting to %s: %s", target, causeOf(op)), err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &proxyError{status: http.StatusGatewayTimeout, reason: "timeout", msg: fmt.Sprintf("%s did not answer in time", target), err: err}
	case errors.Is(err, context.Canceled):
		return &proxyError{status: 499, reason: "client_canceled", msg: "the client went away", err: err}
	}
	return &proxyError{status: http.StatusBadGateway, reason: "upstream_failed", msg: fmt.Sprintf("%s: %s", target, oneLine(err.Error())), err: err}
}

func causeOf(op *net.OpError) string {
	if op.Err != nil {
		return oneLine(op.Err.Error())
	}
	return oneLine(op.Error())
}

func oneLine(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "\r", " "), "\n", " ") }

// upstreamFailed answers a request whose forwarding failed.
func (p *Proxy) upstreamFailed(w http.ResponseWriter, r *http.Request, d direction, err error) {
	pe := upstreamError(err, "upstream")
	if r.Context().Err() != nil {
		p.metrics.HTTPErrors.WithLabelValues(d.String(), "client_canceled").Inc()
		return // nobody to answer
	}
	p.fail(w, r, d, pe.status, pe.reason, pe.msg)
}

// fail answers a request on the proxy's behalf, saying why in the
// mesh-error header. gRPC clients get a gRPC status they understand.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, d direction, status int, reason, msg string) {
	p.metrics.HTTPErrors.WithLabelValues(d.String(), reason).Inc()
	p.log.Debug("request failed", slog.String("direction", d.String()), slog.String("authority", r.Host),
		slog.String("path", r.URL.Path), slog.Int("status", status), slog.String("reason", msg))
	h := w.Header()
	h.Set(ErrorHeader, msg)
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", grpcCode(status))
		h.Set("Grpc-Message", msg)
		w.WriteHeader(http.StatusOK)
		return
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	fmt.Fprintln(w, msg)
}

// grpcCode maps the proxy's HTTP status to a gRPC status code.
func grpcCode(status int) string {
	switch status {
	case http.StatusGatewayTimeout:
		return "4" // DEADLINE_EXCEEDED
	case http.StatusBadRequest:
		return "3" // INVALID_ARGUMENT
	case http.StatusMethodNotAllowed:
		return "12" // UNIMPLEMENTED
	case http.StatusForbidden:
		return "7" // PERMISSION_DENIED
	}
	return "14" // UNAVAILABLE
}

// bufferPool recycles the 32 KiB copy buffers of httputil.ReverseProxy,
// which would otherwise allocate one per request.
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *copyBuffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }
