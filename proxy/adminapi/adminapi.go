// Package adminapi is the wire format of the proxy's admin endpoints: what
// /config_dump, /stats and /tap serve. The proxy fills it in; the commands
// that read proxies (stat, tap, check, demo) decode it, without linking the
// data plane. It holds types only, no behaviour beyond a tap filter's match.
package adminapi

import (
	"strings"
	"time"

	"github.com/meshproj/mesh/discovery"
)

// ConfigDump is the proxy's state as /config_dump shows it.
type ConfigDump struct {
	Ready    bool `json:"ready"`
	Draining bool `json:"draining"`
	// Cores is GOMAXPROCS: how many cores the proxy can use at once.
	Cores     int           `json:"cores"`
	Identity  *IdentityDump `json:"identity,omitempty"`
	Discovery DiscoveryDump `json:"discovery"`
	Listeners ListenerDump  `json:"listeners"`
	// InboundPolicy is who may reach the workload through the proxy, as in
	// force (the default, and a Server per port it selects).
	InboundPolicy discovery.InboundPolicy `json:"inboundPolicy"`
	Services      []ServiceDump           `json:"services"`
}

// IdentityDump is the proxy's own identity and certificate.
type IdentityDump struct {
	ID        string    `json:"id"`
	NotBefore time.Time `json:"notBefore,omitzero"`
	NotAfter  time.Time `json:"notAfter,omitzero"`
	Renewals  int64     `json:"renewals"`
	Failures  int64     `json:"failures"`
}

// DiscoveryDump says where the proxy's view of the mesh comes from.
type DiscoveryDump struct {
	Source   string    `json:"source"`
	Revision string    `json:"revision"`
	Updated  time.Time `json:"updated"`
	// Backend is the backend's own account (the xDS connection).
	Backend any `json:"backend,omitempty"`
}

// ListenerDump lists the bound addresses.
type ListenerDump struct {
	Outbound       string            `json:"outbound"`
	Inbound        string            `json:"inbound"`
	Admin          string            `json:"admin"`
	InboundForward string            `json:"inboundForward,omitempty"`
	OutboundTCP    map[string]string `json:"outboundTCP,omitempty"`
	OpaquePorts    []uint16          `json:"opaquePorts,omitempty"`
}

// ServiceDump is one service with its live endpoint state.
type ServiceDump struct {
	Authority    string                 `json:"authority"`
	Opaque       bool                   `json:"opaque,omitempty"`
	LoadBalancer discovery.LoadBalancer `json:"loadBalancer"`
	HashKey      discovery.HashKey      `json:"hashKey,omitzero"`
	Policy       PolicyDump             `json:"policy"`
	// Routes are the service's routes as discovery gave them (the most
	// specific match wins, whatever their order).
	Routes    []discovery.Route `json:"routes,omitempty"`
	Endpoints []EndpointDump    `json:"endpoints"`
}

// PolicyDump is a service's failure handling as in force.
type PolicyDump struct {
	RequestTimeout         string                    `json:"requestTimeout,omitempty"`
	QueueTimeout           string                    `json:"queueTimeout"`
	MaxRetries             int                       `json:"maxRetries"`
	RetryStatuses          []discovery.StatusRange   `json:"retryStatuses,omitempty"`
	RetryGRPCCodes         []string                  `json:"retryGRPCCodes,omitempty"`
	RetryBudget            map[string]float64        `json:"retryBudget"`
	FailureAccrual         *discovery.FailureAccrual `json:"failureAccrual"`
	MaxRequestsPerEndpoint int64                     `json:"maxRequestsPerEndpoint,omitempty"`
}

