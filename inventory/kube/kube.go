// Package kube finds the mesh on a Kubernetes cluster: the meshed pods of
// a namespace grouped into their workloads, each proxy's admin port
// reached by a port-forward through the API server. The kubeconfig is
// read as kubectl reads it (client-go's clientcmd: --kubeconfig,
// KUBECONFIG with several files, contexts, exec credential plugins), so
// what the user's RBAC allows (pods list, pods/portforward) is what the
// diagnostics may see.
package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

	"github.com/meshproj/mesh/inventory"
	"github.com/meshproj/mesh/wellknown"
)

// Options say which cluster and namespace, as kubectl's flags do.
type Options struct {
	Kubeconfig    string // empty: KUBECONFIG, else ~/.kube/config
	Context       string // empty: the current context
	Namespace     string // empty: the context's, else "default"
	AllNamespaces bool
	TrustDomain   string // empty: cluster.local
}

// Source is a cluster the diagnostics talk to. Close stops its
// port-forwards.
type Source struct {
	cfg         *rest.Config
	http        *http.Client
	context     string
	namespace   string
	all         bool
	trustDomain string
	// namespaceGiven: -n named it, rather than the context.
	namespaceGiven bool

	mu       sync.Mutex
	forwards []chan struct{}
	// open are the port-forwards still up, by namespace/pod/port: a
	// program that lists the mesh again and again (mesh dashboard) reuses
	// them rather than opening more.
	open map[string]openForward
}

type openForward struct {
	addr  string
	ended <-chan struct{} // closed when the forward ends (its pod went)
}

// Load reads the kubeconfig. It fails, saying why, when there is none or
// it names no usable cluster.
func Load(o Options) (*Source, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if o.Kubeconfig != "" {
		rules.ExplicitPath = o.Kubeconfig
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: o.Context}
	if o.Namespace != "" {
		overrides.Context.Namespace = o.Namespace
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	raw, err := cc.RawConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg, err := cc.ClientConfig()
	if clientcmd.IsEmptyConfig(err) {
		return nil, errors.New("no kubeconfig: give --kubeconfig, or set KUBECONFIG, or write ~/.kube/config")
	}
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	s := &Source{cfg: cfg, http: hc, context: raw.CurrentContext, namespace: ns, all: o.AllNamespaces, trustDomain: o.TrustDomain,
		namespaceGiven: o.Namespace != ""}
	if o.Context != "" {
		s.context = o.Context
	}
	if s.trustDomain == "" {
		s.trustDomain = "cluster.local"
	}
	return s, nil
}

// Describe says which cluster and namespace, for the user.
func (s *Source) Describe() string {
	ns := "namespace " + s.namespace
	if s.all {
		ns = "all namespaces"
	}
	return fmt.Sprintf("cluster %s (context %q), %s", s.cfg.Host, s.context, ns)
}

// get reads one API path into out.
func (s *Source) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimSuffix(s.cfg.Host, "/")+path, nil)
	if err != nil {
		return err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", s.cfg.Host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusNotFound {
		return &notFound{path: path}
	}
	if resp.StatusCode != http.StatusOK {
		var st metav1.Status
		msg := resp.Status
		if json.Unmarshal(body, &st) == nil && st.Message != "" {
			msg = st.Message
		}
		if resp.StatusCode == http.StatusForbidden {
			return &forbidden{msg: path + ": " + msg}
		}
		return fmt.Errorf("%s: %s", path, msg)
	}
	return json.Unmarshal(body, out)
}

func (s *Source) nsPath(group, resource string) string {
	if s.all {
		return group + "/" + resource
	}
	return group + "/namespaces/" + url.PathEscape(s.namespace) + "/" + resource
}

