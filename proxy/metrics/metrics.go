// Package metrics defines what a proxy counts, with Linkerd's metric names
// and labels so that existing dashboards and habits carry over. It owns the
// registry the admin endpoint serves; it does not decide when to count.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// LatencyBucketsMS are the response latency buckets, in milliseconds:
// Linkerd's, with sub-millisecond buckets added for loopback and same-node
// traffic.
var LatencyBucketsMS = [...]float64{0.1, 0.25, 0.5, 1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000}

// Label names.
const (
	Direction      = "direction" // inbound or outbound
	Authority      = "authority" // the service authority, host:port
	TargetAddr     = "target_addr"
	TLS            = "tls"
	StatusCode     = "status_code"
	Classification = "classification" // success or failure
	Error          = "error"
	ClientID       = "client_id" // the peer's SPIFFE ID, inbound
	ServerID       = "server_id" // the peer's SPIFFE ID, outbound
	Listener       = "listener"  // inbound, outbound, admin, or outbound_tcp
	Reason         = "reason"
	Route          = "route" // the route a request was sent by, empty for none
)

// Metrics holds a proxy's metrics and the registry that serves them.
type Metrics struct {
	Registry *prometheus.Registry

	RequestTotal    *prometheus.CounterVec
	ResponseTotal   *prometheus.CounterVec
	ResponseLatency *prometheus.HistogramVec
	HTTPErrors      *prometheus.CounterVec

	TCPOpenTotal       *prometheus.CounterVec
	TCPOpenConnections *prometheus.GaugeVec
	TCPCloseTotal      *prometheus.CounterVec
	TCPReadBytes       *prometheus.CounterVec
	TCPWriteBytes      *prometheus.CounterVec

	RetryTotal            *prometheus.CounterVec
	RetryBudgetExhausted  *prometheus.CounterVec
	RequestTimeouts       *prometheus.CounterVec
	LoadShed              *prometheus.CounterVec
	EndpointEjections     *prometheus.CounterVec
	EndpointRestorations  *prometheus.CounterVec
	EndpointsEjectedGauge *prometheus.GaugeVec

	ConnectionsRefused *prometheus.CounterVec
	ConnectionsEvicted *prometheus.CounterVec

	// Inbound authorization: what the policy admitted and refused (audit
	// "true": refused by the policy, let through because it is in audit
	// mode). Server is "" for a port no Server selects.
	HTTPAuthzAllow *prometheus.CounterVec
	HTTPAuthzDeny  *prometheus.CounterVec
	TCPAuthzAllow  *prometheus.CounterVec
	TCPAuthzDeny   *prometheus.CounterVec

	DiscoveryUpdates   prometheus.Counter
	DiscoveryServices  prometheus.Gauge
	DiscoveryEndpoints prometheus.Gauge
}

// New creates the metrics in a fresh registry. constLabels (workload
// labels such as namespace and pod) are added to every series.
func New(constLabels map[string]string) *Metrics {
	reg := prometheus.NewRegistry()
	f := prometheus.WrapRegistererWith(constLabels, reg)
	req := []string{Direction, Authority, TargetAddr, TLS, ClientID, ServerID, Route}
	tcp := []string{Direction, Authority, TargetAddr, TLS, ClientID, ServerID}
	m := &Metrics{
		Registry: reg,
		RequestTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "request_total", Help: "HTTP requests sent to an endpoint.",
		}, req),
		ResponseTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "response_total", Help: "HTTP responses by status and classification (failure: 5xx, non-zero grpc-status, or an error of the proxy).",
		}, append(req, StatusCode, Classification)),
		ResponseLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "response_latency_ms", Help: "Time from a request to its response headers, in milliseconds.", Buckets: LatencyBucketsMS[:],
		}, append(req, StatusCode)),
		HTTPErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_errors_total", Help: "HTTP requests the proxy answered itself, by reason.",
		}, []string{Direction, Error}),
		TCPOpenTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcp_open_total", Help: "TCP connections accepted.",
		}, tcp),
		TCPOpenConnections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tcp_open_connections", Help: "TCP connections open now.",
		}, tcp),
		TCPCloseTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcp_close_total", Help: "TCP connections closed.",
		}, tcp),
		TCPReadBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcp_read_bytes_total", Help: "Bytes read from accepted connections.",
		}, tcp),
		TCPWriteBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcp_write_bytes_total", Help: "Bytes written to accepted connections.",
		}, tcp),
		RetryTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "retry_total", Help: "Requests sent again to another endpoint, by what failed.",
		}, []string{Direction, Authority, "reason"}),
		RetryBudgetExhausted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "retry_budget_exhausted_total", Help: "Retries refused because the service's retry budget was spent.",
		}, []string{Direction, Authority}),
		RequestTimeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "request_timeouts_total", Help: "Requests answered 504 because their timeout passed.",
		}, []string{Direction, Authority}),
		LoadShed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "load_shed_total", Help: "Requests answered 503 because every endpoint tried was at its limit.",
		}, []string{Direction, Authority}),
		EndpointEjections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "endpoint_ejections_total", Help: "Endpoints taken out of balancing by failure accrual.",
		}, []string{Authority, TargetAddr}),
		EndpointRestorations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "endpoint_restorations_total", Help: "Ejected endpoints restored after a successful probe.",
		}, []string{Authority, TargetAddr}),
		EndpointsEjectedGauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "endpoint_ejected", Help: "1 while an endpoint is ejected by failure accrual.",
		}, []string{Authority, TargetAddr}),
		ConnectionsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "listener_connections_refused_total", Help: "Accepted connections closed before anything was read from them, by reason (proxy_port: inbound to one of the proxy's own listeners; limit: every place of the listener busy).",
		}, []string{Listener, Reason}),
		ConnectionsEvicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "listener_connections_evicted_total", Help: "Connections closed to make room for a new one at the listener's bound, by what they were doing (fresh: no whole request yet; idle: between requests).",
		}, []string{Listener, "state"}),
		HTTPAuthzAllow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inbound_http_authz_allow_total", Help: "Inbound HTTP requests the authorization policy admitted, by server and authorization policy (both empty: the default policy).",
		}, []string{"server", "authorization_policy"}),
		HTTPAuthzDeny: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inbound_http_authz_deny_total", Help: "Inbound HTTP requests the authorization policy refused (audit=\"true\": would have refused, and let through in audit mode), by server and reason.",
		}, []string{"server", Reason, "audit"}),
		TCPAuthzAllow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inbound_tcp_authz_allow_total", Help: "Inbound opaque TCP connections the authorization policy admitted, by server and authorization policy (both empty: the default policy).",
		}, []string{"server", "authorization_policy"}),
		TCPAuthzDeny: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inbound_tcp_authz_deny_total", Help: "Inbound opaque TCP connections the authorization policy refused (audit=\"true\": let through in audit mode), by server and reason.",
		}, []string{"server", Reason, "audit"}),
		DiscoveryUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "discovery_updates_total", Help: "Discovery states applied.",
		}),
		DiscoveryServices: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "discovery_services", Help: "Services known from discovery.",
		}),
		DiscoveryEndpoints: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "discovery_endpoints", Help: "Endpoints known from discovery, over all services.",
		}),
	}
	f.MustRegister(m.RequestTotal, m.ResponseTotal, m.ResponseLatency, m.HTTPErrors,
		m.TCPOpenTotal, m.TCPOpenConnections, m.TCPCloseTotal, m.TCPReadBytes, m.TCPWriteBytes,
		m.RetryTotal, m.RetryBudgetExhausted, m.RequestTimeouts, m.LoadShed,
		m.EndpointEjections, m.EndpointRestorations, m.EndpointsEjectedGauge,
		m.ConnectionsRefused, m.ConnectionsEvicted, m.HTTPAuthzAllow, m.HTTPAuthzDeny, m.TCPAuthzAllow, m.TCPAuthzDeny,
		m.DiscoveryUpdates, m.DiscoveryServices, m.DiscoveryEndpoints)
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	return m
}

