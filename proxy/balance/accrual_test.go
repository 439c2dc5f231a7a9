package balance

import (
	"sync"
	"testing"
	"time"

	"github.com/meshproj/mesh/discovery"
)

func TestAccrualEjectsProbesAndRestores(t *testing.T) {
	b := newBalancer(t, discovery.RoundRobin, endpoints(3))
	var mu sync.Mutex
	var events []Event
	b.OnEvent = func(ev Event) { mu.Lock(); events = append(events, ev); mu.Unlock() }
	b.SetAccrual(Accrual{Failures: 3, MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second})
	bad := b.Endpoints()[1]

	changed := b.Changed()
	for range 2 {
		b.Report(bad, false)
	}
	b.Report(bad, true) // a success resets the run
	for range 2 {
		b.Report(bad, false)
	}
	if bad.State() != Active {
		t.Fatal("ejected before 3 consecutive failures")
	}
	b.Report(bad, false)
	if bad.State() != Ejected {
		t.Fatal("not ejected after 3 consecutive failures")
	}
	select {
	case <-changed:
	default:
		t.Fatal("ejection did not signal a change")
	}
	for range 30 {
		if b.Pick(0) == bad {
			t.Fatal("picked an ejected endpoint")
		}
	}
	waitState := func(want State, within time.Duration) {
		t.Helper()
		for deadline := time.Now().Add(within); bad.State() != want; {
			if time.Now().After(deadline) {
				t.Fatalf("state %v, want %v", bad.State(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitState(Probation, time.Second)
	// On probation a single failure ejects again, for twice as long.
	b.Report(bad, false)
	if bad.State() != Ejected || bad.backoff != 100*time.Millisecond {
		t.Fatalf("after failed probe: %v, backoff %v", bad.State(), bad.backoff)
	}
	waitState(Probation, 2*time.Second)
	picked := false
	for range 30 {
		picked = picked || b.Pick(0) == bad
	}
	if !picked {
		t.Fatal("endpoint on probation gets no traffic")
	}
	b.Report(bad, true)
	if bad.State() != Active || bad.backoff != 0 {
		t.Fatalf("after a successful probe: %v, backoff %v", bad.State(), bad.backoff)
	}
	mu.Lock()
	defer mu.Unlock()
	var states []State
	for _, ev := range events {
		states = append(states, ev.State)
	}
	want := []State{Ejected, Probation, Ejected, Probation, Active}
	if len(states) != len(want) {
		t.Fatalf("events %v, want %v", states, want)
	}
	for i := range want {
		if states[i] != want[i] {
			t.Fatalf("events %v, want %v", states, want)
		}
	}
}

func TestAllEjectedLeavesNothingToPick(t *testing.T) {
	b := newBalancer(t, discovery.PeakEWMA, endpoints(2))
	b.SetAccrual(Accrual{Failures: 1, MinBackoff: time.Hour, MaxBackoff: time.Hour})
	for _, e := range b.Endpoints() {
		b.Report(e, false)
	}
	if e := b.Pick(0); e != nil {
		t.Fatalf("picked %s with every endpoint ejected", e.Addr)
	}
	b.SetAccrual(Accrual{}) // disabling accrual restores everyone
	if b.Pick(0) == nil {
		t.Fatal("nothing to pick after accrual was disabled")
	}
}

func TestAccrualSurvivesDiscoveryUpdate(t *testing.T) {
	b := newBalancer(t, discovery.RoundRobin, endpoints(2))
	b.SetAccrual(Accrual{Failures: 1, MinBackoff: time.Hour, MaxBackoff: time.Hour})
	bad := b.Endpoints()[0]
	b.Report(bad, false)
	b.Update(endpoints(3))
	if b.Endpoints()[0] != bad || bad.State() != Ejected {
		t.Fatal("a discovery update forgot an ejection")
	}
	for range 10 {
		if b.Pick(0) == bad {
			t.Fatal("picked the ejected endpoint after an update")
		}
	}
}

func TestFailingFastDoesNotAttractTraffic(t *testing.T) {
	b := newBalancer(t, discovery.PeakEWMA, endpoints(3))
	b.SetAccrual(Accrual{}) // only the latency penalty is under test
	for _, e := range b.Endpoints() {
		e.mu.Lock()
		e.update(float64(time.Millisecond), now())
		e.mu.Unlock()
	}
	bad := b.Endpoints()[0]
	b.Report(bad, false) // e.g. connection refused, in microseconds
	for range 300 {
		if b.Pick(0) == bad {
			t.Fatal("an endpoint that just failed was picked over healthy ones")
		}
	}
}
