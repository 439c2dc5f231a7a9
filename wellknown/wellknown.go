// Package wellknown holds the names every part of the mesh agrees on: the
// proxy's ports and UID, the annotations on workloads, pods and Services,
// the config keys behind config.mesh.io/ annotations, and the audience of
// the proxy's token. It imports nothing, so that the proxy, inject, the
// controller and the commands can all import it and say each name once.
package wellknown

// The proxy's ports and the UID it runs as (mesh init exempts that UID's
// traffic from interception).
const (
	InboundPort  = 4143
	OutboundPort = 4140
	AdminPort    = 4191
	ProxyUID     = 2102
)

// Image is the mesh image, without tag: one image runs every mode, tagged
// with the version that `mesh install` and `mesh inject` write.
const Image = "ghcr.io/meshproj/mesh"

// The containers inject adds.
const (
	ProxyContainer = "mesh-proxy"
	InitContainer  = "mesh-init"
)

// Annotations and labels the mesh reads or writes.
const (
	// AnnotationInject ("enabled" or "disabled"), on a namespace or a pod
	// template, asks the webhook to inject or not.
	AnnotationInject = "mesh.io/inject"
	// AnnotationProxyVersion and AnnotationInjectedBy record what injected a
	// pod; AnnotationRestore what uninject needs to undo it exactly.
	AnnotationProxyVersion = "mesh.io/proxy-version"
	AnnotationInjectedBy   = "mesh.io/injected-by"
	AnnotationRestore      = "mesh.io/inject-restore"
	// AnnotationLoadBalancer, on a Service, picks its balancer: peak-ewma
	// (default), round-robin, random, least-request, weighted, ring-hash,
	// maglev.
	AnnotationLoadBalancer = "mesh.io/load-balancer"
	// AnnotationHashKey, on a Service, is what ring-hash and maglev hash:
	// "header:<name>", "cookie:<name>" or "source-ip" (default).
	AnnotationHashKey = "mesh.io/hash-key"
	// AnnotationWeight, on a pod, weighs its endpoints (weighted balancer).
	AnnotationWeight = "mesh.io/weight"

	// Failure handling of a Service, named after Linkerd's annotations
	// (timeout.linkerd.io/request, retry.linkerd.io/http, ...).
	//
	// AnnotationRequestTimeout bounds each request, retries included
	// ("2s"); a client's shorter grpc-timeout wins.
	AnnotationRequestTimeout = "timeout.mesh.io/request"
	// AnnotationRetryHTTP lists the HTTP statuses that are retried for
	// idempotent requests: "5xx", "503", "500-504", comma-separated.
	AnnotationRetryHTTP = "retry.mesh.io/http"
	// AnnotationRetryGRPC lists the gRPC codes that are retried:
	// "unavailable,deadline-exceeded" or numbers.
	AnnotationRetryGRPC = "retry.mesh.io/grpc"
	// AnnotationRetryLimit is the most retries of one request (0-10, 2).
	AnnotationRetryLimit = "retry.mesh.io/limit"
	// The retry budget: retries may add at most ratio of the requests
	// (0.2) plus min-per-second (10) over the last ttl (10s).
	AnnotationRetryBudgetRatio        = "retry.mesh.io/budget-ratio"
	AnnotationRetryBudgetMinPerSecond = "retry.mesh.io/budget-min-per-second"
	AnnotationRetryBudgetTTL          = "retry.mesh.io/budget-ttl"
	// AnnotationFailureAccrual is "consecutive" (the default) or
	// "disabled"; the consecutive kind ejects an endpoint after
	// max-failures (7) in a row, for a backoff from min-penalty (1s) to
	// max-penalty (1m), each spread by jitter-ratio (0.5).
	AnnotationFailureAccrual            = "balancer.mesh.io/failure-accrual"
	AnnotationFailureAccrualMaxFailures = "balancer.mesh.io/failure-accrual-consecutive-max-failures"
	AnnotationFailureAccrualMinPenalty  = "balancer.mesh.io/failure-accrual-consecutive-min-penalty"
	AnnotationFailureAccrualMaxPenalty  = "balancer.mesh.io/failure-accrual-consecutive-max-penalty"
	AnnotationFailureAccrualJitterRatio = "balancer.mesh.io/failure-accrual-consecutive-jitter-ratio"
	// AnnotationMaxRequestsPerEndpoint bounds the requests in flight to
	// each endpoint; beyond it requests are shed with a 503.
	AnnotationMaxRequestsPerEndpoint = "balancer.mesh.io/max-requests-per-endpoint"
	// ConfigPrefix is the prefix of the config annotations: config.mesh.io/KEY
	// for each config key below.
	ConfigPrefix = "config.mesh.io/"
	// AnnotationOpaquePorts, on a Service or a pod template, lists ports
	// proxied as TCP without protocol detection.
	AnnotationOpaquePorts = ConfigPrefix + OpaquePorts
)

// Config keys, as annotations (config.mesh.io/KEY) and as inject flags.
const (
	SkipInboundPorts  = "skip-inbound-ports"
	SkipOutboundPorts = "skip-outbound-ports"
	SkipOutboundCIDRs = "skip-outbound-cidrs"
	OpaquePorts       = "opaque-ports"
	ProxyCPURequest   = "proxy-cpu-request"
	ProxyCPULimit     = "proxy-cpu-limit"
	ProxyMemRequest   = "proxy-memory-request"
	ProxyMemLimit     = "proxy-memory-limit"
	ProxyLogLevel     = "proxy-log-level"
	ProxyImage        = "proxy-image"
	// DefaultInboundPolicy is the proxy's inbound policy for ports no
	// Server selects (see discovery.DefaultPolicy).
	DefaultInboundPolicy = "default-inbound-policy"
	// AccessLog is the proxy's access log format (json), none when empty.
	AccessLog = "access-log"
	// TraceCollector is where the proxy sends spans (OTLP/HTTP host:port
	// or URL), none when empty; TraceSampling the share of requests
	// without a trace context that start one.
	TraceCollector = "trace-collector"
	TraceSampling  = "trace-sampling"
)

// ConfigKeys lists every config key, in the order flags are documented.
var ConfigKeys = []string{SkipInboundPorts, SkipOutboundPorts, SkipOutboundCIDRs, OpaquePorts,
	ProxyCPURequest, ProxyCPULimit, ProxyMemRequest, ProxyMemLimit, ProxyLogLevel, ProxyImage, DefaultInboundPolicy, AccessLog,
	TraceCollector, TraceSampling}

// TokenAudience is the audience of the ServiceAccount token the proxy shows
// the identity service.
const TokenAudience = "identity.mesh.io"

// The trust anchors' ConfigMap in the control plane's namespace, and its key.
const (
	TrustAnchorsConfigMap = "mesh-identity-trust-anchors"
	TrustAnchorsKey       = "trust-anchors.pem"
)
