// Package xdswire reads and writes the few xDS v3 messages a mesh proxy
// exchanges with the controller, straight from and to protobuf's wire
// format: the DeltaDiscoveryRequest it sends, the DeltaDiscoveryResponse
// it gets (delta.go), and the Listener, Cluster and ClusterLoadAssignment
// fields that package xdsres writes. It does so without the generated Envoy types,
// whose registration alone costs every sidecar several megabytes (see
// bench/README.md, Memory): a proxy reads a dozen fields of them.
//
// Fields it does not know are skipped, as protobuf requires, so a
// controller that sends more stays readable.
package xdswire

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshproj/mesh/discovery"
)

// Type URLs of the resources the controller serves.
const (
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
)

// InboundPolicyType is the type of a pod's inbound policy: a
// google.protobuf.BytesValue holding discovery.InboundPolicy as JSON, one
// resource per pod, named by InboundPolicyName. Only mesh proxies ask for
// it.
const InboundPolicyType = "type.googleapis.com/google.protobuf.BytesValue"

// InboundPolicyName names a pod's inbound policy resource.
func InboundPolicyName(namespace, pod string) string {
	return "inbound-policy/" + namespace + "/" + pod
}

// DecodeInboundPolicy reads an inbound policy resource.
func DecodeInboundPolicy(b []byte) (discovery.InboundPolicy, error) {
	var js []byte
	err := walk(b, func(f field) error {
		if f.num == 1 {
			if f.typ != protowire.BytesType {
				return f.wrongType("value")
			}
			js = f.bytes
		}
		return nil
	})
	var ip discovery.InboundPolicy
	if err != nil {
		return ip, fmt.Errorf("inbound policy: %w", err)
	}
	if err := json.Unmarshal(js, &ip); err != nil {
		return ip, fmt.Errorf("inbound policy: %w", err)
	}
	return ip, nil
}

// MetadataKey is the filter-metadata namespace of mesh's own fields.
const MetadataKey = "mesh.io"

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// field is one field of a message, as read from the wire.
type field struct {
	num   protowire.Number
	typ   protowire.Type
	bytes []byte // BytesType
	n     uint64 // VarintType, Fixed32Type, Fixed64Type
}

func (f field) wrongType(name string) error {
	return fmt.Errorf("field %d (%s) has wire type %d", f.num, name, f.typ)
}

func (f field) str(dst *string) error {
	if f.typ != protowire.BytesType {
		return f.wrongType("string")
	}
	*dst = string(f.bytes)
	return nil
}

func (f field) varint(dst *uint64) error {
	if f.typ != protowire.VarintType {
		return f.wrongType("varint")
	}
	*dst = f.n
	return nil
}