// Mesh lists the meshed pods, groups them by workload, and forwards a
// local port to each running proxy's admin port.
func (s *Source) Mesh(ctx context.Context) (*inventory.Mesh, error) {
	var pods corev1.PodList
	if err := s.get(ctx, s.nsPath("/api/v1", "pods"), &pods); err != nil {
		return nil, err
	}
	var rss appsv1.ReplicaSetList
	if err := s.get(ctx, s.nsPath("/apis/apps/v1", "replicasets"), &rss); err != nil {
		return nil, err
	}
	deployOf := map[string]string{} // namespace/replicaset -> deployment
	for _, rs := range rss.Items {
		for _, o := range rs.OwnerReferences {
			if o.Kind == "Deployment" {
				deployOf[rs.Namespace+"/"+rs.Name] = o.Name
			}
		}
	}
	var svcs corev1.ServiceList
	if err := s.get(ctx, s.nsPath("/api/v1", "services"), &svcs); err != nil {
		return nil, err
	}
	byRef := map[string]*inventory.Workload{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if !Meshed(p) || p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		kind, name := WorkloadOf(p, deployOf)
		key := p.Namespace + "/" + kind + "/" + name
		w := byRef[key]
		if w == nil {
			w = &inventory.Workload{Kind: kind, Name: name, Namespace: p.Namespace,
				Identity: fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", s.trustDomain, p.Namespace, serviceAccount(p))}
			byRef[key] = w
		}
		for _, svc := range svcs.Items {
			if selects(&svc, p) && !slices.Contains(w.Services, svc.Name) {
				w.Services = append(w.Services, svc.Name)
				if w.Service == "" && len(svc.Spec.Ports) > 0 {
					w.Service = fmt.Sprintf("%s.%s.svc.cluster.local:%d", svc.Name, svc.Namespace, svc.Spec.Ports[0].Port)
				}
			}
		}
		w.Instances = append(w.Instances, inventory.Instance{Name: p.Name, ProxyVersion: ProxyVersion(p)})
	}
	for _, w := range byRef {
		slices.Sort(w.Services)
	}
	m := &inventory.Mesh{}
	for _, w := range byRef {
		m.Workloads = append(m.Workloads, *w)
	}
	sort.Slice(m.Workloads, func(i, j int) bool {
		a, b := m.Workloads[i], m.Workloads[j]
		return a.Namespace+"/"+a.Ref() < b.Namespace+"/"+b.Ref()
	})
	// A port-forward to each proxy, all at once.
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErr error
	for i := range m.Workloads {
		w := &m.Workloads[i]
		for j := range w.Instances {
			wg.Add(1)
			go func() {
				defer wg.Done()
				addr, err := s.forward(w.Namespace, w.Instances[j].Name, wellknown.AdminPort)
				if err != nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					return
				}
				w.Instances[j].Admin = addr
			}()
		}
	}
	wg.Wait()
	if firstErr != nil {
		s.Close()
		return nil, firstErr
	}
	return m, nil
}

// selects reports whether a Service's selector picks the pod. A Service
// without a selector (its endpoints written by hand) picks none.
func selects(svc *corev1.Service, p *corev1.Pod) bool {
	if svc.Namespace != p.Namespace || len(svc.Spec.Selector) == 0 {
		return false
	}
	for k, v := range svc.Spec.Selector {
		if p.Labels[k] != v {
			return false
		}
	}
	return true
}

// ProxyVersion is the tag of the image the pod's proxy container runs
// (as the kubelet reports it, else as the spec asks), or "" if it has none.
func ProxyVersion(p *corev1.Pod) string {
	image := ""
	for _, c := range append(append([]corev1.Container(nil), p.Spec.InitContainers...), p.Spec.Containers...) {
		if c.Name == wellknown.ProxyContainer {
			image = c.Image
		}
	}
	for _, st := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if st.Name == wellknown.ProxyContainer && st.Image != "" {
			image = st.Image
		}
	}
	image, _, _ = strings.Cut(image, "@")
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		return image[i+1:]
	}
	return ""
}

// Meshed says whether a pod carries the mesh's proxy.
func Meshed(p *corev1.Pod) bool {
	for _, c := range p.Spec.InitContainers {
		if c.Name == wellknown.ProxyContainer {
			return true
		}
	}
	for _, c := range p.Spec.Containers {
		if c.Name == wellknown.ProxyContainer {
			return true
		}
	}
	return false
}

