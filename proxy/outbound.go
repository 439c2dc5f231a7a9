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
	"github.com/meshproj/mesh/proxy/metrics"
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
	attemptTimeout time.Duration
	backoff        time.Duration
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
		attemptTimeout: s.Timeouts.Attempt,
		queueTimeout:   s.QueueTimeout,
		maxPerEndpoint: int64(s.Limits.MaxRequestsPerEndpoint),
	}
	if p.queueTimeout == 0 {
		p.queueTimeout = discovery.DefaultQueueTimeout
	}
	cfg := retry.DefaultBudget
	if r := s.Retries; r != nil {
		p.maxRetries, p.statuses, p.backoff = r.MaxRetries, r.Statuses, r.Backoff
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

var (
	errRequestTimeout = errors.New("request timeout")
	errAttemptTimeout = errors.New("attempt timeout")
)

func (t *balancingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ro := routeOf(req.Context())
	pol := ro.with(t.svc.policy.Load())
	pol.budget.Deposit()
	x := exchange{t: t, pol: pol, route: ro, clientCtx: req.Context()}
	req = x.start(req)

	var tried [maxTries]*balance.Endpoint
	ntried := 0
	canProbe := x.mayProbe(req)
	for attempt := 0; ; attempt++ {
		ep, err := t.pick(x.ctx, req, pol, tried[:ntried], canProbe)
		if err != nil {
			if context.Cause(x.ctx) == errRequestTimeout {
				return x.timedOut(nil)
			}
			x.finish()
			return nil, err
		}
		if ntried < maxTries {
			tried[ntried] = ep
			ntried++
		}
		probing := canProbe && ep.State() == balance.Probation
		out := req
		if attempt > 0 {
			out = req.Clone(x.ctx)
			if x.body != nil {
				out.Body = x.body.Attempt()
			}
		}
		out, release := x.attempt(out)
		resp, err := x.send(out, ep)
		attemptTimedOut := release()
		// An upstream that gives up at the deadline (a gRPC server honours
		// grpc-timeout too) reports the same timeout as the proxy's timer.
		atDeadline := err != nil && x.timeout > 0 && time.Until(x.deadline) < x.timeout/50
		if context.Cause(x.ctx) == errRequestTimeout || atDeadline {
			if resp != nil {
				resp.Body.Close()
			}
			if err != nil {
				return x.timedOut(nil) // roundTrip already reported the failure
			}
			return x.timedOut(ep)
		}
		reason := retryReason(out, resp, err, pol)
		if attemptTimedOut {
			if resp != nil { // the headers came as the timer fired: too late
				resp.Body.Close()
				resp = nil
			}
			t.svc.balancer.Report(ep, false) // slow is failing, for failure accrual
			t.p.metrics.RequestTimeouts.WithLabelValues(outbound.String(), t.svc.authority).Inc()
			err = &proxyError{status: http.StatusGatewayTimeout, reason: "attempt_timeout",
				msg: fmt.Sprintf("request to %s: an attempt timed out after %s (%s)", t.svc.authority, pol.attemptTimeout, x.attemptSource())}
			reason = ""
			if idempotent(out.Method) {
				reason = "attempt_timeout"
			}
		}
		if reason == "" && probing && (err != nil || endpointFailed(resp.StatusCode, resp.Header.Get("Grpc-Status"))) {
			// The endpoint's probe failed: that is the proxy's experiment,
			// not the client's problem.
			reason = "probe_failed"
		}
		if !x.mayRetry(reason, attempt) {
			if err != nil {
				x.finish()
				return nil, err
			}
			onDone(resp, x.finish)
			return resp, nil
		}
		t.p.metrics.RetryTotal.WithLabelValues(outbound.String(), t.svc.authority, reason).Inc()
		if resp != nil {
			// Read a little so that the connection can be reused.
			io.CopyN(io.Discard, resp.Body, 4<<10)
			resp.Body.Close()
		}
		if pol.backoff > 0 {
			select {
			case <-time.After(pol.backoff):
			case <-x.ctx.Done():
			}
		}
	}
}

// attempt bounds one attempt by the attempt timeout, when there is one:
// release, called once the response headers are in, stops the timer and
// reports whether it fired. The attempt's context lives on with the
// response body, until the exchange finishes.
func (x *exchange) attempt(out *http.Request) (*http.Request, func() bool) {
	d := x.pol.attemptTimeout
	if d <= 0 || x.timeout > 0 && d >= x.timeout {
		return out, func() bool { return false }
	}
	ctx, cancel := context.WithCancelCause(out.Context())
	timer := time.AfterFunc(d, func() { cancel(errAttemptTimeout) })
	finish := x.finish
	x.finish = func() { cancel(nil); finish() }
	return out.WithContext(ctx), func() bool {
		if timer.Stop() {
			return false
		}
		return context.Cause(ctx) == errAttemptTimeout
	}
}

// attemptSource is what set the attempt timeout, for the error message.
func (x *exchange) attemptSource() string {
	if x.route != nil && x.route.override != nil && x.route.override.attemptTimeout > 0 {
		return "timeouts.backendRequest of route " + x.route.name
	}
	return "timeouts.backendRequest"
}

// exchange is one request's way through its attempts: its timeout, and
// the replayable body that lets it be retried.
type exchange struct {
	t         *balancingTransport
	pol       *policy
	route     *route // the route the request was sent by, or nil
	clientCtx context.Context
	// ctx is clientCtx, cancelled at the request timeout when there is one.
	ctx      context.Context
	timeout  time.Duration
	source   string // what set the timeout, for the error message
	deadline time.Time
	finish   func() // releases the timer; call once the response is done
	body     *retry.Body
}

// start sets the request's timeout (the service's, or a shorter
// grpc-timeout) and makes its body replayable when it may be retried.
func (x *exchange) start(req *http.Request) *http.Request {
	x.ctx, x.finish = x.clientCtx, func() {}
	x.timeout, x.source = x.pol.requestTimeout, "timeouts.request"
	if x.route != nil && x.route.timeout() {
		x.source = "timeouts.request of route " + x.route.name
	}
	if g, ok := grpcTimeout(req.Header.Get("Grpc-Timeout")); ok && (x.timeout == 0 || g < x.timeout) {
		x.timeout, x.source = g, "grpc-timeout"
	}
	if x.timeout > 0 {
		x.deadline = time.Now().Add(x.timeout)
		ctx, cancel := context.WithCancelCause(x.clientCtx)
		timer := time.AfterFunc(x.timeout, func() { cancel(errRequestTimeout) })
		x.ctx, x.finish = ctx, func() { timer.Stop(); cancel(nil) }
		req = req.WithContext(ctx)
	}
	if x.pol.maxRetries > 0 && req.Body != nil && req.Body != http.NoBody {
		x.body = retry.NewBody(req.Body, discovery.DefaultBodyLimit)
		req.Body = x.body.Attempt()
	}
	return req
}

// send makes one attempt at ep, over mTLS when ep has an identity.
func (x *exchange) send(out *http.Request, ep *balance.Endpoint) (*http.Response, error) {
	p := x.t.p
	out.URL.Host = ep.Addr
	var tr http.RoundTripper = p.transports.pick(out)
	var pr peer
	if p.cfg.Identity != nil && ep.Identity != "" {
		tr, pr = p.meshTransport(out), peer{tls: true, serverID: ep.Identity}
	}
	return p.roundTrip(out, tr, outbound, x.t.svc.authority, ep.Addr, ep, x.t.svc.balancer, pr)
}

// mayProbe says whether the request may be an ejected endpoint's probe:
// one that can be retried elsewhere if the endpoint is still failing.
func (x *exchange) mayProbe(req *http.Request) bool {
	return x.pol.maxRetries > 0 && idempotent(req.Method) && (req.Body == nil || req.Body == http.NoBody || x.body != nil)
}

// mayRetry says whether an attempt that failed for reason (empty: it did
// not) is tried again: within the service's retries and retry budget, for a
// client still waiting, with a body that can be sent again.
func (x *exchange) mayRetry(reason string, attempt int) bool {
	if reason == "" || attempt >= x.pol.maxRetries || x.clientCtx.Err() != nil || (x.body != nil && !x.body.Replayable()) {
		return false
	}
	if !x.pol.budget.Withdraw() {
		x.t.p.metrics.RetryBudgetExhausted.WithLabelValues(outbound.String(), x.t.svc.authority).Inc()
		return false
	}
	return true
}

// timedOut answers 504 for a request whose timeout passed, counting it;
// ep, when not nil, failed by not answering in time.
func (x *exchange) timedOut(ep *balance.Endpoint) (*http.Response, error) {
	p, svc := x.t.p, x.t.svc
	x.finish()
	if ep != nil {
		svc.balancer.Report(ep, false)
	}
	p.metrics.RequestTimeouts.WithLabelValues(outbound.String(), svc.authority).Inc()
	p.window.record(outbound, svc.authority, "", x.route.nameOrNone(), x.timeout, false)
	p.metrics.Response(&metrics.Labels{Direction: outbound.String(), Authority: svc.authority, TLS: "false", Route: x.route.nameOrNone()}, "504", "failure")
	return nil, &proxyError{status: http.StatusGatewayTimeout, reason: "request_timeout",
		msg: fmt.Sprintf("request to %s timed out after %s (%s)", svc.authority, x.timeout, x.source)}
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

// probeGrace is how long an endpoint on probation waits for a request that
// may probe it (mayProbe) before any request may: a service that only gets
// requests that cannot be retried (gRPC calls are POSTs) still has its
// endpoints restored.
const probeGrace = 5 * time.Second

// pick chooses an endpoint, preferring ones this request has not tried
// and skipping ones at their concurrency limit. A request that may not
// probe (canProbe) skips endpoints on probation while others are left.
// With no endpoint available it waits up to the queue timeout for one to
// appear, then fails fast.
func (t *balancingTransport) pick(ctx context.Context, req *http.Request, pol *policy, tried []*balance.Endpoint, canProbe bool) (*balance.Endpoint, error) {
	svc := t.svc
	bal := svc.balancer
	var hash uint64
	if bal.Algorithm().Hashing() {
		hash = requestHash(svc.settings.Load().HashKey, req)
	}
	mayTake := func(e *balance.Endpoint) bool {
		if canProbe || e.State() != balance.Probation {
			return true
		}
		since, _ := bal.Ejection(e)
		return time.Since(since) > probeGrace
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
			if slices.Contains(tried, e) || !mayTake(e) {
				fallback = e
				continue
			}
			ep = e
			break
		}
		if ep == nil && fallback != nil {
			// Random picks kept landing on endpoints already tried (or on
			// probation): look for one that was not, before taking it.
			ep = fallback
			for _, e := range bal.Endpoints() {
				if e.State() != balance.Ejected && !slices.Contains(tried, e) && mayTake(e) &&
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
			t.p.window.record(outbound, svc.authority, "", routeName(ctx), 0, false)
			t.p.metrics.Response(&metrics.Labels{Direction: outbound.String(), Authority: svc.authority, TLS: "false", Route: routeName(ctx)}, "503", "failure")
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
		t.p.metrics.Response(&metrics.Labels{Direction: outbound.String(), Authority: svc.authority, TLS: "false", Route: routeName(ctx)}, "503", "failure")
		t.p.window.record(outbound, svc.authority, "", routeName(ctx), pol.queueTimeout, false)
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