// Classify says whether an HTTP exchange succeeded, as Linkerd does: 5xx
// and a non-zero gRPC status are failures.
func Classify(status int, grpcStatus string) string {
	if status >= 500 || (grpcStatus != "" && grpcStatus != "0") {
		return "failure"
	}
	return "success"
}

// Labels is the series a request or a connection is counted in: which way
// it went, to which service and address, and what mTLS proved.
type Labels struct {
	Direction, Authority, TargetAddr string
	// TLS is "true" or "false".
	TLS                string
	ClientID, ServerID string
	// Route is the route of an HTTP request (not a label of TCP series).
	Route string
}

// Request counts a request sent to an endpoint.
func (m *Metrics) Request(l *Labels) {
	m.RequestTotal.WithLabelValues(l.Direction, l.Authority, l.TargetAddr, l.TLS, l.ClientID, l.ServerID, l.Route).Inc()
}

// Response counts a response (or the proxy's own answer) by status and
// classification.
func (m *Metrics) Response(l *Labels, status, classification string) {
	m.ResponseTotal.WithLabelValues(l.Direction, l.Authority, l.TargetAddr, l.TLS, l.ClientID, l.ServerID, l.Route, status, classification).Inc()
}

// Latency observes the time from a request to its response headers.
func (m *Metrics) Latency(l *Labels, status string, ms float64) {
	m.ResponseLatency.WithLabelValues(l.Direction, l.Authority, l.TargetAddr, l.TLS, l.ClientID, l.ServerID, l.Route, status).Observe(ms)
}

// TCPOpened counts a connection accepted and open.
func (m *Metrics) TCPOpened(l *Labels) {
	m.TCPOpenTotal.WithLabelValues(l.Direction, l.Authority, l.TargetAddr, l.TLS, l.ClientID, l.ServerID).Inc()
	m.TCPOpenConnections.WithLabelValues(l.Direction, l.Authority, l.TargetAddr, l.TLS, l.ClientID, l.ServerID).Inc()
}

// TCPClosed counts a connection closed and the bytes it carried each way.
func (m *Metrics) TCPClosed(l *Labels, read, written int64) {
	m.TCPCloseTotal.WithLabelValues(l.Direction, l.Authority, l.TargetAddr, l.TLS, l.ClientID, l.ServerID).Inc()
	m.TCPOpenConnections.WithLabelValues(l.Direction, l.Authority, l.TargetAddr, l.TLS, l.ClientID, l.ServerID).Dec()
	m.TCPReadBytes.WithLabelValues(l.Direction, l.Authority, l.TargetAddr, l.TLS, l.ClientID, l.ServerID).Add(float64(read))
	m.TCPWriteBytes.WithLabelValues(l.Direction, l.Authority, l.TargetAddr, l.TLS, l.ClientID, l.ServerID).Add(float64(written))
}
