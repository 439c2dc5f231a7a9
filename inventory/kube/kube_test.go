package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func pod(owner string, kind string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p-1", Namespace: "shop"}}
	if kind != "" {
		yes := true
		p.OwnerReferences = []metav1.OwnerReference{{Kind: kind, Name: owner, Controller: &yes}}
	}
	return p
}

func TestAPodBelongsToTheWorkloadThatControlsIt(t *testing.T) {
	deployOf := map[string]string{"shop/web-7d9f": "web"}
	for _, c := range []struct {
		p          *corev1.Pod
		kind, name string
	}{
		{pod("web-7d9f", "ReplicaSet"), "deploy", "web"},
		{pod("bare-rs", "ReplicaSet"), "rs", "bare-rs"},
		{pod("db", "StatefulSet"), "sts", "db"},
		{pod("agent", "DaemonSet"), "ds", "agent"},
		{pod("load", "Job"), "job", "load"},
		{pod("", ""), "po", "p-1"},
	} {
		if kind, name := WorkloadOf(c.p, deployOf); kind != c.kind || name != c.name {
			t.Errorf("%v: %s/%s; want %s/%s", c.p.OwnerReferences, kind, name, c.kind, c.name)
		}
	}
}

func TestMeshedPodsAreThoseWithTheProxy(t *testing.T) {
	p := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
	if Meshed(p) {
		t.Error("a pod without mesh-proxy counted as meshed")
	}
	p.Spec.InitContainers = []corev1.Container{{Name: "mesh-init"}, {Name: "mesh-proxy"}}
	if !Meshed(p) {
		t.Error("a pod with the native sidecar mesh-proxy not counted as meshed")
	}
}
