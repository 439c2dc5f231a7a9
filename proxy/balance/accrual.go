package balance

import (
	"math/rand/v2"
	"time"

	"github.com/meshproj/mesh/discovery"
)

// Accrual configures failure accrual (circuit breaking per endpoint): after
// Failures consecutive failures an endpoint is ejected, and after a backoff
// it is given real traffic again on probation; one success restores it, one
// failure ejects it again for twice as long.
type Accrual struct {
	// Failures is the number of consecutive failures that eject; 0 disables.
	Failures   int
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// Jitter spreads probes: each backoff is multiplied by a random factor
	// in [1-Jitter, 1+Jitter].
	Jitter float64
}

// DefaultAccrual is what a service gets unless it says otherwise.
var DefaultAccrual = func() Accrual {
	a := discovery.DefaultFailureAccrual()
	return Accrual{Failures: a.ConsecutiveFailures, MinBackoff: a.MinBackoff, MaxBackoff: a.MaxBackoff, Jitter: a.Jitter}
}()

// State is an endpoint's standing with failure accrual.
type State uint8

// Endpoint states.
const (
	Active    State = iota // in the balancer
	Ejected                // out of the balancer until its backoff ends
	Probation              // back in the balancer; its next result decides
)

func (s State) String() string {
	switch s {
	case Ejected:
		return "ejected"
	case Probation:
		return "probation"
	}
	return "active"
}

// Event is a change of an endpoint's state, for metrics and logs.
type Event struct {
	Endpoint *Endpoint
	State    State
	Backoff  time.Duration // for ejections: how long until probation
}

// Report records the outcome of a request or connection to e. Failures
// are 5xx responses, server-side gRPC failures and connection errors.
func (b *Balancer) Report(e *Endpoint, ok bool) {
	if ok {
		if e.failures.Swap(0) == 0 && State(e.state.Load()) == Active {
			return // the common case: no lock
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		if State(e.state.Load()) == Probation {
			e.state.Store(uint32(Active))
			e.backoff = 0
			b.rebuild()
			b.emit(Event{Endpoint: e, State: Active})
		}
		return
	}
	e.penalize()
	n := e.failures.Add(1)
	b.mu.Lock()
	defer b.mu.Unlock()
	a := b.accrual
	switch State(e.state.Load()) {
	case Probation:
		b.eject(e, a)
	case Active:
		if a.Failures > 0 && int(n) >= a.Failures {
			b.eject(e, a)
		}
	}
}

// eject takes e out of the balancer and schedules its probation. Must hold b.mu.
func (b *Balancer) eject(e *Endpoint, a Accrual) {
	if e.backoff == 0 {
		e.backoff = a.MinBackoff
	} else {
		e.backoff = min(2*e.backoff, a.MaxBackoff)
	}
	wait := e.backoff
	if a.Jitter > 0 {
		wait = time.Duration(float64(wait) * (1 - a.Jitter + 2*a.Jitter*rand.Float64()))
	}
	e.state.Store(uint32(Ejected))
	e.ejectedUntil = time.Now().Add(wait)
	e.ejections++
	b.rebuild()
	b.emit(Event{Endpoint: e, State: Ejected, Backoff: wait})
	if e.probe != nil {
		e.probe.Stop()
	}
	e.probe = time.AfterFunc(wait, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if State(e.state.Load()) != Ejected || b.byAddr[e.Addr] != e {
			return // restored meanwhile, or gone from discovery
		}
		e.state.Store(uint32(Probation))
		e.failures.Store(0)
		b.rebuild()
		b.emit(Event{Endpoint: e, State: Probation})
	})
}

func (b *Balancer) emit(ev Event) {
	if b.OnEvent != nil {
		b.OnEvent(ev)
	}
}

// State returns the endpoint's accrual state.
func (e *Endpoint) State() State { return State(e.state.Load()) }

// ConsecutiveFailures returns the current run of failures.
func (e *Endpoint) ConsecutiveFailures() int { return int(e.failures.Load()) }

// Ejection describes an ejected endpoint for dumps: until when, and how
// many times it has been ejected. Safe to call while the balancer runs.
func (b *Balancer) Ejection(e *Endpoint) (until time.Time, ejections int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return e.ejectedUntil, e.ejections
}
