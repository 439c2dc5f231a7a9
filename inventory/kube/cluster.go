package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshproj/mesh/wellknown"
)

// What the diagnostics read beyond the meshed pods: the API server itself,
// the control plane's objects and pods, and a port-forward to any of them.

// Namespace is the namespace the source reads, and NamespaceGiven whether
// the user named it (-n) rather than taking the context's.
func (s *Source) Namespace() string { return s.namespace }

// AllNamespaces reports whether the source reads every namespace.
func (s *Source) AllNamespaces() bool { return s.all }

// NamespaceGiven reports whether -n named the namespace.
func (s *Source) NamespaceGiven() bool { return s.namespaceGiven }

// TrustDomain is the mesh's trust domain.
func (s *Source) TrustDomain() string { return s.trustDomain }

// Get reads one API path (as /api/v1/namespaces/x/pods) into out. A
// missing object is an error that IsNotFound recognises.
func (s *Source) Get(ctx context.Context, path string, out any) error {
	return s.get(ctx, path, out)
}

// IsNotFound reports whether err is the API server's 404.
func IsNotFound(err error) bool {
	var nf *notFound
	return errors.As(err, &nf)
}

// IsForbidden reports whether err is the API server refusing the user.
func IsForbidden(err error) bool {
	var f *forbidden
	return errors.As(err, &f)
}

// forbidden is a 403 from the API server.
type forbidden struct{ msg string }

func (e *forbidden) Error() string { return e.msg }

// ServerInfo is what the API server says of itself, and the time its
// clock read when it answered.
type ServerInfo struct {
	GitVersion string `json:"gitVersion"`
	Major      string `json:"major"`
	Minor      string `json:"minor"`
	Date       time.Time
	// RoundTrip is how long the question took: the clock comparison is no
	// better than that.
	RoundTrip time.Duration
}

// Server asks the API server for its version.
func (s *Source) Server(ctx context.Context) (*ServerInfo, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimSuffix(s.cfg.Host, "/")+"/version", nil)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.cfg.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/version: %s", s.cfg.Host, resp.Status)
	}
	var info ServerInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return nil, fmt.Errorf("%s/version: %w", s.cfg.Host, err)
	}
	info.RoundTrip = time.Since(start)
	if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		info.Date = d
	}
	return &info, nil
}

// ControllerSelector is the label selector of the controller's pods.
const ControllerSelector = "app.kubernetes.io/part-of=mesh,app.kubernetes.io/component=controller"

// Pods lists the pods of a namespace ("" for every namespace) that match a
// label selector ("" for all).
func (s *Source) Pods(ctx context.Context, namespace, selector string) ([]corev1.Pod, error) {
	path := "/api/v1/pods"
	if namespace != "" {
		path = "/api/v1/namespaces/" + url.PathEscape(namespace) + "/pods"
	}
	if selector != "" {
		path += "?labelSelector=" + url.QueryEscape(selector)
	}
	var pods corev1.PodList
	if err := s.get(ctx, path, &pods); err != nil {
		return nil, err
	}
	return pods.Items, nil
}

// Ready reports whether a pod runs and is ready.
func Ready(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Forward opens a port-forward to a pod's port through the API server and
// returns the local address (127.0.0.1:port); Close stops it.
func (s *Source) Forward(namespace, pod string, port int) (string, error) {
	return s.forward(namespace, pod, port)
}

// ForwardController forwards to port on a ready controller pod.
func (s *Source) ForwardController(ctx context.Context, namespace string, port int) (string, error) {
	pods, err := s.Pods(ctx, namespace, ControllerSelector)
	if err != nil {
		return "", err
	}
	for i := range pods {
		if Ready(&pods[i]) {
			return s.forward(namespace, pods[i].Name, port)
		}
	}
	return "", fmt.Errorf("no ready controller pod in %s (%d found): kubectl -n %s get pods -l %s", namespace, len(pods), namespace, ControllerSelector)
}

// TrustAnchors reads the mesh's trust anchors (PEM) from the control
// plane's namespace.
func (s *Source) TrustAnchors(ctx context.Context, namespace string) ([]byte, error) {
	var cm corev1.ConfigMap
	if err := s.get(ctx, "/api/v1/namespaces/"+url.PathEscape(namespace)+"/configmaps/"+wellknown.TrustAnchorsConfigMap, &cm); err != nil {
		return nil, err
	}
	pem := cm.Data[wellknown.TrustAnchorsKey]
	if pem == "" {
		return nil, fmt.Errorf("configmap %s/%s has no %s", namespace, wellknown.TrustAnchorsConfigMap, wellknown.TrustAnchorsKey)
	}
	return []byte(pem), nil
}
