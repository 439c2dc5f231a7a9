package kubepolicy

import (
	"encoding/json"
	"testing"

	"github.com/meshproj/mesh/proxy/authz"
)

// FuzzPolicyResources feeds the resources as the API server could serve
// them (any JSON the types decode) and checks that a pod's policy only
// ever holds Servers that select it on a port it has, one per port, that
// the proxy compiles, and that Problems never fails on them.
func FuzzPolicyResources(f *testing.F) {
	f.Add(`{"metadata":{"name":"p","namespace":"n","labels":{"app":"a"}},"spec":{"containers":[{"ports":[{"name":"http","containerPort":8080}]}]}}`,
		`{"metadata":{"name":"s","namespace":"n"},"spec":{"podSelector":{"matchLabels":{"app":"a"}},"port":"http","proxyProtocol":"HTTP/1"}}`,
		`{"metadata":{"name":"ap","namespace":"n"},"spec":{"targetRef":{"kind":"Server","name":"s"},"requiredAuthenticationRefs":[{"kind":"NetworkAuthentication","name":"net"},{"kind":"MeshTLSAuthentication","name":"m"}]}}`,
		`{"metadata":{"name":"net","namespace":"n"},"spec":{"networks":[{"cidr":"10.0.0.0/8","except":["10.1.0.0/16"]}]}}`,
		`{"metadata":{"name":"m","namespace":"n"},"spec":{"identities":["spiffe://cluster.local/ns/*/sa/web"],"identityRefs":[{"kind":"Namespace","name":"ops"}]}}`)
	f.Add(`{"metadata":{"name":"p","namespace":"n"},"spec":{"containers":[{"ports":[{"name":"zero","containerPort":0},{"name":"big","containerPort":70000}]}]}}`,
		`{"metadata":{"name":"s","namespace":"n"},"spec":{"podSelector":{},"port":"zero"}}`, `{}`, `{}`, `{}`)
	f.Add(`{"metadata":{"name":"p","namespace":"n"},"spec":{"containers":[]}}`,
		`{"metadata":{"name":"s","namespace":"n"},"spec":{"podSelector":{"matchExpressions":[{"key":"x","operator":"DoesNotExist"}]},"port":70000}}`,
		`{"metadata":{"name":"ap","namespace":"n"},"spec":{"targetRef":{"kind":"Namespace","name":"n"},"requiredAuthenticationRefs":[]}}`,
		`{"metadata":{"name":"net","namespace":"n"},"spec":{"networks":[{"cidr":"::/0"}]}}`,
		`{}`)
	f.Fuzz(func(t *testing.T, podJS, serverJS, apJS, netJS, mtlsJS string) {
		var pod Pod
		var srv Server
		var ap AuthorizationPolicy
		var na NetworkAuthentication
		var m MeshTLSAuthentication
		if json.Unmarshal([]byte(podJS), &pod) != nil || json.Unmarshal([]byte(serverJS), &srv) != nil ||
			json.Unmarshal([]byte(apJS), &ap) != nil || json.Unmarshal([]byte(netJS), &na) != nil || json.Unmarshal([]byte(mtlsJS), &m) != nil {
			return
		}
		// Two Servers alike, the second on the same port: one is ignored.
		srv2 := srv
		srv2.Metadata.Name += "-2"
		set := &Set{Servers: []*Server{&srv, &srv2}, AuthorizationPolicies: []*AuthorizationPolicy{&ap},
			Networks: map[string]*NetworkAuthentication{na.Metadata.Key(): &na}, MeshTLS: map[string]*MeshTLSAuthentication{m.Metadata.Key(): &m}}
		ip := set.ForPod(&pod, "cluster.local")
		ports := map[uint16]bool{}
		for _, s := range ip.Servers {
			if s.Port == 0 || ports[s.Port] {
				t.Fatalf("server %s on port %d twice or zero: %+v", s.Name, s.Port, ip)
			}
			ports[s.Port] = true
			if !srv.Spec.PodSelector.Matches(pod.Metadata.Labels) || srv.Metadata.Namespace != pod.Metadata.Namespace {
				t.Fatalf("a server that does not select the pod is in its policy: %+v", ip)
			}
			for _, a := range s.Authorizations {
				if len(a.Identities) == 0 && len(a.Networks) == 0 {
					t.Fatalf("authorization %s admits by nothing: %+v", a.Name, a)
				}
			}
		}
		if _, err := authz.Compile(&ip, "deny", nil); err != nil {
			t.Fatalf("the proxy refuses what the controller serves: %v\n%+v", err, ip)
		}
		set.Problems([]*Pod{&pod}, "cluster.local")
	})
}
