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

func TestTheProxyVersionIsTheTagOfTheImageThatRuns(t *testing.T) {
	for _, c := range []struct {
		spec, status, want string
	}{
		{"ghcr.io/meshproj/mesh:v1.2.0", "", "v1.2.0"},
		{"ghcr.io/meshproj/mesh:v1.2.0", "ghcr.io/meshproj/mesh:v1.2.1", "v1.2.1"},
		{"localhost:5000/mesh:dev@sha256:abcd", "", "dev"},
		{"localhost:5000/mesh", "", ""},
	} {
		p := &corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Name: "mesh-proxy", Image: c.spec}}}}
		if c.status != "" {
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "mesh-proxy", Image: c.status}}
		}
		if got := ProxyVersion(p); got != c.want {
			t.Errorf("image %q (running %q): version %q; want %q", c.spec, c.status, got, c.want)
		}
	}
}

func TestAServiceSelectsThePodsItsSelectorMatches(t *testing.T) {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Labels: map[string]string{"app": "web", "tier": "front"}}}
	svc := func(ns string, sel map[string]string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns}, Spec: corev1.ServiceSpec{Selector: sel}}
	}
	if !selects(svc("shop", map[string]string{"app": "web"}), p) {
		t.Error("app=web does not select a pod labelled app=web")
	}
	if selects(svc("shop", map[string]string{"app": "web", "tier": "back"}), p) {
		t.Error("a selector with a label the pod lacks selects it")
	}
	if selects(svc("other", map[string]string{"app": "web"}), p) {
		t.Error("a Service selects a pod of another namespace")
	}
	if selects(svc("shop", nil), p) {
		t.Error("a Service without a selector selects pods")
	}
}
