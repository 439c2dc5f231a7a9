package controller

import (
	"context"
	"log/slog"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1 "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaseName is the Lease in the control plane's namespace that the
// replica writing route status holds.
const LeaseName = "mesh-controller"

// lead runs fn while this replica holds the Lease (client-go's leader
// election), stops it when the lease is lost, and contends again, until
// ctx ends. A replica that stops releases the lease, so another takes
// over at once; one that dies is replaced once the lease runs out.
func lead(ctx context.Context, cfg *rest.Config, namespace, id string, lease time.Duration, log *slog.Logger, isLeader func(bool), fn func(context.Context)) error {
	client, err := coordinationv1.NewForConfig(cfg)
	if err != nil {
		return err
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: LeaseName, Namespace: namespace},
		Client:     client,
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   lease,
			RenewDeadline:   lease * 2 / 3,
			RetryPeriod:     lease / 5,
			ReleaseOnCancel: true,
			Name:            LeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					log.Info("leading: writing route status", slog.String("lease", namespace+"/"+LeaseName), slog.String("identity", id))
					isLeader(true)
					fn(ctx)
				},
				OnStoppedLeading: func() {
					isLeader(false)
					if ctx.Err() == nil {
						log.Warn("lost the lease; contending again", slog.String("lease", namespace+"/"+LeaseName))
					}
				},
				OnNewLeader: func(who string) {
					if who != id {
						log.Info("another replica leads", slog.String("leader", who))
					}
				},
			},
		})
		if err != nil {
			return err
		}
		le.Run(ctx)
	}
	return nil
}
