package controller

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshproj/mesh/kubeapi"
)

// RouteStatus writes what discovery found of each mesh route into the
// route's status: for each parent Service, Accepted and ResolvedRefs with
// a reason. Several replicas must not write at once; only the leader
// runs it.
type RouteStatus struct {
	Client *kubeapi.Client
	Dest   *Destination
	Log    *slog.Logger

	// Writes counts the statuses written; Failures those the API server
	// refused (a conflict is tried again on the next build).
	Writes, Failures atomic.Int64
}

// Run writes statuses after each build of discovery until ctx ends.
func (rs *RouteStatus) Run(ctx context.Context) {
	rs.Dest.init()
	select {
	case <-rs.Dest.Synced():
	case <-ctx.Done():
		return
	}
	// A status refused (a conflict with a route changed meanwhile) is
	// tried again after the next build, or within 10 s.
	retry := time.NewTicker(10 * time.Second)
	defer retry.Stop()
	for {
		rs.writeAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-rs.Dest.built:
		case <-retry.C:
		}
	}
}

type routeID struct{ kind, namespace, name string }

// writeAll writes every route status that differs from what is wanted.
func (rs *RouteStatus) writeAll(ctx context.Context) {
	p := rs.Dest.routeStatus.Load()
	if p == nil {
		return
	}
	byRoute := map[routeID][]RouteParentStatus{}
	var order []routeID
	for _, st := range *p {
		id := routeID{st.Kind, st.Namespace, st.Name}
		if byRoute[id] == nil {
			order = append(order, id)
		}
		byRoute[id] = append(byRoute[id], st)
	}
	now := metav1.NewTime(time.Now().UTC().Truncate(time.Second))
	for _, id := range order {
		sts := byRoute[id]
		current := sts[0].Current
		want := wantedParents(sts, current, now)
		if sameParents(current, want) {
			continue
		}
		resource := "httproutes"
		if id.kind == "GRPCRoute" {
			resource = "grpcroutes"
		}
		path := "/apis/gateway.networking.k8s.io/v1/namespaces/" + id.namespace + "/" + resource + "/" + id.name + "/status"
		patch := map[string]any{
			"metadata": map[string]any{"resourceVersion": sts[0].ResourceVersion},
			"status":   map[string]any{"parents": want},
		}
		if err := rs.Client.MergePatch(ctx, path, patch, nil); err != nil {
			var se *kubeapi.StatusError
			switch {
			case ctx.Err() != nil:
			case errors.As(err, &se) && (se.Code == http.StatusConflict || se.Code == http.StatusNotFound):
				// The route changed or went since this build: the next
				// build has it as it is now.
				rs.Log.Debug("route status out of date; writing it after the next build", slog.String("route", id.kind+" "+id.namespace+"/"+id.name), slog.Any("error", err))
			default:
				rs.Failures.Add(1)
				rs.Log.Warn("writing route status", slog.String("route", id.kind+" "+id.namespace+"/"+id.name), slog.Any("error", err))
			}
			continue
		}
		rs.Writes.Add(1)
	}
}

// wantedParents is the route's status.parents: other controllers'
// entries as they are, then ours, one per parent Service. A condition
// that did not change keeps its transition time.
func wantedParents(sts []RouteParentStatus, current []gatewayv1.RouteParentStatus, now metav1.Time) []gatewayv1.RouteParentStatus {
	var out []gatewayv1.RouteParentStatus
	for _, c := range current {
		if c.ControllerName != ControllerName {
			out = append(out, c)
		}
	}
	for _, st := range sts {
		var old []metav1.Condition
		for _, c := range current {
			if c.ControllerName == ControllerName && reflect.DeepEqual(c.ParentRef, st.Parent) {
				old = c.Conditions
			}
		}
		ps := gatewayv1.RouteParentStatus{ParentRef: st.Parent, ControllerName: ControllerName}
		for _, c := range []struct {
			typ gatewayv1.RouteConditionType
			condition
		}{{gatewayv1.RouteConditionAccepted, st.Accepted}, {gatewayv1.RouteConditionResolvedRefs, st.ResolvedRefs}} {
			mc := metav1.Condition{Type: string(c.typ), Status: metav1.ConditionFalse, ObservedGeneration: st.Generation,
				LastTransitionTime: now, Reason: c.Reason, Message: truncate(c.Message, 32768)}
			if c.OK {
				mc.Status = metav1.ConditionTrue
			}
			for _, o := range old {
				if o.Type == mc.Type && o.Status == mc.Status {
					mc.LastTransitionTime = o.LastTransitionTime
				}
			}
			ps.Conditions = append(ps.Conditions, mc)
		}
		out = append(out, ps)
	}
	return out
}

// sameParents compares statuses but for when their conditions last
// changed.
func sameParents(a, b []gatewayv1.RouteParentStatus) bool {
	strip := func(ps []gatewayv1.RouteParentStatus) []gatewayv1.RouteParentStatus {
		out := make([]gatewayv1.RouteParentStatus, len(ps))
		for i, p := range ps {
			out[i] = p
			out[i].Conditions = make([]metav1.Condition, len(p.Conditions))
			for j, c := range p.Conditions {
				c.LastTransitionTime = metav1.Time{}
				out[i].Conditions[j] = c
			}
		}
		return out
	}
	return reflect.DeepEqual(strip(a), strip(b))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n-3], "") + "..."
}
