package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/proxy/balance"
	"github.com/meshproj/mesh/proxy/retry"
)

// This file is where outbound requests meet failure: they are balanced,
// bounded by timeouts, retried within the service's budget, shed when
// endpoints are at their limits, and failed fast when no endpoint is left.

// policy is a service's failure handling, prepared for the request path.
type policy struct {
	budget         *retry.Budget
	maxRetries     int
	statuses       []discovery.StatusRange
	grpcCodes      []string
	requestTimeout time.Duration
	queueTimeout   time.Duration
	maxPerEndpoint int64
}

// newPolicy prepares a service's settings. The retry budget carries over
// from prev when its settings did not change, so an unrelated discovery
// update does not refill it.
func newPolicy(s *discovery.Service, prev *policy) *policy {
	p := &policy{
		maxRetries:     discovery.DefaultMaxRetries,
		requestTimeout: s.Timeouts.Request,
		queueTimeout:   s.QueueTimeout,
		maxPerEndpoint: int64(s.Limits.MaxRequestsPerEndpoint),
	}
	if p.queueTimeout == 0 {
		p.queueTimeout = discovery.DefaultQueueTimeout
	}
	cfg := retry.DefaultBudget
	if r := s.Retries; r != nil {
		p.maxRetries, p.statuses = r.MaxRetries, r.Statuses
		for _, c := range r.GRPCCodes {
			p.grpcCodes = append(p.grpcCodes, strconv.Itoa(int(c)))
		}
		cfg = retry.BudgetConfig{Ratio: r.BudgetRatio, MinPerSecond: r.BudgetMinPerSecond, TTL: r.BudgetTTL}
	}
	if prev != nil && prev.budget.Config() == cfg {
		p.budget = prev.budget
	} else {
		p.budget = retry.NewBudget(cfg)
	}
	return p
}

func accrualOf(s *discovery.Service) balance.Accrual {
	a := s.FailureAccrual
	if a == nil {
		return balance.DefaultAccrual
	}
	return balance.Accrual{Failures: a.ConsecutiveFailures, MinBackoff: a.MinBackoff, MaxBackoff: a.MaxBackoff, Jitter: a.Jitter}
}

// endpointEvent reports failure accrual changes in metrics and logs.
func (p *Proxy) endpointEvent(authority string) func(balance.Event) {
	return func(ev balance.Event) {
		addr := ev.Endpoint.Addr
		switch ev.State {
		case balance.Ejected:
			p.metrics.EndpointEjections.WithLabelValues(authority, addr).Inc()
			p.metrics.EndpointsEjectedGauge.WithLabelValues(authority, addr).Set(1)
			p.log.Warn("endpoint ejected after consecutive failures", slog.String("authority", authority),
				slog.String("endpoint", addr), slog.Duration("probe_in", ev.Backoff.Round(time.Millisecond)))
		case balance.Probation:
			p.metrics.EndpointsEjectedGauge.WithLabelValues(authority, addr).Set(0)
			p.log.Info("ejected endpoint on probation", slog.String("authority", authority), slog.String("endpoint", addr))
		case balance.Active:
			p.metrics.EndpointRestorations.WithLabelValues(authority, addr).Inc()
			p.log.Info("endpoint restored", slog.String("authority", authority), slog.String("endpoint", addr))
		}
	}
}

// balancingTransport sends a service's requests to the endpoints its
// balancer picks, with the service's failure handling.
type balancingTransport struct {
	p   *Proxy
	svc *service
}

// maxTries is how many endpoints one request remembers having tried.
const maxTries = 4

var errRequestTimeout = errors.New("request timeout")

