package file

import (
	"strings"
	"testing"
	"time"

	"github.com/meshproj/mesh/discovery"
)

func TestParseFailureHandling(t *testing.T) {
	in := `services:
  - name: web
    port: 80
    queueTimeout: 250ms
    timeouts: {request: 2s}
    retries:
      maxRetries: 3
      statuses: [5xx, 429, 500-504]
      grpcCodes: [UNAVAILABLE, 4]
      budget: {ratio: 0.1, minPerSecond: 5, ttl: 30s}
    failureAccrual: {consecutiveFailures: 5, minBackoff: 500ms, maxBackoff: 30s, jitter: 0.2}
    limits: {maxRequestsPerEndpoint: 50}
`
	svcs, err := Parse("d.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	s := svcs[0]
	if s.QueueTimeout != 250*time.Millisecond || s.Timeouts.Request != 2*time.Second || s.Limits.MaxRequestsPerEndpoint != 50 {
		t.Errorf("timeouts/limits: %+v", s)
	}
	r := s.Retries
	want := []discovery.StatusRange{{Min: 500, Max: 599}, {Min: 429, Max: 429}, {Min: 500, Max: 504}}
	if r.MaxRetries != 3 || len(r.Statuses) != 3 || r.Statuses[0] != want[0] || r.Statuses[1] != want[1] || r.Statuses[2] != want[2] {
		t.Errorf("retries: %+v", r)
	}
	if len(r.GRPCCodes) != 2 || r.GRPCCodes[0] != 14 || r.GRPCCodes[1] != 4 {
		t.Errorf("grpc codes: %v", r.GRPCCodes)
	}
	if r.BudgetRatio != 0.1 || r.BudgetMinPerSecond != 5 || r.BudgetTTL != 30*time.Second {
		t.Errorf("budget: %+v", r)
	}
	if a := s.FailureAccrual; a.ConsecutiveFailures != 5 || a.MinBackoff != 500*time.Millisecond || a.MaxBackoff != 30*time.Second || a.Jitter != 0.2 {
		t.Errorf("accrual: %+v", a)
	}
}

func TestParseFailureHandlingDefaults(t *testing.T) {
	svcs, err := Parse("d.yaml", []byte("services:\n  - name: web\n    port: 80\n    retries: {statuses: [503]}\n    failureAccrual: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	r, a := svcs[0].Retries, svcs[0].FailureAccrual
	if r.MaxRetries != discovery.DefaultMaxRetries || r.BudgetRatio != 0.2 || r.BudgetMinPerSecond != 10 || r.BudgetTTL != 10*time.Second {
		t.Errorf("retry defaults: %+v", r)
	}
	if a.ConsecutiveFailures != 7 || a.MinBackoff != time.Second || a.MaxBackoff != time.Minute {
		t.Errorf("accrual defaults: %+v", a)
	}
}

func TestParseFailureHandlingErrors(t *testing.T) {
	base := "services:\n  - name: web\n    port: 80\n"
	tests := []struct{ in, want string }{
		{"    timeouts: {request: soon}\n", "d.yaml:4: services[0].timeouts.request \"soon\" must be a positive duration"},
		{"    queueTimeout: -1s\n", "d.yaml:4: services[0].queueTimeout \"-1s\" must be a positive duration"},
		{"    retries:\n      statuses: [5xx, 600]\n", "d.yaml:5: services[0].retries.statuses[1] \"600\" must be a status"},
		{"    retries:\n      grpcCodes: [SLOW]\n", "d.yaml:5: services[0].retries.grpcCodes[0] \"SLOW\" is not a gRPC error code"},
		{"    retries:\n      maxRetries: 50\n", "d.yaml:5: services[0].retries.maxRetries must be 0-10"},
		{"    retries:\n      budget: {ratio: 2}\n", "d.yaml:5: services[0].retries.budget.ratio must be between 0 and 1"},
		{"    failureAccrual:\n      minBackoff: 10s\n      maxBackoff: 1s\n", "d.yaml:6: services[0].failureAccrual.maxBackoff 1s is shorter than minBackoff 10s"},
		{"    failureAccrual:\n      jitter: 1.5\n", "d.yaml:5: services[0].failureAccrual.jitter must be at least 0 and below 1"},
		{"    limits: {maxRequestsPerEndpoint: -1}\n", "d.yaml:4: services[0].limits.maxRequestsPerEndpoint must not be negative"},
		{"    retries: {retryOn: 5xx}\n", "field retryOn not found"},
	}
	for _, tt := range tests {
		_, err := Parse("d.yaml", []byte(base+tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q:\n got %v\nwant %q", tt.in, err, tt.want)
		}
	}
}
