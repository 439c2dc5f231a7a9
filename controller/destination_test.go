package controller

import (
	"strings"
	"testing"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/wellknown"
)

func TestServiceSettings(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		lb      discovery.LoadBalancer
		hash    discovery.HashKey
		opaque  []int32
		problem string
	}{
		{name: "defaults", lb: discovery.PeakEWMA},
		{name: "round robin", ann: map[string]string{wellknown.AnnotationLoadBalancer: "round-robin"}, lb: discovery.RoundRobin},
		{name: "ring hash on a header", ann: map[string]string{wellknown.AnnotationLoadBalancer: "ring-hash", wellknown.AnnotationHashKey: "header:x-user"},
			lb: discovery.RingHash, hash: discovery.HashKey{Header: "x-user"}},
		{name: "maglev on a cookie", ann: map[string]string{wellknown.AnnotationLoadBalancer: "maglev", wellknown.AnnotationHashKey: "cookie:session"},
			lb: discovery.Maglev, hash: discovery.HashKey{Cookie: "session"}},
		{name: "hashing defaults to the source IP", ann: map[string]string{wellknown.AnnotationLoadBalancer: "ring-hash"},
			lb: discovery.RingHash, hash: discovery.HashKey{SourceIP: true}},
		{name: "unknown balancer", ann: map[string]string{wellknown.AnnotationLoadBalancer: "fastest"}, lb: discovery.PeakEWMA,
			problem: `mesh.io/load-balancer: unknown balancer "fastest"`},
		{name: "bad hash key", ann: map[string]string{wellknown.AnnotationLoadBalancer: "ring-hash", wellknown.AnnotationHashKey: "header"},
			lb: discovery.RingHash, hash: discovery.HashKey{SourceIP: true}, problem: `"header" is not header:<name>`},
		{name: "hash key without hashing", ann: map[string]string{wellknown.AnnotationHashKey: "source-ip"}, lb: discovery.PeakEWMA,
			problem: "only used by ring-hash and maglev"},
		{name: "opaque ports", ann: map[string]string{wellknown.AnnotationOpaquePorts: "3306, 25,x"}, lb: discovery.PeakEWMA,
			opaque: []int32{3306, 25}, problem: `"x" is not a port`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lb, hash, opaque, problems := serviceSettings(tc.ann)
			if lb != tc.lb || hash != tc.hash {
				t.Errorf("got %s %+v; want %s %+v", lb, hash, tc.lb, tc.hash)
			}
			if len(opaque) != len(tc.opaque) {
				t.Errorf("opaque ports %v; want %v", opaque, tc.opaque)
			}
			for _, p := range tc.opaque {
				if !opaque[p] {
					t.Errorf("port %d not opaque", p)
				}
			}
			said := strings.Join(problems, "; ")
			if (tc.problem == "") != (said == "") || !strings.Contains(said, tc.problem) {
				t.Errorf("problems %q; want one with %q", said, tc.problem)
			}
		})
	}
}
