package check

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/inventory/kube"
	"github.com/meshproj/mesh/kubepolicy"
	"github.com/meshproj/mesh/wellknown"
)

// Policy is the category of the checks of authorization policy.
const Policy = "policy"

// policyChecks look at the policy.mesh.io resources as the controller
// reads them, for what admits nothing or everything by mistake.
func (c *Cluster) policyChecks() []Check {
	return []Check{
		{Category: Policy, Description: "the policy resources refer to what exists",
			Hint: "a Server that selects no pod, or an AuthorizationPolicy whose target or authentications do not exist, protects nothing and admits nobody: fix the names (kubectl get servers,authorizationpolicies,meshtlsauthentications,networkauthentications -A)",
			Run:  c.policyProblems},
		{Category: Policy, Description: "no meshed pod denies every client",
			Hint: "a pod whose default inbound policy is deny admits only its probes until an AuthorizationPolicy admits someone: add a Server and an AuthorizationPolicy for its ports (README: Authorization policy), or choose another default with the annotation " + wellknown.ConfigPrefix + wellknown.DefaultInboundPolicy,
			Run:  c.denyWithoutAuthorizations},
	}
}

// policyPath is what the checks read: the namespace given with -n, or
// every namespace.
func (c *Cluster) policyPath(group, resource string) string {
	if c.Source.NamespaceGiven() && !c.Source.AllNamespaces() {
		return group + "/namespaces/" + url.PathEscape(c.Source.Namespace()) + "/" + resource
	}
	return group + "/" + resource
}

// policyView is the resources and pods the policy checks look at.
type policyView struct {
	set  kubepolicy.Set
	pods []*kubepolicy.Pod
	core []*corev1.Pod
	// undecodable names objects that do not decode, as the controller
	// skips them.
	undecodable []string
	noCRDs      bool
}

// policies reads them once for every check that asks.
func (c *Cluster) policies(ctx context.Context) (*policyView, error) {
	c.policyOnce.Do(func() { c.policy, c.policyErr = c.readPolicies(ctx) })
	return c.policy, c.policyErr
}

func (c *Cluster) readPolicies(ctx context.Context) (*policyView, error) {
	v := &policyView{set: kubepolicy.Set{MeshTLS: map[string]*kubepolicy.MeshTLSAuthentication{}, Networks: map[string]*kubepolicy.NetworkAuthentication{}}}
	const api = "/apis/policy.mesh.io/v1alpha1"
	lists := []struct {
		resource string
		add      func(json.RawMessage) error
	}{
		{"servers", func(raw json.RawMessage) error { return decodeTo(raw, &v.set.Servers) }},
		{"authorizationpolicies", func(raw json.RawMessage) error { return decodeTo(raw, &v.set.AuthorizationPolicies) }},
		{"meshtlsauthentications", func(raw json.RawMessage) error {
			return decodeKeyed(raw, v.set.MeshTLS, func(m *kubepolicy.MeshTLSAuthentication) string { return m.Metadata.Key() })
		}},
		{"networkauthentications", func(raw json.RawMessage) error {
			return decodeKeyed(raw, v.set.Networks, func(n *kubepolicy.NetworkAuthentication) string { return n.Metadata.Key() })
		}},
	}
	for _, l := range lists {
		var list struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := c.Source.Get(ctx, c.policyPath(api, l.resource), &list); err != nil {
			if kube.IsNotFound(err) {
				v.noCRDs = true
				return v, nil
			}
			return nil, err
		}
		for _, raw := range list.Items {
			if err := l.add(raw); err != nil {
				v.undecodable = append(v.undecodable, fmt.Sprintf("%s %s: does not decode (%v): the controller skips it", strings.TrimSuffix(l.resource, "s"), objectKey(raw), err))
			}
		}
	}
	var pods struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := c.Source.Get(ctx, c.policyPath("/api/v1", "pods"), &pods); err != nil {
		return nil, err
	}
	for _, raw := range pods.Items {
		var p kubepolicy.Pod
		var core corev1.Pod
		if json.Unmarshal(raw, &p) != nil || json.Unmarshal(raw, &core) != nil || core.Status.Phase == corev1.PodSucceeded || core.Status.Phase == corev1.PodFailed {
			continue
		}
		v.pods = append(v.pods, &p)
		v.core = append(v.core, &core)
	}
	return v, nil
}