// walk calls fn for each field of a message, and fails on a malformed one.
func walk(b []byte, fn func(field) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		f := field{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			f.n, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var v uint32
			v, n = protowire.ConsumeFixed32(b)
			f.n = uint64(v)
		case protowire.Fixed64Type:
			f.n, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			f.bytes, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

// message calls fn on the fields of an embedded message field.
func (f field) message(name string, fn func(field) error) error {
	if f.typ != protowire.BytesType {
		return f.wrongType(name)
	}
	return walk(f.bytes, fn)
}

// Route is what a proxy learns from a Listener: which service port a name
// and its virtual IPs lead to.
type Route struct {
	Key     discovery.Key
	Cluster string
	// RouteConfig names the service's RouteConfiguration, when the
	// controller serves one (RDS).
	RouteConfig string
	VIPs        []netip.AddrPort
}

// Name is the name of a service port's Listener, Cluster and
// ClusterLoadAssignment: its host and port.
func Name(k discovery.Key) string { return k.String() }

// KeyOf reads a resource name (host:port) as a service port.
func KeyOf(name string) (discovery.Key, error) {
	host, port, err := net.SplitHostPort(name)
	if err != nil {
		return discovery.Key{}, err
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return discovery.Key{}, fmt.Errorf("bad port %q", port)
	}
	return discovery.Key{Host: host, Port: uint16(n)}, nil
}

// value is a google.protobuf.Value of mesh metadata: a string or a bool.
type value struct {
	str string
	b   bool
}

// meshFields reads the mesh.io entry of a core.v3.Metadata's
// filter_metadata (a map of google.protobuf.Struct).
func meshFields(f field) (map[string]value, error) {
	out := map[string]value{}
	err := f.message("metadata", func(e field) error {
		if e.num != 1 { // filter_metadata
			return nil
		}
		var key string
		var st []byte
		if err := e.message("filter_metadata", func(kv field) error {
			switch kv.num {
			case 1:
				return kv.str(&key)
			case 2:
				if kv.typ != protowire.BytesType {
					return kv.wrongType("filter_metadata value")
				}
				st = kv.bytes
			}
			return nil
		}); err != nil {
			return err
		}
		if key != MetadataKey {
			return nil
		}
		return walk(st, func(sf field) error { // Struct.fields
			if sf.num != 1 {
				return nil
			}
			var name string
			var v value
			if err := sf.message("struct field", func(kv field) error {
				switch kv.num {
				case 1:
					return kv.str(&name)
				case 2:
					return kv.message("value", func(vf field) error {
						switch vf.num {
						case 3: // string_value
							return vf.str(&v.str)
						case 4: // bool_value
							var n uint64
							err := vf.varint(&n)
							v.b = n != 0
							return err
						}
						return nil
					})
				}
				return nil
			}); err != nil {
				return err
			}
			out[name] = v
			return nil
		})
	})
	return out, err
}

// socketAddress reads a core.v3.Address holding a SocketAddress.
func socketAddress(f field) (netip.AddrPort, error) {
	var ip string
	var port uint64
	err := f.message("address", func(a field) error {
		if a.num != 1 { // socket_address
			return nil
		}
		return a.message("socket_address", func(s field) error {
			switch s.num {
			case 2:
				return s.str(&ip)
			case 3:
				return s.varint(&port)
			}
			return nil
		})
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", ip, err)
	}
	if port == 0 || port > math.MaxUint16 {
		return netip.AddrPort{}, fmt.Errorf("address %s: bad port %d", addr, port)
	}
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}

// DecodeListener reads a Listener made by xdsres.Encode.
func DecodeListener(b []byte) (Route, error) {
	var name string
	var meta map[string]value
	var addrs []field
	err := walk(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&name)
		case 2:
			addrs = append(addrs, f)
		case 6:
			var err error
			meta, err = meshFields(f)
			return err
		case 33: // additional_addresses: AdditionalAddress{address = 1}
			return f.message("additional_addresses", func(a field) error {
				if a.num == 1 {
					addrs = append(addrs, a)
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return Route{}, fmt.Errorf("listener %q: %w", name, err)
	}
	key, err := KeyOf(name)
	if err != nil {
		return Route{}, fmt.Errorf("listener %q: %w", name, err)
	}
	r := Route{Key: key, Cluster: meta["cluster"].str, RouteConfig: meta["routeConfig"].str}
	if r.Cluster == "" {
		return Route{}, fmt.Errorf("listener %q: no %s cluster in its metadata", name, MetadataKey)
	}
	for _, a := range addrs {
		ap, err := socketAddress(a)
		if err != nil {
			return Route{}, fmt.Errorf("listener %q: %w", name, err)
		}
		r.VIPs = append(r.VIPs, ap)
	}
	return r, nil
}

// DecodeRoutes reads a service's RouteConfiguration: its name and the
// mesh routes in its metadata (none: everything goes to the service).
// Envoy's own routes beside them are for Envoy and gRPC clients.
func DecodeRoutes(b []byte) (string, []discovery.Route, error) {
	var name string
	var meta map[string]value
	err := walk(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&name)
		case 17:
			var err error
			meta, err = meshFields(f)
			return err
		}
		return nil
	})
	if err != nil {
		return "", nil, fmt.Errorf("routes %q: %w", name, err)
	}
	if _, err := KeyOf(name); err != nil {
		return "", nil, fmt.Errorf("routes %q: %w", name, err)
	}
	js := meta["routes"].str
	if js == "" {
		return name, nil, nil
	}
	var routes []discovery.Route
	if err := json.Unmarshal([]byte(js), &routes); err != nil {
		return "", nil, fmt.Errorf("routes %q: %w", name, err)
	}
	for i, r := range routes {
		if err := r.Validate(); err != nil {
			return "", nil, fmt.Errorf("routes %q: route %d: %w", name, i, err)
		}
	}
	return name, routes, nil
}

// Cluster load-balancing policies (envoy.config.cluster.v3.Cluster.LbPolicy).
const (
	lbRoundRobin   = 0
	lbLeastRequest = 1
	lbRingHash     = 2
	lbRandom       = 3
	lbMaglev       = 5
)

// DecodeCluster reads a Cluster's settings into a service without
// endpoints.
func DecodeCluster(b []byte) (discovery.Service, error) {
	var name string
	var policy uint64
	meta := map[string]value{}
	err := walk(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&name)
		case 6:
			return f.varint(&policy)
		case 25:
			var err error
			meta, err = meshFields(f)
			return err
		}
		return nil
	})
	if err != nil {
		return discovery.Service{}, fmt.Errorf("cluster %q: %w", name, err)
	}
	key, err := KeyOf(name)
	if err != nil {
		return discovery.Service{}, fmt.Errorf("cluster %q: %w", name, err)
	}
	s := discovery.Service{Name: key.Host, Port: key.Port, Opaque: meta["opaque"].b}
	s.LoadBalancer = discovery.LoadBalancer(meta["balancer"].str)
	if s.LoadBalancer == "" { // a cluster from another control plane
		switch policy {
		case lbRingHash:
			s.LoadBalancer = discovery.RingHash
		case lbMaglev:
			s.LoadBalancer = discovery.Maglev
		case lbRandom:
			s.LoadBalancer = discovery.Random
		case lbLeastRequest:
			s.LoadBalancer = discovery.LeastRequest
		default:
			s.LoadBalancer = discovery.RoundRobin
		}
	}
	if !s.LoadBalancer.Valid() {
		return discovery.Service{}, fmt.Errorf("cluster %q: unknown balancer %q", name, s.LoadBalancer)
	}
	s.HashKey = discovery.HashKey{Header: meta["hashHeader"].str, Cookie: meta["hashCookie"].str, SourceIP: meta["hashSourceIP"].b}
	if s.LoadBalancer.Hashing() && s.HashKey.IsZero() {
		s.HashKey.SourceIP = true
	}
	if t := meta["requestTimeout"].str; t != "" {
		if s.Timeouts.Request, err = time.ParseDuration(t); err != nil {
			return discovery.Service{}, fmt.Errorf("cluster %q: requestTimeout: %w", name, err)
		}
	}
	if err := failureFields(meta, &s); err != nil {
		return discovery.Service{}, fmt.Errorf("cluster %q: %w", name, err)
	}
	return s, nil
}

