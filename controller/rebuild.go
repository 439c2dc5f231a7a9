package controller

import (
	"context"
	"time"
)

// rebuildDebounce groups the events of one burst (a rollout touches
// slices and pods) into one build, well within a second.
const rebuildDebounce = 20 * time.Millisecond

// syncThenRebuild waits for the informers' first lists, builds once and
// closes synced (then calls onSynced), and from then on builds once per
// burst of changes until ctx ends. It is the loop of every part of the
// controller that turns what it watches into what it serves.
func syncThenRebuild(ctx context.Context, informers []<-chan struct{}, changed <-chan struct{}, rebuild func(), synced chan struct{}, onSynced func()) {
	for _, s := range informers {
		select {
		case <-s:
		case <-ctx.Done():
			return
		}
	}
	rebuild()
	close(synced)
	if onSynced != nil {
		onSynced()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			t := time.NewTimer(rebuildDebounce)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			rebuild()
		}
	}
}
