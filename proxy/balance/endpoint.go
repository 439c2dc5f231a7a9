package balance

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshproj/mesh/discovery"
)

// Peak-EWMA tuning. The decay is the time for an old observation to lose
// about two thirds of its weight; the default RTT is what an endpoint that
// has never answered is assumed to cost, so a new endpoint is neither
// flooded nor starved.
// A failure counts as failurePenalty of latency, so that an endpoint that
// fails fast (connection refused, instant 500s) does not look like the
// fastest one and draw the traffic it cannot serve.
const (
	ewmaDecay      = 10 * time.Second
	defaultRTT     = 30 * time.Millisecond
	failurePenalty = 10 * defaultRTT
)

// epoch anchors monotonic timestamps; time.Since reads the monotonic clock.
var epoch = time.Now()

// now reads the monotonic clock (a variable so that tests can run their own).
var now = func() int64 { return int64(time.Since(epoch)) }

// Endpoint is one address of a service with the state the balancers use.
// It is shared by every picker built while the address stays in discovery.
type Endpoint struct {
	discovery.Endpoint
	// Addr is Address formatted once, ready to dial.
	Addr string

	pending atomic.Int64

	mu    sync.Mutex
	cost  float64 // peak-EWMA of round-trip time, in nanoseconds
	stamp int64   // when cost was last updated, from now()

	// Failure accrual; the balancer's lock guards the fields that are not atomic.
	failures     atomic.Int32
	state        atomic.Uint32 // a State
	backoff      time.Duration
	ejectedUntil time.Time
	ejections    int
	probe        *time.Timer
}

// NewEndpoint returns an endpoint with no history.
func NewEndpoint(d discovery.Endpoint) *Endpoint { return newEndpointAt(d, now()) }

// newEndpointAt starts the endpoint's estimate at time t; endpoints created by one
// update share t, so that none looks costlier than its siblings before traffic.
func newEndpointAt(d discovery.Endpoint, t int64) *Endpoint {
	if d.Weight == 0 {
		d.Weight = 1
	}
	return &Endpoint{Endpoint: d, Addr: d.Address.String(), cost: float64(defaultRTT), stamp: t}
}

// Begin records that a request or connection to the endpoint has started.
// It returns the start time to pass to Observe.
func (e *Endpoint) Begin() int64 {
	e.pending.Add(1)
	return now()
}

// Observe records the round-trip time of a request that began at start.
// Callers observe at response headers (or connection establishment) and
// call Done when the exchange is over.
func (e *Endpoint) Observe(start int64) {
	t := now()
	e.mu.Lock()
	e.update(float64(t-start), t)
	e.mu.Unlock()
}

// penalize records a failure in the latency estimate.
func (e *Endpoint) penalize() {
	t := now()
	e.mu.Lock()
	e.update(float64(failurePenalty), t)
	e.mu.Unlock()
}

// Done records that a request or connection has ended.
func (e *Endpoint) Done() { e.pending.Add(-1) }

// Pending is the number of requests or connections in flight.
func (e *Endpoint) Pending() int64 { return e.pending.Load() }

// update folds one observation into the peak-EWMA: a slower observation
// replaces the estimate at once (peak), faster ones pull it down gradually.
// Must hold e.mu.
func (e *Endpoint) update(rtt float64, t int64) {
	elapsed := t - e.stamp
	if elapsed < 0 {
		elapsed = 0
	}
	if rtt > e.cost {
		e.cost = rtt
	} else {
		w := math.Exp(-float64(elapsed) / float64(ewmaDecay))
		e.cost = e.cost*w + rtt*(1-w)
	}
	e.stamp = t
}

// Latency is the current peak-EWMA estimate. With no new observations it
// decays towards zero, so an endpoint that was slow once is tried again
// eventually.
func (e *Endpoint) Latency() time.Duration {
	e.mu.Lock()
	e.update(0, now())
	c := e.cost
	e.mu.Unlock()
	return time.Duration(c)
}

// load is the peak-EWMA cost of sending one more request: the latency
// estimate, with floor added, scaled by the work already queued on the
// endpoint.
func (e *Endpoint) load(floor float64) float64 {
	pending := e.pending.Load()
	e.mu.Lock()
	e.update(0, now())
	c := e.cost
	e.mu.Unlock()
	if c == 0 && pending > 0 {
		// Decayed to nothing but busy: make it look as busy as it is.
		c = float64(defaultRTT)
	}
	return (c + floor) * float64(pending+1)
}