func (t *balancingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	p, svc := t.p, t.svc
	pol := svc.policy.Load()
	pol.budget.Deposit()

	timeout, source := pol.requestTimeout, "timeouts.request"
	if g, ok := grpcTimeout(req.Header.Get("Grpc-Timeout")); ok && (timeout == 0 || g < timeout) {
		timeout, source = g, "grpc-timeout"
	}
	clientCtx := req.Context()
	ctx := clientCtx
	finish := func() {}
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(clientCtx)
		timer := time.AfterFunc(timeout, func() { cancel(errRequestTimeout) })
		finish = func() { timer.Stop(); cancel(nil) }
		req = req.WithContext(ctx)
	}
	var body *retry.Body
	if pol.maxRetries > 0 && req.Body != nil && req.Body != http.NoBody {
		body = retry.NewBody(req.Body, discovery.DefaultBodyLimit)
		req.Body = body.Attempt()
	}
	timedOut := func(ep *balance.Endpoint) (*http.Response, error) {
		finish()
		if ep != nil {
			svc.balancer.Report(ep, false)
		}
		p.metrics.RequestTimeouts.WithLabelValues(outbound.String(), svc.authority).Inc()
		p.window.record(outbound, svc.authority, "", timeout, false)
		p.metrics.ResponseTotal.WithLabelValues(outbound.String(), svc.authority, "", "false", "", "", "504", "failure").Inc()
		return nil, &proxyError{status: http.StatusGatewayTimeout, reason: "request_timeout",
			msg: fmt.Sprintf("request to %s timed out after %s (%s)", svc.authority, timeout, source)}
	}

	var tried [maxTries]*balance.Endpoint
	ntried := 0
	for attempt := 0; ; attempt++ {
		ep, err := t.pick(ctx, req, pol, tried[:ntried])
		if err != nil {
			if context.Cause(ctx) == errRequestTimeout {
				return timedOut(nil)
			}
			finish()
			return nil, err
		}
		if ntried < maxTries {
			tried[ntried] = ep
			ntried++
		}
		out := req
		if attempt > 0 {
			out = req.Clone(ctx)
			if body != nil {
				out.Body = body.Attempt()
			}
		}
		out.URL.Host = ep.Addr
		var tr http.RoundTripper = p.transports.pick(out)
		var pr peer
		if p.cfg.Identity != nil && ep.Identity != "" {
			tr, pr = p.meshTransport(out), peer{tls: true, serverID: ep.Identity}
		}
		resp, err := p.roundTrip(out, tr, outbound, svc.authority, ep.Addr, ep, svc.balancer, pr)
		// An upstream that gives up at the deadline (a gRPC server honours
		// grpc-timeout too) reports the same timeout as the proxy's timer.
		atDeadline := err != nil && timeout > 0 && time.Until(deadline) < timeout/50
		if context.Cause(ctx) == errRequestTimeout || atDeadline {
			if resp != nil {
				resp.Body.Close()
			}
			if err != nil {
				return timedOut(nil) // roundTrip already reported the failure
			}
			return timedOut(ep)
		}
		reason := retryReason(out, resp, err, pol)
		retry := reason != "" && attempt < pol.maxRetries && clientCtx.Err() == nil &&
			(body == nil || body.Replayable())
		if retry && !pol.budget.Withdraw() {
			p.metrics.RetryBudgetExhausted.WithLabelValues(outbound.String(), svc.authority).Inc()
			retry = false
		}
		if !retry {
			if err != nil {
				finish()
				return nil, err
			}
			onDone(resp, finish)
			return resp, nil
		}
		p.metrics.RetryTotal.WithLabelValues(outbound.String(), svc.authority, reason).Inc()
		if resp != nil {
			// Read a little so that the connection can be reused.
			io.CopyN(io.Discard, resp.Body, 4<<10)
			resp.Body.Close()
		}
	}
}

// onDone arranges for f to run when the response body is finished.
func onDone(resp *http.Response, f func()) {
	switch b := resp.Body.(type) {
	case *trackedBody:
		b.onDone = f
	case *trackedRWBody:
		b.onDone = f
	default:
		f()
	}
}