// failureFields reads the retries, failure accrual and limits that
// xdsres writes into a cluster's metadata, with the bounds the discovery
// file has.
func failureFields(meta map[string]value, s *discovery.Service) error {
	str := func(key string) (string, bool) {
		v, ok := meta[key]
		return v.str, ok
	}
	num := func(key string, lo, hi float64) (float64, error) {
		v, _ := str(key)
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < lo || f > hi {
			return 0, fmt.Errorf("%s %q is not a number from %v to %v", key, v, lo, hi)
		}
		return f, nil
	}
	whole := func(key string, lo, hi int) (int, error) {
		v, _ := str(key)
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("%s %q is not a whole number from %d to %d", key, v, lo, hi)
		}
		return n, nil
	}
	dur := func(key string) (time.Duration, error) {
		v, _ := str(key)
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return 0, fmt.Errorf("%s %q is not a positive duration", key, v)
		}
		return d, nil
	}
	var err error
	if _, ok := str("retryLimit"); ok {
		r := discovery.DefaultRetries()
		if r.MaxRetries, err = whole("retryLimit", 0, 10); err != nil {
			return err
		}
		var refused []string
		v, _ := str("retryHTTP")
		if r.Statuses, refused = discovery.ParseList(v, discovery.ParseStatusRange); len(refused) > 0 {
			return fmt.Errorf("retryHTTP %q is not a status range", refused[0])
		}
		v, _ = str("retryGRPC")
		if r.GRPCCodes, refused = discovery.ParseList(v, discovery.ParseGRPCCode); len(refused) > 0 {
			return fmt.Errorf("retryGRPC %q is not a gRPC error code", refused[0])
		}
		if r.BudgetRatio, err = num("retryBudgetRatio", 0, 1); err != nil {
			return err
		}
		if r.BudgetMinPerSecond, err = num("retryBudgetMinPerSecond", 0, 1e9); err != nil {
			return err
		}
		if r.BudgetTTL, err = dur("retryBudgetTTL"); err != nil {
			return err
		}
		s.Retries = &r
	}
	if _, ok := str("accrualFailures"); ok {
		a := discovery.DefaultFailureAccrual()
		if a.ConsecutiveFailures, err = whole("accrualFailures", 0, 1<<20); err != nil {
			return err
		}
		if a.MinBackoff, err = dur("accrualMinBackoff"); err != nil {
			return err
		}
		if a.MaxBackoff, err = dur("accrualMaxBackoff"); err != nil {
			return err
		}
		if a.MaxBackoff < a.MinBackoff {
			return fmt.Errorf("accrualMaxBackoff %s is shorter than accrualMinBackoff %s", a.MaxBackoff, a.MinBackoff)
		}
		if a.Jitter, err = num("accrualJitter", 0, 0.999999); err != nil {
			return err
		}
		s.FailureAccrual = &a
	}
	if _, ok := str("maxRequestsPerEndpoint"); ok {
		if s.Limits.MaxRequestsPerEndpoint, err = whole("maxRequestsPerEndpoint", 1, 1<<30); err != nil {
			return err
		}
	}
	return nil
}

