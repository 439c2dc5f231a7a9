package controller

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshproj/mesh/discovery/xdsres"
	"github.com/meshproj/mesh/internal/kubetest"
	"github.com/meshproj/mesh/kubeapi"
	"github.com/meshproj/mesh/wellknown"
)

// Discovery is built incrementally: an event rebuilds only the Services
// it touches. Whatever the changes (endpoints, pods' identities and
// weights, a Service's ports and annotations, Services and slices that
// come and go), what the xDS caches serve settles on what a build of
// everything gives, and one endpoint change builds one Service.
func TestIncrementalDiscoveryMatchesAFullBuild(t *testing.T) {
	env := kubetest.Start(t, kubetest.Options{})
	client := kubernetes.NewForConfigOrDie(env.Config)
	kc, err := env.Kubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	kapi, err := kubeapi.FromKubeconfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	const ns = "shop"
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// No controller makes the namespace's default ServiceAccount here.
	if _, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w := &incWorld{t: t, client: client, ns: ns}
	const services, podsPer = 8, 3
	for i := range services {
		w.addService(i)
	}

	d := &Destination{Client: kapi, TrustDomain: "cluster.local", Log: slog.New(slog.DiscardHandler)}
	go d.Run(ctx)
	select {
	case <-d.Synced():
	case <-time.After(30 * time.Second):
		t.Fatal("discovery did not sync")
	}
	w.d = d
	settled(t, d, "the first build")

	// One endpoint change: one Service built.
	before := d.Built.Load()
	w.setEndpoints(0, []int{0, 1})
	w.settled("one endpoint change")
	if n := d.Built.Load() - before; n != 1 {
		t.Errorf("one endpoint change built %d Services; want 1", n)
	}

	rng := rand.New(rand.NewPCG(1, 2))
	next := services
	for step := range 40 {
		var what string
		i := rng.IntN(next)
		if !w.exists[i] {
			continue
		}
		switch rng.IntN(7) {
		case 0:
			eps := rng.Perm(podsPer)[:rng.IntN(podsPer+1)]
			w.setEndpoints(i, eps)
			what = fmt.Sprintf("service %d's endpoints are pods %v", i, eps)
		case 1:
			p := rng.IntN(podsPer)
			w.annotatePod(i, p, wellknown.AnnotationWeight, strconv.Itoa(1+rng.IntN(5)))
			what = fmt.Sprintf("service %d's pod %d has a new weight", i, p)
		case 2:
			p := rng.IntN(podsPer)
			w.annotatePod(i, p, wellknown.AnnotationInjectedBy, []string{"", "mesh"}[rng.IntN(2)])
			what = fmt.Sprintf("service %d's pod %d is meshed or not", i, p)
		case 3:
			w.annotateService(i, wellknown.AnnotationLoadBalancer, []string{"round-robin", "random", "nonsense"}[rng.IntN(3)])
			what = fmt.Sprintf("service %d has a new balancer", i)
		case 4:
			w.togglePort(i)
			what = fmt.Sprintf("service %d gained or lost its grpc port", i)
		case 5:
			w.removeService(i)
			w.addService(next)
			what = fmt.Sprintf("service %d is gone and %d new", i, next)
			next++
		case 6:
			w.setReady(i, rng.IntN(podsPer), rng.IntN(2) == 0)
			what = fmt.Sprintf("an endpoint of service %d is ready or not", i)
		}
		w.settled(fmt.Sprintf("step %d: %s", step, what))
	}
}

