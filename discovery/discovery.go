// Package discovery is the mesh's model of its services: their ports,
// endpoints (with identity, weight and zone) and per-service settings
// (balancer, hash key, timeouts, retries, failure accrual, limits). The
// controller builds it from Kubernetes, the discovery file describes it in
// local mode, and proxies balance over it. It also names the Backend a
// proxy takes its State from; the backends live under proxy/discovery
// (file, and xds for the controller's ADS), the shared xDS encoding in
// discovery/xdsres.
//
// It is not a balancer and does no I/O of its own: a backend turns some source
// of truth into State values and hands them to the proxy.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// LoadBalancer names a load-balancing algorithm. The same names are used in
// the discovery file and in the mesh.io/load-balancer Service annotation.
type LoadBalancer string

// The load balancers a service may choose.
const (
	PeakEWMA     LoadBalancer = "peak-ewma"
	RoundRobin   LoadBalancer = "round-robin"
	Random       LoadBalancer = "random"
	LeastRequest LoadBalancer = "least-request"
	Weighted     LoadBalancer = "weighted"
	RingHash     LoadBalancer = "ring-hash"
	Maglev       LoadBalancer = "maglev"
)

// LoadBalancers lists every algorithm, default first.
var LoadBalancers = []LoadBalancer{PeakEWMA, RoundRobin, Random, LeastRequest, Weighted, RingHash, Maglev}

// Hashing reports whether the algorithm needs a hash key.
func (lb LoadBalancer) Hashing() bool { return lb == RingHash || lb == Maglev }

// Valid reports whether lb is a known algorithm.
func (lb LoadBalancer) Valid() bool {
	for _, known := range LoadBalancers {
		if lb == known {
			return true
		}
	}
	return false
}

// HashKey says what a consistent-hashing balancer hashes. Exactly one field
// is set.
type HashKey struct {
	Header   string `json:"header,omitempty"`
	Cookie   string `json:"cookie,omitempty"`
	SourceIP bool   `json:"sourceIP,omitempty"`
}

// IsZero reports whether no key is set.
func (k HashKey) IsZero() bool { return k == HashKey{} }

// Endpoint is one address that serves a service.
type Endpoint struct {
	Address netip.AddrPort `json:"address"`
	// Weight is relative to the service's other endpoints; 1 if unset.
	Weight uint32 `json:"weight"`
	// Identity is the SPIFFE ID the endpoint's proxy must present; empty for
	// endpoints that are not meshed.
	Identity string `json:"identity,omitempty"`
	Zone     string `json:"zone,omitempty"`
}

// Key identifies a service port: the host part of an authority and a port.
type Key struct {
	Host string
	Port uint16
}

func (k Key) String() string { return net.JoinHostPort(k.Host, strconv.Itoa(int(k.Port))) }

// ParseAuthority turns an HTTP authority ("web", "web:8080",
// "web.default.svc.cluster.local:80") into a Key. A missing port means
// defaultPort. Hosts are compared in lower case, as DNS does.
func ParseAuthority(authority string, defaultPort uint16) (Key, error) {
	if authority == "" {
		return Key{}, fmt.Errorf("empty authority")
	}
	host, port := authority, defaultPort
	if h, p, err := net.SplitHostPort(authority); err == nil {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return Key{}, fmt.Errorf("authority %q: bad port %q", authority, p)
		}
		host, port = h, uint16(n)
	} else if strings.Contains(authority, "]") || strings.Count(authority, ":") == 1 {
		return Key{}, fmt.Errorf("authority %q: %w", authority, err)
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" {
		return Key{}, fmt.Errorf("authority %q has no host", authority)
	}
	return Key{Host: host, Port: port}, nil
}

