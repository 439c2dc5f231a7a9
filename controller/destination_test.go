package controller

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

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

func TestFailureAnnotations(t *testing.T) {
	defRetries, defAccrual := discovery.DefaultRetries(), discovery.DefaultFailureAccrual()
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		want    failureHandling
		problem string
	}{
		{name: "none: the proxy's defaults"},
		{name: "a request timeout", ann: map[string]string{wellknown.AnnotationRequestTimeout: "2s"},
			want: failureHandling{timeouts: discovery.Timeouts{Request: 2 * time.Second}}},
		{name: "retries of 5xx and unavailable, with a budget", ann: map[string]string{
			wellknown.AnnotationRetryHTTP: "5xx, 429", wellknown.AnnotationRetryGRPC: "unavailable,deadline-exceeded", wellknown.AnnotationRetryLimit: "3",
			wellknown.AnnotationRetryBudgetRatio: "0.1", wellknown.AnnotationRetryBudgetMinPerSecond: "2", wellknown.AnnotationRetryBudgetTTL: "30s"},
			want: failureHandling{retries: &discovery.Retries{MaxRetries: 3, Statuses: []discovery.StatusRange{{Min: 500, Max: 599}, {Min: 429, Max: 429}},
				GRPCCodes: []uint32{14, 4}, BudgetRatio: 0.1, BudgetMinPerSecond: 2, BudgetTTL: 30 * time.Second}}},
		{name: "a bad status is left out, the others kept", ann: map[string]string{wellknown.AnnotationRetryHTTP: "503,6xx"},
			want:    failureHandling{retries: &discovery.Retries{MaxRetries: defRetries.MaxRetries, Statuses: []discovery.StatusRange{{Min: 503, Max: 503}}, BudgetRatio: 0.2, BudgetMinPerSecond: 10, BudgetTTL: 10 * time.Second}},
			problem: `retry.mesh.io/http: "503,6xx" has "6xx"`},
		{name: "failure accrual tuned", ann: map[string]string{wellknown.AnnotationFailureAccrualMaxFailures: "3",
			wellknown.AnnotationFailureAccrualMinPenalty: "500ms", wellknown.AnnotationFailureAccrualMaxPenalty: "10s", wellknown.AnnotationFailureAccrualJitterRatio: "0"},
			want: failureHandling{accrual: &discovery.FailureAccrual{ConsecutiveFailures: 3, MinBackoff: 500 * time.Millisecond, MaxBackoff: 10 * time.Second}}},
		{name: "failure accrual disabled", ann: map[string]string{wellknown.AnnotationFailureAccrual: "disabled"},
			want: failureHandling{accrual: &discovery.FailureAccrual{MinBackoff: defAccrual.MinBackoff, MaxBackoff: defAccrual.MaxBackoff, Jitter: defAccrual.Jitter}}},
		{name: "penalties the wrong way round", ann: map[string]string{wellknown.AnnotationFailureAccrualMinPenalty: "2m"},
			want:    failureHandling{accrual: &discovery.FailureAccrual{ConsecutiveFailures: 7, MinBackoff: 2 * time.Minute, MaxBackoff: 2 * time.Minute, Jitter: 0.5}},
			problem: "is shorter than"},
		{name: "a limit per endpoint", ann: map[string]string{wellknown.AnnotationMaxRequestsPerEndpoint: "50"},
			want: failureHandling{limits: discovery.Limits{MaxRequestsPerEndpoint: 50}}},
		{name: "bad values, each named", ann: map[string]string{wellknown.AnnotationRequestTimeout: "soon", wellknown.AnnotationRetryLimit: "20",
			wellknown.AnnotationFailureAccrual: "sometimes", wellknown.AnnotationMaxRequestsPerEndpoint: "-1"},
			want:    failureHandling{retries: &defRetries, accrual: &defAccrual},
			problem: `timeout.mesh.io/request: "soon" is not a positive duration`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, problems := failureAnnotations(tc.ann)
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(failureHandling{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			said := strings.Join(problems, "; ")
			if (tc.problem == "") != (said == "") || !strings.Contains(said, tc.problem) {
				t.Errorf("problems %q; want one with %q", said, tc.problem)
			}
			if tc.name == "bad values, each named" {
				for _, key := range []string{wellknown.AnnotationRequestTimeout, wellknown.AnnotationRetryLimit, wellknown.AnnotationFailureAccrual, wellknown.AnnotationMaxRequestsPerEndpoint} {
					if !strings.Contains(said, key) {
						t.Errorf("the problem with %s is not reported: %s", key, said)
					}
				}
			}
		})
	}
}
