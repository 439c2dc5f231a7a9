package file

import (
	"fmt"
	"strings"
	"time"

	"github.com/meshproj/mesh/discovery"
)

// policy validates and converts one service's failure-handling settings.
type policy struct {
	at    func(path ...any) int
	field func(string) string
	fail  func(line int, format string, args ...any) error
}

func (p policy) duration(value string, path ...any) (time.Duration, error) {
	if value == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(value)
	if err != nil || d <= 0 {
		name := make([]string, len(path))
		for i, s := range path {
			name[i] = fmt.Sprint(s)
		}
		return 0, p.fail(p.at(path...), "%s %q must be a positive duration such as 500ms or 2s", p.field(strings.Join(name, ".")), value)
	}
	return d, nil
}

func (p policy) apply(svc *discovery.Service, s service) error {
	var err error
	if svc.QueueTimeout, err = p.duration(s.QueueTimeout, "queueTimeout"); err != nil {
		return err
	}
	if s.Timeouts != nil {
		if svc.Timeouts, err = p.timeouts(s.Timeouts); err != nil {
			return err
		}
	}
	if s.Limits != nil {
		if s.Limits.MaxRequestsPerEndpoint < 0 {
			return p.fail(p.at("limits", "maxRequestsPerEndpoint"), "%s must not be negative", p.field("limits.maxRequestsPerEndpoint"))
		}
		svc.Limits.MaxRequestsPerEndpoint = s.Limits.MaxRequestsPerEndpoint
	}
	if s.Retries != nil {
		if err := p.retries(svc, s.Retries); err != nil {
			return err
		}
	}
	if s.FailureAccrual != nil {
		if err := p.accrual(svc, s.FailureAccrual); err != nil {
			return err
		}
	}
	return nil
}

func (p policy) retries(svc *discovery.Service, r *retries) error {
	def := discovery.DefaultRetries()
	out := &def
	if r.MaxRetries != nil {
		if *r.MaxRetries < 0 || *r.MaxRetries > 10 {
			return p.fail(p.at("retries", "maxRetries"), "%s must be 0-10, got %d", p.field("retries.maxRetries"), *r.MaxRetries)
		}
		out.MaxRetries = *r.MaxRetries
	}
	for j, st := range r.Statuses {
		rng, ok := discovery.ParseStatusRange(st)
		if !ok {
			return p.fail(p.at("retries", "statuses", j), "%s %q must be a status (503), a class (5xx) or a range (500-504) within 100-599", p.field(fmt.Sprintf("retries.statuses[%d]", j)), st)
		}
		out.Statuses = append(out.Statuses, rng)
	}
	for j, c := range r.GRPCCodes {
		code, ok := discovery.ParseGRPCCode(c)
		if !ok {
			return p.fail(p.at("retries", "grpcCodes", j), "%s %q is not a gRPC error code (such as UNAVAILABLE or 14)", p.field(fmt.Sprintf("retries.grpcCodes[%d]", j)), c)
		}
		out.GRPCCodes = append(out.GRPCCodes, code)
	}
	if b := r.Budget; b != nil {
		if b.Ratio != nil {
			if *b.Ratio < 0 || *b.Ratio > 1 {
				return p.fail(p.at("retries", "budget", "ratio"), "%s must be between 0 and 1, got %v", p.field("retries.budget.ratio"), *b.Ratio)
			}
			out.BudgetRatio = *b.Ratio
		}
		if b.MinPerSecond != nil {
			if *b.MinPerSecond < 0 {
				return p.fail(p.at("retries", "budget", "minPerSecond"), "%s must not be negative", p.field("retries.budget.minPerSecond"))
			}
			out.BudgetMinPerSecond = *b.MinPerSecond
		}
		ttl, err := p.duration(b.TTL, "retries", "budget", "ttl")
		if err != nil {
			return err
		}
		if ttl > 0 {
			out.BudgetTTL = ttl
		}
	}
	var err error
	if out.Backoff, err = p.duration(r.Backoff, "retries", "backoff"); err != nil {
		return err
	}
	svc.Retries = out
	return nil
}

// timeouts reads a service's or a route's timeouts.
func (p policy) timeouts(t *timeouts) (discovery.Timeouts, error) {
	var out discovery.Timeouts
	var err error
	if out.Request, err = p.duration(t.Request, "timeouts", "request"); err != nil {
		return out, err
	}
	if out.Attempt, err = p.duration(t.BackendRequest, "timeouts", "backendRequest"); err != nil {
		return out, err
	}
	if out.Request > 0 && out.Attempt > out.Request {
		return out, p.fail(p.at("timeouts", "backendRequest"), "%s %s is longer than %s %s", p.field("timeouts.backendRequest"), out.Attempt, p.field("timeouts.request"), out.Request)
	}
	return out, nil
}

func (p policy) accrual(svc *discovery.Service, a *failureAccrual) error {
	def := discovery.DefaultFailureAccrual()
	out := &def
	if a.ConsecutiveFailures != nil {
		if *a.ConsecutiveFailures < 0 {
			return p.fail(p.at("failureAccrual", "consecutiveFailures"), "%s must not be negative (0 disables)", p.field("failureAccrual.consecutiveFailures"))
		}
		out.ConsecutiveFailures = *a.ConsecutiveFailures
	}
	if d, e := p.duration(a.MinBackoff, "failureAccrual", "minBackoff"); e != nil {
		return e
	} else if d > 0 {
		out.MinBackoff = d
	}
	if d, e := p.duration(a.MaxBackoff, "failureAccrual", "maxBackoff"); e != nil {
		return e
	} else if d > 0 {
		out.MaxBackoff = d
	}
	if out.MaxBackoff < out.MinBackoff {
		return p.fail(p.at("failureAccrual", "maxBackoff"), "%s %s is shorter than minBackoff %s", p.field("failureAccrual.maxBackoff"), out.MaxBackoff, out.MinBackoff)
	}
	if a.Jitter != nil {
		if *a.Jitter < 0 || *a.Jitter >= 1 {
			return p.fail(p.at("failureAccrual", "jitter"), "%s must be at least 0 and below 1, got %v", p.field("failureAccrual.jitter"), *a.Jitter)
		}
		out.Jitter = *a.Jitter
	}
	svc.FailureAccrual = out
	return nil
}