// Service is one port of a service and everything the proxy needs to reach it.
type Service struct {
	Name string `json:"name"`
	Port uint16 `json:"port"`
	// Aliases are other hosts that name the service ("web" and "web.shop"
	// for web.shop.svc.cluster.local).
	Aliases []string `json:"aliases,omitempty"`
	// Opaque services are proxied as TCP without protocol detection; use it
	// for protocols where the server speaks first (SMTP, MySQL, ...).
	Opaque       bool         `json:"opaque,omitempty"`
	LoadBalancer LoadBalancer `json:"loadBalancer"`
	HashKey      HashKey      `json:"hashKey,omitzero"`
	Endpoints    []Endpoint   `json:"endpoints"`
	// Addresses are the service's virtual IPs (a Kubernetes ClusterIP): an
	// intercepted connection to one of them at Port is balanced across the
	// endpoints.
	Addresses []netip.Addr `json:"addresses,omitempty"`
	// Failure handling; zero values mean the defaults below.
	Timeouts       Timeouts        `json:"timeouts,omitzero"`
	Retries        *Retries        `json:"retries,omitempty"`
	FailureAccrual *FailureAccrual `json:"failureAccrual,omitempty"`
	Limits         Limits          `json:"limits,omitzero"`
	// QueueTimeout is how long a request waits for an endpoint when none
	// is available before the proxy answers 503.
	QueueTimeout time.Duration `json:"queueTimeout,omitempty"`
	// Routes, when there are any, decide where each HTTP request to the
	// service goes (see Route).
	Routes []Route `json:"routes,omitempty"`
}

// Defaults for failure handling.
const (
	DefaultQueueTimeout = time.Second
	DefaultMaxRetries   = 2
	DefaultBodyLimit    = 64 << 10
)

// Timeouts bound a request.
type Timeouts struct {
	// Request bounds the time from a request to its response headers,
	// retries included; 0 means none. A shorter grpc-timeout wins.
	Request time.Duration `json:"request,omitempty"`
	// Attempt bounds each attempt, from sending it to its response
	// headers; an attempt that runs out is retried, as a failure, when
	// the retries allow (the Gateway API's timeouts.backendRequest).
	Attempt time.Duration `json:"attempt,omitempty"`
}

// Retries says which failed requests are sent again. Connection failures
// are always retried (the request never left) for any method; other
// failures only for idempotent requests (or gRPC calls with a listed code).
type Retries struct {
	// MaxRetries per request; 0 disables retries.
	MaxRetries int `json:"maxRetries"`
	// Statuses are HTTP response statuses to retry.
	Statuses []StatusRange `json:"statuses,omitempty"`
	// GRPCCodes are gRPC status codes to retry (trailers-only responses).
	GRPCCodes []uint32 `json:"grpcCodes,omitempty"`
	// Budget: see retry.BudgetConfig.
	BudgetRatio        float64       `json:"budgetRatio"`
	BudgetMinPerSecond float64       `json:"budgetMinPerSecond"`
	BudgetTTL          time.Duration `json:"budgetTTL"`
	// Backoff is the wait before each retry (none: at once).
	Backoff time.Duration `json:"backoff,omitempty"`
}

// StatusRange is an inclusive range of HTTP statuses.
type StatusRange struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

// Contains reports whether status is in the range.
func (r StatusRange) Contains(status int) bool { return status >= r.Min && status <= r.Max }

// DefaultRetries is what a service's retries start from when it sets
// any of them: Linkerd's and Finagle's budget, 20% more plus 10 a second
// over 10 seconds.
func DefaultRetries() Retries {
	return Retries{MaxRetries: DefaultMaxRetries, BudgetRatio: 0.2, BudgetMinPerSecond: 10, BudgetTTL: 10 * time.Second}
}

// DefaultFailureAccrual is what a service's failure accrual starts from
// when it sets any of it (and what a service that sets none gets).
func DefaultFailureAccrual() FailureAccrual {
	return FailureAccrual{ConsecutiveFailures: 7, MinBackoff: time.Second, MaxBackoff: time.Minute, Jitter: 0.5}
}