// WorkloadOf names the workload a pod belongs to, as kubectl abbreviates
// its kind: deploy (through its ReplicaSet), sts, ds, job, rs, or po for a
// pod of its own.
func WorkloadOf(p *corev1.Pod, deployOf map[string]string) (kind, name string) {
	for _, o := range p.OwnerReferences {
		if o.Controller == nil || !*o.Controller {
			continue
		}
		switch o.Kind {
		case "ReplicaSet":
			if d, ok := deployOf[p.Namespace+"/"+o.Name]; ok {
				return "deploy", d
			}
			return "rs", o.Name
		case "StatefulSet":
			return "sts", o.Name
		case "DaemonSet":
			return "ds", o.Name
		case "Job":
			return "job", o.Name
		}
	}
	return "po", p.Name
}

func serviceAccount(p *corev1.Pod) string {
	if p.Spec.ServiceAccountName != "" {
		return p.Spec.ServiceAccountName
	}
	return "default"
}

// forward opens a port-forward from a free local port on 127.0.0.1 to the
// pod's port, through the API server, and returns the local address.
func (s *Source) forward(namespace, pod string, port int) (string, error) {
	key := fmt.Sprintf("%s/%s/%d", namespace, pod, port)
	s.mu.Lock()
	if f, ok := s.open[key]; ok {
		select {
		case <-f.ended:
			delete(s.open, key)
		default:
			s.mu.Unlock()
			return f.addr, nil
		}
	}
	s.mu.Unlock()
	rt, upgrader, err := spdy.RoundTripperFor(s.cfg)
	if err != nil {
		return "", err
	}
	u, err := url.Parse(strings.TrimSuffix(s.cfg.Host, "/") + fmt.Sprintf("/api/v1/namespaces/%s/pods/%s/portforward", url.PathEscape(namespace), url.PathEscape(pod)))
	if err != nil {
		return "", err
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: rt}, "POST", u)
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		return "", err
	}
	failed, ended := make(chan error, 1), make(chan struct{})
	go func() { failed <- fw.ForwardPorts(); close(ended) }()
	select {
	case <-ready:
	case err := <-failed:
		return "", fmt.Errorf("port-forward to pod %s/%s port %d (the proxy's admin port; needs the pods/portforward right in %s): %w", namespace, pod, port, namespace, err)
	case <-time.After(30 * time.Second):
		close(stop)
		return "", fmt.Errorf("port-forward to pod %s/%s port %d: not ready within 30s", namespace, pod, port)
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		close(stop)
		return "", fmt.Errorf("port-forward to pod %s/%s: %v", namespace, pod, err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0].Local)
	s.mu.Lock()
	s.forwards = append(s.forwards, stop)
	if s.open == nil {
		s.open = map[string]openForward{}
	}
	s.open[key] = openForward{addr: addr, ended: ended}
	s.mu.Unlock()
	return addr, nil
}

// Close stops every port-forward.
func (s *Source) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, stop := range s.forwards {
		close(stop)
	}
	s.forwards, s.open = nil, nil
}

// ControlPlane is what runs the mesh's control plane on the cluster.
type ControlPlane struct {
	Namespace string `json:"namespace"`
	Version   string `json:"version"` // of its Deployment, as install labels it
	Ready     int32  `json:"ready"`
	Replicas  int32  `json:"replicas"`
}

// ErrNotInstalled means the cluster has no mesh control plane.
var ErrNotInstalled = errors.New("the mesh is not installed")

// ControlPlane reads the controller Deployment in namespace.
func (s *Source) ControlPlane(ctx context.Context, namespace string) (*ControlPlane, error) {
	var d appsv1.Deployment
	err := s.get(ctx, "/apis/apps/v1/namespaces/"+url.PathEscape(namespace)+"/deployments/mesh-controller", &d)
	if err != nil {
		var nf *notFound
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("%w in namespace %s (no deploy/mesh-controller): mesh install | kubectl apply -f -", ErrNotInstalled, namespace)
		}
		return nil, err
	}
	cp := &ControlPlane{Namespace: namespace, Version: d.Labels["app.kubernetes.io/version"], Ready: d.Status.ReadyReplicas}
	if d.Spec.Replicas != nil {
		cp.Replicas = *d.Spec.Replicas
	}
	return cp, nil
}

// notFound is a 404 from the API server.
type notFound struct{ path string }

func (e *notFound) Error() string { return e.path + ": not found" }