// Endpoint health (envoy.config.core.v3.HealthStatus) that takes an
// endpoint out of rotation.
const (
	healthUnhealthy = 2
	healthDraining  = 3
	healthTimeout   = 4
)

// DecodeEndpoints reads a ClusterLoadAssignment: the cluster it is for,
// and its endpoints in rotation.
func DecodeEndpoints(b []byte) (string, []discovery.Endpoint, error) {
	var name string
	var out []discovery.Endpoint
	err := walk(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&name)
		case 2: // LocalityLbEndpoints
			var zone string
			var eps []discovery.Endpoint
			err := f.message("endpoints", func(l field) error {
				switch l.num {
				case 1: // locality
					return l.message("locality", func(z field) error {
						if z.num == 2 {
							return z.str(&zone)
						}
						return nil
					})
				case 2: // LbEndpoint
					e, ok, err := lbEndpoint(l)
					if err != nil || !ok {
						return err
					}
					eps = append(eps, e)
				}
				return nil
			})
			for i := range eps {
				eps[i].Zone = zone
			}
			out = append(out, eps...)
			return err
		}
		return nil
	})
	if err != nil {
		return "", nil, fmt.Errorf("endpoints of %q: %w", name, err)
	}
	return name, out, nil
}

var errNoAddress = errors.New("an endpoint without an address")

// lbEndpoint reads one LbEndpoint; ok is false for one out of rotation.
func lbEndpoint(f field) (discovery.Endpoint, bool, error) {
	var e discovery.Endpoint
	var health, weight uint64
	addrErr := errNoAddress
	var meta map[string]value
	err := f.message("lb_endpoints", func(g field) error {
		switch g.num {
		case 1: // endpoint: Endpoint{address = 1}
			return g.message("endpoint", func(a field) error {
				if a.num == 1 {
					e.Address, addrErr = socketAddress(a)
				}
				return nil
			})
		case 2:
			return g.varint(&health)
		case 3:
			var err error
			meta, err = meshFields(g)
			return err
		case 4: // google.protobuf.UInt32Value{value = 1}
			return g.message("load_balancing_weight", func(w field) error {
				if w.num == 1 {
					return w.varint(&weight)
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return e, false, err
	}
	switch health {
	case healthUnhealthy, healthDraining, healthTimeout:
		return e, false, nil
	}
	if addrErr != nil {
		return e, false, addrErr
	}
	e.Weight = uint32(min(max(weight, 1), math.MaxUint32))
	e.Identity = meta["identity"].str
	return e, true, nil
}