// EndpointDump is one endpoint's live state.
type EndpointDump struct {
	Address   string  `json:"address"`
	Weight    uint32  `json:"weight"`
	Identity  string  `json:"identity,omitempty"`
	Zone      string  `json:"zone,omitempty"`
	Pending   int64   `json:"pending"`
	LatencyMS float64 `json:"ewmaLatencyMs"`
	// State is active, ejected or probation (failure accrual).
	State               string     `json:"state"`
	ConsecutiveFailures int        `json:"consecutiveFailures"`
	Ejections           int        `json:"ejections"`
	EjectedUntil        *time.Time `json:"ejectedUntil,omitempty"`
}

// TapEvent is one event of a tapped request.
type TapEvent struct {
	Type        string    `json:"type"` // request, response or end
	ID          uint64    `json:"id"`
	Time        time.Time `json:"time"`
	Direction   string    `json:"direction"`
	Source      string    `json:"source"`
	Destination string    `json:"destination"`
	TLS         bool      `json:"tls"`
	ClientID    string    `json:"clientID,omitempty"`
	ServerID    string    `json:"serverID,omitempty"`
	Method      string    `json:"method"`
	Authority   string    `json:"authority"`
	Path        string    `json:"path"`
	Status      int       `json:"status,omitempty"`
	GRPCStatus  string    `json:"grpcStatus,omitempty"`
	LatencyMS   float64   `json:"latencyMs,omitempty"`  // request to response headers
	DurationMS  float64   `json:"durationMs,omitempty"` // request to end of response
	Bytes       int64     `json:"responseBytes,omitempty"`
	Error       string    `json:"error,omitempty"`
}

// TapFilter selects events; empty fields match everything.
type TapFilter struct {
	Method     string
	PathPrefix string
	// Authority matches the whole authority or its host.
	Authority string
	Direction string
}

// Match reports whether the filter selects e.
func (f TapFilter) Match(e *TapEvent) bool {
	if f.Method != "" && !strings.EqualFold(f.Method, e.Method) {
		return false
	}
	if f.PathPrefix != "" && !strings.HasPrefix(e.Path, f.PathPrefix) {
		return false
	}
	if f.Direction != "" && f.Direction != e.Direction {
		return false
	}
	if f.Authority != "" && f.Authority != e.Authority {
		host, _, _ := strings.Cut(e.Authority, ":")
		if f.Authority != host {
			return false
		}
	}
	return true
}

// WindowStat is one key's traffic over the last seconds, as /stats serves it.
type WindowStat struct {
	Direction string `json:"direction"`
	Authority string `json:"authority"`
	// Peer is the client's identity (inbound) or the server's (outbound);
	// empty without mTLS.
	Peer string `json:"peer,omitempty"`
	// Route is the route that sent the requests (outbound), empty where
	// the service has none.
	Route     string   `json:"route,omitempty"`
	Requests  uint64   `json:"requests"`
	Successes uint64   `json:"successes"`
	Latency   []uint64 `json:"latencyCounts"` // per bucket of LatencyBucketsMS, then +Inf
}

// Stats is the body of /stats.
type Stats struct {
	WindowSeconds   int               `json:"windowSeconds"`
	LatencyBuckets  []float64         `json:"latencyBucketsMs"`
	OpenConnections map[string]int64  `json:"openConnections"`
	Labels          map[string]string `json:"labels,omitempty"`
	Stats           []WindowStat      `json:"stats"`
	// Authz counts the inbound policy's decisions over the same seconds.
	Authz []AuthzStat `json:"authz,omitempty"`
}

// AuthzStat is how often the inbound policy decided one way for one
// reason over the last seconds.
type AuthzStat struct {
	Protocol string `json:"protocol"` // http (per request) or tcp (per connection)
	// Verdict is allowed, denied, or audited (would have been denied, let
	// through in audit mode).
	Verdict string `json:"verdict"`
	// Server is the Server that selects the port; empty: the default
	// policy decided.
	Server string `json:"server,omitempty"`
	// Authorization admitted the client ("probe": a kubelet probe).
	Authorization string `json:"authorization,omitempty"`
	// Reason is why the client was (or would have been) refused.
	Reason string `json:"reason,omitempty"`
	Count  uint64 `json:"count"`
}
