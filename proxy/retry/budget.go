// Package retry holds what makes retries safe: a budget that lets retries
// add only a fraction of live traffic, and a request body that can be
// replayed to another endpoint without holding up a streaming client.
//
// It does not decide what is retryable; the proxy does.
package retry

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshproj/mesh/discovery"
)

// BudgetConfig bounds retries: over a sliding window of TTL, retries may
// add at most Ratio of the requests plus MinPerSecond each second. In an
// outage every request fails, and retries still add no more than that.
type BudgetConfig struct {
	Ratio        float64
	MinPerSecond float64
	TTL          time.Duration
}

// DefaultBudget is discovery's default (Linkerd's and Finagle's): 20%
// more, at least 10 per second, over 10 seconds.
var DefaultBudget = func() BudgetConfig {
	r := discovery.DefaultRetries()
	return BudgetConfig{Ratio: r.BudgetRatio, MinPerSecond: r.BudgetMinPerSecond, TTL: r.BudgetTTL}
}()

const buckets = 10

// Budget is a retry budget. It is safe for concurrent use; Deposit, on
// every request, is two atomic operations; Withdraw, on retries only, takes
// a lock.
type Budget struct {
	mu    sync.Mutex // serialises withdrawals, so that racing retries cannot overdraw
	cfg   BudgetConfig
	width int64 // bucket width, ns
	b     [buckets]bucket
	now   func() int64
}

type bucket struct {
	epoch    atomic.Int64 // which bucket-width period the counts belong to
	requests atomic.Int64
	retries  atomic.Int64
}

// NewBudget returns a budget with nothing deposited.
func NewBudget(cfg BudgetConfig) *Budget {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultBudget.TTL
	}
	return &Budget{cfg: cfg, width: int64(cfg.TTL) / buckets, now: func() int64 { return time.Now().UnixNano() }}
}

// Config returns the budget's settings.
func (b *Budget) Config() BudgetConfig { return b.cfg }

// current returns the bucket for now, emptying it if it holds an old period.
func (b *Budget) current() *bucket {
	epoch := b.now() / b.width
	bk := &b.b[epoch%buckets]
	if old := bk.epoch.Load(); old != epoch && bk.epoch.CompareAndSwap(old, epoch) {
		bk.requests.Store(0)
		bk.retries.Store(0)
	}
	return bk
}

// Deposit records an original request.
func (b *Budget) Deposit() { b.current().requests.Add(1) }

// Withdraw asks for one retry; it reports false when the budget is spent.
func (b *Budget) Withdraw() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := b.current()
	epoch := b.now() / b.width
	var requests, retries int64
	for i := range b.b {
		bk := &b.b[i]
		if e := bk.epoch.Load(); e > epoch-buckets && e <= epoch {
			requests += bk.requests.Load()
			retries += bk.retries.Load()
		}
	}
	allowed := b.cfg.Ratio*float64(requests) + b.cfg.MinPerSecond*b.cfg.TTL.Seconds()
	if float64(retries+1) > allowed {
		return false
	}
	cur.retries.Add(1)
	return true
}
