// Package file is the discovery backend for local mode: services and
// endpoints listed in a YAML file that is watched for changes.
//
// An edit that does not parse or validate is refused with the file and line
// of the problem, and the last good state stays in force.
package file

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/meshproj/mesh/discovery"
)

// document is the file's schema. Field names follow Kubernetes style.
type document struct {
	Services []service       `yaml:"services"`
	Policies []inboundPolicy `yaml:"policies"`
}

type service struct {
	Name           string          `yaml:"name"`
	Port           int             `yaml:"port"`
	Opaque         bool            `yaml:"opaque"`
	LoadBalancer   string          `yaml:"loadBalancer"`
	HashKey        *hashKey        `yaml:"hashKey"`
	Endpoints      []endpoint      `yaml:"endpoints"`
	Addresses      []string        `yaml:"addresses"`
	Timeouts       *timeouts       `yaml:"timeouts"`
	Retries        *retries        `yaml:"retries"`
	FailureAccrual *failureAccrual `yaml:"failureAccrual"`
	Limits         *limits         `yaml:"limits"`
	QueueTimeout   string          `yaml:"queueTimeout"`
	Routes         []route         `yaml:"routes"`
}

type timeouts struct {
	Request        string `yaml:"request"`
	BackendRequest string `yaml:"backendRequest"`
}

type retries struct {
	MaxRetries *int     `yaml:"maxRetries"`
	Statuses   []string `yaml:"statuses"`
	GRPCCodes  []string `yaml:"grpcCodes"`
	Budget     *budget  `yaml:"budget"`
	Backoff    string   `yaml:"backoff"`
}

type budget struct {
	Ratio        *float64 `yaml:"ratio"`
	MinPerSecond *float64 `yaml:"minPerSecond"`
	TTL          string   `yaml:"ttl"`
}

type failureAccrual struct {
	ConsecutiveFailures *int     `yaml:"consecutiveFailures"`
	MinBackoff          string   `yaml:"minBackoff"`
	MaxBackoff          string   `yaml:"maxBackoff"`
	Jitter              *float64 `yaml:"jitter"`
}

type limits struct {
	MaxRequestsPerEndpoint int `yaml:"maxRequestsPerEndpoint"`
}

type hashKey struct {
	Header   string `yaml:"header"`
	Cookie   string `yaml:"cookie"`
	SourceIP bool   `yaml:"sourceIP"`
}

type endpoint struct {
	Address  string `yaml:"address"`
	Weight   *int   `yaml:"weight"`
	Identity string `yaml:"identity"`
	Zone     string `yaml:"zone"`
}