// ParseStatusRange reads "503", a class ("5xx") or a range ("500-504"),
// within 100-599.
func ParseStatusRange(s string) (StatusRange, bool) {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) == 3 && strings.HasSuffix(s, "xx") && s[0] >= '1' && s[0] <= '5' {
		base := int(s[0]-'0') * 100
		return StatusRange{Min: base, Max: base + 99}, true
	}
	lo, hi, isRange := strings.Cut(s, "-")
	min, err1 := strconv.Atoi(lo)
	max := min
	var err2 error
	if isRange {
		max, err2 = strconv.Atoi(hi)
	}
	if err1 != nil || err2 != nil || min < 100 || max > 599 || min > max {
		return StatusRange{}, false
	}
	return StatusRange{Min: min, Max: max}, true
}

// ParseList reads a comma-separated list with parse, skipping empty
// items, and returns what parse took and the items it refused.
func ParseList[T any](s string, parse func(string) (T, bool)) (good []T, bad []string) {
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if v, ok := parse(f); ok {
			good = append(good, v)
		} else {
			bad = append(bad, f)
		}
	}
	return good, bad
}

// grpcCodeNames are the gRPC status codes that can be retried, by name.
var grpcCodeNames = map[string]uint32{
	"CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
	"ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
	"ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
	"DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}

// ParseGRPCCode reads a gRPC error code by number (1-16) or by name, in
// any case and with - or _ between words (UNAVAILABLE, deadline-exceeded).
// OK is not an error code.
func ParseGRPCCode(s string) (uint32, bool) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), n >= 1 && n <= 16
	}
	code, ok := grpcCodeNames[strings.ReplaceAll(strings.ToUpper(s), "-", "_")]
	return code, ok
}

// FailureAccrual configures per-endpoint circuit breaking.
type FailureAccrual struct {
	// ConsecutiveFailures that eject an endpoint; 0 disables.
	ConsecutiveFailures int           `json:"consecutiveFailures"`
	MinBackoff          time.Duration `json:"minBackoff"`
	MaxBackoff          time.Duration `json:"maxBackoff"`
	Jitter              float64       `json:"jitter"`
}

// Limits shed load instead of queueing without end.
type Limits struct {
	// MaxRequestsPerEndpoint is the most requests in flight to one
	// endpoint; past it the proxy tries another endpoint, then answers 503.
	MaxRequestsPerEndpoint int `json:"maxRequestsPerEndpoint,omitempty"`
}

// Key returns the service's key.
func (s *Service) Key() Key { return Key{Host: strings.ToLower(s.Name), Port: s.Port} }

// State is everything a backend knows at one moment.
type State struct {
	Services []Service
	// Policies are inbound authorization policies, each for the proxies
	// it names (see InboundPolicy.Identity).
	Policies []InboundPolicy
	// Source says where the state came from, for humans ("file /etc/mesh/discovery.yaml").
	Source string
	// Revision changes whenever the state does.
	Revision string
	Updated  time.Time
	// Changed, when not nil, names the only services (by Key) that may
	// differ from the state the same backend handed over before this one:
	// the ones added, changed or gone. Every other service is as it was,
	// so a proxy keeps what it built for it. Nil: any may have changed.
	Changed map[Key]bool
}

// OnDemand is a Backend that learns of a service only once the proxy asks
// for it. Both methods return nil once a state that includes the service
// has been delivered, so a lookup that follows finds it; an error wrapping
// ErrNotFound when the backend knows there is no such service; and another
// error, saying why, when no answer came before ctx ended.
type OnDemand interface {
	// Want asks for the service an authority names.
	Want(ctx context.Context, key Key) error
	// WantAddr asks for the service with a virtual IP and port.
	WantAddr(ctx context.Context, addr netip.AddrPort) error
}

// Releaser is an OnDemand backend that can forget services the proxy has
// stopped using: their updates stop, and a later Want asks for them again.
type Releaser interface {
	Release(keys []Key)
}

// ErrNotFound says a backend knows of no such service.
var ErrNotFound = errors.New("no such service")

// StatusReporter is a Backend that can describe its connection, for the
// proxy's config dump.
type StatusReporter interface {
	Status() any
}

// Backend is a source of discovery state.
type Backend interface {
	// Run delivers the backend's state to update, first as soon as it is
	// known and again on every change, until ctx ends. It returns an error
	// if the first state cannot be had; later failures keep the last good
	// state and are logged.
	Run(ctx context.Context, update func(State)) error
}