// decodeTo decodes one object and appends it, or says why it cannot.
func decodeTo[T any](raw json.RawMessage, to *[]*T) error {
	o := new(T)
	if err := json.Unmarshal(raw, o); err != nil {
		return err
	}
	*to = append(*to, o)
	return nil
}

// decodeKeyed decodes one object into a map by its key.
func decodeKeyed[T any](raw json.RawMessage, to map[string]*T, key func(*T) string) error {
	o := new(T)
	if err := json.Unmarshal(raw, o); err != nil {
		return err
	}
	to[key(o)] = o
	return nil
}

func objectKey(raw json.RawMessage) string {
	var m struct {
		Metadata struct{ Name, Namespace string } `json:"metadata"`
	}
	json.Unmarshal(raw, &m)
	return m.Metadata.Namespace + "/" + m.Metadata.Name
}

// unreadable is how a policy check ends when the resources cannot be
// read: a warning where RBAC does not let this user, a failure otherwise.
func unreadable(err error) (Status, string) {
	if kube.IsForbidden(err) {
		return Warn, "cannot read the policy resources: " + err.Error()
	}
	return Fail, err.Error()
}

func (c *Cluster) policyProblems(ctx context.Context) (Status, string) {
	v, err := c.policies(ctx)
	switch {
	case err != nil:
		return unreadable(err)
	case v.noCRDs:
		return Warn, "the policy.mesh.io CRDs are not installed: mesh install --crds | kubectl apply -f -"
	}
	lines := append([]string{}, v.undecodable...)
	for _, p := range v.set.Problems(v.pods, c.Source.TrustDomain()) {
		lines = append(lines, p.String())
	}
	if len(lines) == 0 {
		return OK, ""
	}
	return Warn, strings.Join(limitLines(lines, 20), "\n")
}

// denyWithoutAuthorizations names the meshed pods whose default policy is
// deny and to which no authorization admits any client: only the kubelet's
// probes get in.
func (c *Cluster) denyWithoutAuthorizations(ctx context.Context) (Status, string) {
	v, err := c.policies(ctx)
	if err != nil {
		return unreadable(err)
	}
	byNS := map[string][]string{}
	for i, core := range v.core {
		if !kube.Meshed(core) || defaultInboundPolicy(core) != discovery.Deny {
			continue
		}
		ip := v.set.ForPod(v.pods[i], c.Source.TrustDomain())
		admitted := false
		for _, s := range ip.Servers {
			admitted = admitted || len(s.Authorizations) > 0
		}
		if !admitted {
			byNS[core.Namespace] = append(byNS[core.Namespace], core.Name)
		}
	}
	if len(byNS) == 0 {
		return OK, ""
	}
	var lines []string
	for ns, pods := range byNS {
		sort.Strings(pods)
		lines = append(lines, fmt.Sprintf("namespace %s: %s default to deny and no AuthorizationPolicy admits a client: only the kubelet's probes get in",
			ns, kubepolicy.Enumerate(pods, "pod", "pods")))
	}
	sort.Strings(lines)
	return Warn, strings.Join(lines, "\n")
}

// defaultInboundPolicy is the one the webhook gave the pod's proxy.
func defaultInboundPolicy(p *corev1.Pod) discovery.DefaultPolicy {
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, ctr := range cs {
			if ctr.Name != wellknown.ProxyContainer {
				continue
			}
			for _, e := range ctr.Env {
				if e.Name == "MESH_DEFAULT_INBOUND_POLICY" {
					return discovery.DefaultPolicy(e.Value)
				}
			}
		}
	}
	return discovery.AllUnauthenticated
}

func limitLines(lines []string, n int) []string {
	if len(lines) <= n {
		return lines
	}
	return append(lines[:n:n], fmt.Sprintf("and %d more", len(lines)-n))
}