// pick chooses an endpoint, preferring ones this request has not tried
// and skipping ones at their concurrency limit. With no endpoint available
// it waits up to the queue timeout for one to appear, then fails fast.
func (t *balancingTransport) pick(ctx context.Context, req *http.Request, pol *policy, tried []*balance.Endpoint) (*balance.Endpoint, error) {
	svc := t.svc
	bal := svc.balancer
	var hash uint64
	if bal.Algorithm().Hashing() {
		hash = requestHash(svc.settings.Load().HashKey, req)
	}
	var timer *time.Timer
	for {
		changed := bal.Changed()
		var ep, fallback *balance.Endpoint
		shed := false
		for try := range 3 {
			if try > 0 && bal.Algorithm().Hashing() {
				hash = rand.Uint64() // the key's endpoint was tried or full: spread
			}
			e := bal.Pick(hash)
			if e == nil {
				break
			}
			if pol.maxPerEndpoint > 0 && e.Pending() >= pol.maxPerEndpoint {
				shed = true
				continue
			}
			if slices.Contains(tried, e) {
				fallback = e
				continue
			}
			ep = e
			break
		}
		if ep == nil && fallback != nil {
			// Random picks kept landing on endpoints already tried: look
			// for one that was not, before trying one again.
			ep = fallback
			for _, e := range bal.Endpoints() {
				if e.State() != balance.Ejected && !slices.Contains(tried, e) &&
					(pol.maxPerEndpoint == 0 || e.Pending() < pol.maxPerEndpoint) {
					ep = e
					break
				}
			}
		}
		if ep != nil {
			return ep, nil
		}
		if shed {
			t.p.metrics.LoadShed.WithLabelValues(outbound.String(), svc.authority).Inc()
			t.p.window.record(outbound, svc.authority, "", 0, false)
			t.p.metrics.ResponseTotal.WithLabelValues(outbound.String(), svc.authority, "", "false", "", "", "503", "failure").Inc()
			return nil, &proxyError{status: http.StatusServiceUnavailable, reason: "load_shed",
				msg: fmt.Sprintf("endpoints of %s are at their limit of %d requests in flight", svc.authority, pol.maxPerEndpoint)}
		}
		if timer == nil {
			timer = time.NewTimer(pol.queueTimeout)
			defer timer.Stop()
		}
		select {
		case <-changed:
			continue
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
		}
		t.p.metrics.ResponseTotal.WithLabelValues(outbound.String(), svc.authority, "", "false", "", "", "503", "failure").Inc()
		t.p.window.record(outbound, svc.authority, "", pol.queueTimeout, false)
		msg := fmt.Sprintf("service %s has no endpoints", svc.authority)
		if n := len(bal.Endpoints()); n > 0 {
			msg = fmt.Sprintf("service %s has no available endpoints: all %d are ejected after consecutive failures", svc.authority, n)
		}
		return nil, &proxyError{status: http.StatusServiceUnavailable, reason: "no_endpoints", msg: msg + fmt.Sprintf(" (waited %s)", pol.queueTimeout)}
	}
}

// retryReason says why an attempt may be retried, or "" if it may not.
// A connection that failed to open carried nothing, so any request may go
// again; after that only requests that are safe to repeat may.
func retryReason(req *http.Request, resp *http.Response, err error, pol *policy) string {
	if err != nil {
		var pe *proxyError
		if errors.As(err, &pe) && (pe.reason == "connect_failed" || pe.reason == "connect_timeout") {
			return "connect_failed"
		}
		if idempotent(req.Method) && !(errors.As(err, &pe) && pe.reason == "client_canceled") {
			return "error"
		}
		return ""
	}
	if len(pol.grpcCodes) > 0 && isGRPC(req) {
		if code := resp.Header.Get("Grpc-Status"); code != "" && slices.Contains(pol.grpcCodes, code) {
			return "grpc_status"
		}
		return ""
	}
	if idempotent(req.Method) {
		for _, r := range pol.statuses {
			if r.Contains(resp.StatusCode) {
				return "status"
			}
		}
	}
	return ""
}

// idempotent reports whether repeating a request with this method has the
// same effect as sending it once (RFC 9110, section 9.2.2).
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

func isGRPC(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return len(ct) >= 16 && ct[:16] == "application/grpc"
}

// grpcTimeout parses a grpc-timeout header: up to 8 digits and a unit.
func grpcTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseUint(v[:len(v)-1], 10, 64)
	if err != nil {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	return time.Duration(n) * unit, true
}
