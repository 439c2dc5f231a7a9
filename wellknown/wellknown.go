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
)

// ConfigKeys lists every config key, in the order flags are documented.
var ConfigKeys = []string{SkipInboundPorts, SkipOutboundPorts, SkipOutboundCIDRs, OpaquePorts,
	ProxyCPURequest, ProxyCPULimit, ProxyMemRequest, ProxyMemLimit, ProxyLogLevel, ProxyImage, DefaultInboundPolicy}

// TokenAudience is the audience of the ServiceAccount token the proxy shows
// the identity service.
const TokenAudience = "identity.mesh.io"

// The trust anchors' ConfigMap in the control plane's namespace, and its key.
const (
	TrustAnchorsConfigMap = "mesh-identity-trust-anchors"
	TrustAnchorsKey       = "trust-anchors.pem"
)