// settled waits until the informers hold what was written, and then
// until the xDS caches hold exactly what a full build gives.
func (w *incWorld) settled(after string) {
	w.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, seen := range w.pending {
		for !seen() {
			if time.Now().After(deadline) {
				w.t.Fatalf("after %s, the informers do not have what was written", after)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	w.pending = nil
	settled(w.t, w.d, after)
}

// settled waits until the xDS caches hold exactly what a full build gives.
func settled(t *testing.T, d *Destination, after string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		diff := cacheDiff(t, d)
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, the xDS caches are not what a full build gives: %s", after, diff)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func cacheDiff(t *testing.T, d *Destination) string {
	t.Helper()
	want := map[string]*xdsres.Resources{}
	for _, svc := range d.Build() {
		r, err := xdsres.Encode(&svc)
		if err != nil {
			t.Fatal(err)
		}
		want[xdsres.Name(r.ServiceKey)] = r
	}
	for _, typ := range xdsres.Types {
		have := d.caches[typ].GetResources()
		for name, r := range want {
			if h, ok := have[name]; !ok {
				return fmt.Sprintf("%s: no %s", typ, name)
			} else if !proto.Equal(h, r.Of(typ)) {
				return fmt.Sprintf("%s: %s differs", typ, name)
			}
		}
		for name := range have {
			if want[name] == nil {
				return fmt.Sprintf("%s: %s is served but no Service gives it", typ, name)
			}
		}
	}
	return ""
}

// incWorld writes Services, their pods and their slices: service i has
// pods i-0.. i-2, and one slice.
type incWorld struct {
	t      *testing.T
	client kubernetes.Interface
	ns     string
	exists map[int]bool
	// d, once set, is the Destination under test; pending are checks that
	// its informers have seen each write since the last settled.
	d       *Destination
	pending []func() bool
}

// wrote waits, at the next settled, for an informer to hold the object at
// key with resource version rv ("": for it to be gone).
func wrote[T any](w *incWorld, inf *kubeapi.Informer[T], meta func(*T) *kubeapi.ObjectMeta, key, rv string) {
	if w.d == nil {
		return
	}
	w.pending = append(w.pending, func() bool {
		o := inf.Get(key)
		if rv == "" {
			return o == nil
		}
		return o != nil && meta(o).ResourceVersion == rv
	})
}

func (w *incWorld) wroteService(name, rv string) {
	if w.d != nil {
		wrote(w, w.d.services, func(s *kubeapi.Service) *kubeapi.ObjectMeta { return &s.Metadata }, w.ns+"/"+name, rv)
	}
}

func (w *incWorld) wroteSlice(name, rv string) {
	if w.d != nil {
		wrote(w, w.d.endpoints, func(s *kubeapi.EndpointSlice) *kubeapi.ObjectMeta { return &s.Metadata }, w.ns+"/"+name, rv)
	}
}

func (w *incWorld) wrotePod(name, rv string) {
	if w.d != nil {
		wrote(w, w.d.pods, func(p *kubeapi.Pod) *kubeapi.ObjectMeta { return &p.Metadata }, w.ns+"/"+name, rv)
	}
}

func (w *incWorld) name(i int) string { return "svc-" + strconv.Itoa(i) }

func (w *incWorld) pod(i, p int) string { return fmt.Sprintf("svc-%d-%d", i, p) }

func podIP(i, p int) string { return fmt.Sprintf("10.0.%d.%d", i, p+1) }

func (w *incWorld) addService(i int) {
	t, ctx := w.t, w.t.Context()
	if w.exists == nil {
		w.exists = map[int]bool{}
	}
	w.exists[i] = true
	svc, err := w.client.CoreV1().Services(w.ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: w.name(i)},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.wroteService(svc.Name, svc.ResourceVersion)
	for p := range 3 {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: w.pod(i, p), Annotations: map[string]string{wellknown.AnnotationInjectedBy: "mesh"}},
			Spec:       corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{Name: "app", Image: "app"}}},
		}
		out, err := w.client.CoreV1().Pods(w.ns).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		w.wrotePod(out.Name, out.ResourceVersion)
	}
	http, grpc, port, gport := "http", "grpc", int32(8080), int32(9090)
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: w.name(i), Labels: map[string]string{discoveryv1.LabelServiceName: w.name(i)}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &http, Port: &port}, {Name: &grpc, Port: &gport}},
	}
	if _, err := w.client.DiscoveryV1().EndpointSlices(w.ns).Create(ctx, es, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w.setEndpoints(i, []int{0, 1, 2})
}

func (w *incWorld) removeService(i int) {
	t, ctx := w.t, w.t.Context()
	delete(w.exists, i)
	if err := w.client.CoreV1().Services(w.ns).Delete(ctx, w.name(i), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := w.client.DiscoveryV1().EndpointSlices(w.ns).Delete(ctx, w.name(i), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	w.wroteService(w.name(i), "")
	w.wroteSlice(w.name(i), "")
}

func (w *incWorld) updateSlice(i int, change func(*discoveryv1.EndpointSlice)) {
	t, ctx := w.t, w.t.Context()
	es, err := w.client.DiscoveryV1().EndpointSlices(w.ns).Get(ctx, w.name(i), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	change(es)
	out, err := w.client.DiscoveryV1().EndpointSlices(w.ns).Update(ctx, es, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.wroteSlice(out.Name, out.ResourceVersion)
}

func (w *incWorld) setEndpoints(i int, pods []int) {
	pods = slices.Sorted(slices.Values(pods))
	w.updateSlice(i, func(es *discoveryv1.EndpointSlice) {
		ready := true
		es.Endpoints = nil
		for _, p := range pods {
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{podIP(i, p)}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: w.ns, Name: w.pod(i, p)}})
		}
	})
}

func (w *incWorld) setReady(i, p int, ready bool) {
	w.updateSlice(i, func(es *discoveryv1.EndpointSlice) {
		for k := range es.Endpoints {
			if es.Endpoints[k].Addresses[0] == podIP(i, p) {
				es.Endpoints[k].Conditions.Ready = &ready
			}
		}
	})
}

func (w *incWorld) annotatePod(i, p int, key, value string) {
	t, ctx := w.t, w.t.Context()
	pod, err := w.client.CoreV1().Pods(w.ns).Get(ctx, w.pod(i, p), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if value == "" {
		delete(pod.Annotations, key)
	} else {
		pod.Annotations[key] = value
	}
	out, err := w.client.CoreV1().Pods(w.ns).Update(ctx, pod, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.wrotePod(out.Name, out.ResourceVersion)
}

func (w *incWorld) annotateService(i int, key, value string) {
	w.updateService(i, func(s *corev1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[key] = value
	})
}

func (w *incWorld) togglePort(i int) {
	w.updateService(i, func(s *corev1.Service) {
		if len(s.Spec.Ports) == 2 {
			s.Spec.Ports = s.Spec.Ports[:1]
		} else {
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "grpc", Port: 90})
		}
	})
}

func (w *incWorld) updateService(i int, change func(*corev1.Service)) {
	t, ctx := w.t, w.t.Context()
	s, err := w.client.CoreV1().Services(w.ns).Get(ctx, w.name(i), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	change(s)
	out, err := w.client.CoreV1().Services(w.ns).Update(ctx, s, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.wroteService(out.Name, out.ResourceVersion)
}