// Error is a problem in a discovery file, with where it is.
type Error struct {
	File string
	Line int // 0 when unknown
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// MaxWeight bounds endpoint weights.
const MaxWeight = 10000

var (
	yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	dnsName  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$`)
)

// Parse reads a discovery file's services; name is used in errors.
func Parse(name string, data []byte) ([]discovery.Service, error) {
	services, _, err := ParseAll(name, data)
	return services, err
}

// ParseAll reads a discovery file's services and inbound policies; name
// is used in errors.
func ParseAll(name string, data []byte) ([]discovery.Service, []discovery.InboundPolicy, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, nil, yamlError(name, err)
	}
	var doc document
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, yamlError(name, err)
	}
	ps := &parser{root: &root, fail: func(line int, format string, args ...any) error {
		return &Error{File: name, Line: line, Msg: fmt.Sprintf(format, args...)}
	}}
	out := make([]discovery.Service, 0, len(doc.Services))
	seen := map[discovery.Key]int{}
	for i, s := range doc.Services {
		svc, err := ps.service(i, s)
		if err != nil {
			return nil, nil, err
		}
		if prev, dup := seen[svc.Key()]; dup {
			return nil, nil, ps.fail(ps.at("services", i, "name"), "service %s is listed twice (also services[%d])", svc.Key(), prev)
		}
		seen[svc.Key()] = i
		out = append(out, svc)
	}
	policies, err := ps.policies(doc.Policies)
	if err != nil {
		return nil, nil, err
	}
	return out, policies, nil
}

// parser checks a discovery file's services, naming the line of each
// problem.
type parser struct {
	root *yaml.Node
	fail func(line int, format string, args ...any) error
}

func (ps *parser) at(path ...any) int { return lineOf(ps.root, path...) }

// service checks services[i] and turns it into the discovery model.
func (ps *parser) service(i int, s service) (discovery.Service, error) {
	field := func(f string) string { return fmt.Sprintf("services[%d].%s", i, f) }
	at := func(path ...any) int { return ps.at(append([]any{"services", i}, path...)...) }
	name := strings.TrimSuffix(strings.ToLower(s.Name), ".")
	switch {
	case name == "":
		return discovery.Service{}, ps.fail(at(), "%s is required", field("name"))
	case !dnsName.MatchString(name):
		return discovery.Service{}, ps.fail(at("name"), "%s %q is not a DNS name", field("name"), s.Name)
	case s.Port < 1 || s.Port > 65535:
		return discovery.Service{}, ps.fail(at("port"), "%s must be 1-65535, got %d", field("port"), s.Port)
	}
	svc := discovery.Service{Name: name, Port: uint16(s.Port), Opaque: s.Opaque, LoadBalancer: discovery.LoadBalancer(s.LoadBalancer)}
	if svc.LoadBalancer == "" {
		svc.LoadBalancer = discovery.PeakEWMA
	}
	if !svc.LoadBalancer.Valid() {
		return svc, ps.fail(at("loadBalancer"), "%s %q is unknown; use one of %s", field("loadBalancer"), s.LoadBalancer, joinLB())
	}
	if err := ps.hashKey(&svc, s, at, field); err != nil {
		return svc, err
	}
	for j, a := range s.Addresses {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return svc, ps.fail(at("addresses", j), "%s %q is not an IP address", field(fmt.Sprintf("addresses[%d]", j)), a)
		}
		svc.Addresses = append(svc.Addresses, ip)
	}
	if err := ps.endpoints(&svc, i, s.Endpoints); err != nil {
		return svc, err
	}
	p := policy{at: at, field: field, fail: ps.fail}
	if err := p.apply(&svc, s); err != nil {
		return svc, err
	}
	if err := p.routes(&svc, s.Routes); err != nil {
		return svc, err
	}
	return svc, nil
}

// hashKey checks what a hashing balancer hashes on: exactly one key, for
// ring-hash and maglev only, and only the source IP for opaque TCP.
func (ps *parser) hashKey(svc *discovery.Service, s service, at func(...any) int, field func(string) string) error {
	if s.HashKey == nil {
		if svc.LoadBalancer.Hashing() {
			return ps.fail(at("loadBalancer"), "%s %s needs a hashKey (header, cookie or sourceIP)", field("loadBalancer"), svc.LoadBalancer)
		}
		return nil
	}
	svc.HashKey = discovery.HashKey{Header: s.HashKey.Header, Cookie: s.HashKey.Cookie, SourceIP: s.HashKey.SourceIP}
	set := 0
	for _, b := range []bool{svc.HashKey.Header != "", svc.HashKey.Cookie != "", svc.HashKey.SourceIP} {
		if b {
			set++
		}
	}
	switch {
	case set != 1:
		return ps.fail(at("hashKey"), "%s must set exactly one of header, cookie, sourceIP", field("hashKey"))
	case !svc.LoadBalancer.Hashing():
		return ps.fail(at("hashKey"), "%s is only used by ring-hash and maglev, but loadBalancer is %s", field("hashKey"), svc.LoadBalancer)
	case svc.Opaque && !svc.HashKey.SourceIP:
		return ps.fail(at("hashKey"), "%s: an opaque service can only hash on sourceIP", field("hashKey"))
	}
	return nil
}

// endpoints checks services[i]'s endpoints: IP:port, no duplicates, a
// weight in range, a SPIFFE identity.
func (ps *parser) endpoints(svc *discovery.Service, i int, eps []endpoint) error {
	addrs := map[netip.AddrPort]int{}
	for j, e := range eps {
		efield := func(f string) string { return fmt.Sprintf("services[%d].endpoints[%d].%s", i, j, f) }
		line := func(f string) int { return ps.at("services", i, "endpoints", j, f) }
		ap, err := netip.ParseAddrPort(e.Address)
		switch {
		case err != nil:
			return ps.fail(line("address"), "%s %q must be IP:port, such as 127.0.0.1:8080", efield("address"), e.Address)
		case ap.Port() == 0:
			return ps.fail(line("address"), "%s %q has port 0", efield("address"), e.Address)
		}
		if prev, dup := addrs[ap]; dup {
			return ps.fail(line("address"), "%s %s is listed twice (also endpoints[%d])", efield("address"), ap, prev)
		}
		addrs[ap] = j
		ep := discovery.Endpoint{Address: ap, Weight: 1, Identity: e.Identity, Zone: e.Zone}
		if e.Weight != nil {
			if *e.Weight < 1 || *e.Weight > MaxWeight {
				return ps.fail(line("weight"), "%s must be 1-%d, got %d", efield("weight"), MaxWeight, *e.Weight)
			}
			ep.Weight = uint32(*e.Weight)
		}
		if e.Identity != "" && !strings.HasPrefix(e.Identity, "spiffe://") {
			return ps.fail(line("identity"), "%s %q must be a SPIFFE ID (spiffe://trust-domain/ns/NS/sa/SA)", efield("identity"), e.Identity)
		}
		svc.Endpoints = append(svc.Endpoints, ep)
	}
	return nil
}

func joinLB() string {
	names := make([]string, len(discovery.LoadBalancers))
	for i, lb := range discovery.LoadBalancers {
		names[i] = string(lb)
	}
	return strings.Join(names, ", ")
}

// yamlError turns a yaml error ("yaml: line 3: ...") into an *Error.
func yamlError(name string, err error) error {
	var te *yaml.TypeError
	msg := err.Error()
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: name, Line: line, Msg: m[2]}
	}
	return &Error{File: name, Msg: msg}
}

// lineOf finds the line of the node at path (map keys and sequence
// indexes) in a parsed document, or of the nearest ancestor that exists.
func lineOf(root *yaml.Node, path ...any) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, p := range path {
		var next *yaml.Node
		switch key := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == key {
						next = n.Content[i+1]
						break
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && key < len(n.Content) {
				next = n.Content[key]
			}
		}
		if next == nil {
			return line
		}
		n, line = next, next.Line
	}
	return line
}
