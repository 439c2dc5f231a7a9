package kubepolicy

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/meshproj/mesh/discovery"
)

func decodeInto[T any](t *testing.T, js string) *T {
	t.Helper()
	v := new(T)
	if err := json.Unmarshal([]byte(js), v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestAPodsPolicyComesFromTheServersThatSelectIt(t *testing.T) {
	pod := decodeInto[Pod](t, `{"metadata":{"name":"api-1","namespace":"shop","labels":{"app":"api","tier":"back"}},
		"spec":{"containers":[{"ports":[{"name":"http","containerPort":8080},{"name":"admin","containerPort":9000}]}]}}`)
	servers := []*Server{
		decodeInto[Server](t, `{"metadata":{"name":"api-http","namespace":"shop"},"spec":{"podSelector":{"matchLabels":{"app":"api"}},"port":"http","proxyProtocol":"HTTP/1"}}`),
		decodeInto[Server](t, `{"metadata":{"name":"api-admin","namespace":"shop"},"spec":{"podSelector":{"matchExpressions":[{"key":"tier","operator":"In","values":["back"]}]},"port":9000}}`),
		decodeInto[Server](t, `{"metadata":{"name":"web-http","namespace":"shop"},"spec":{"podSelector":{"matchLabels":{"app":"web"}},"port":8080}}`),
		decodeInto[Server](t, `{"metadata":{"name":"other-ns","namespace":"ops"},"spec":{"podSelector":{},"port":8080}}`),
		decodeInto[Server](t, `{"metadata":{"name":"no-such-port","namespace":"shop"},"spec":{"podSelector":{},"port":"grpc"}}`),
	}
	aps := []*AuthorizationPolicy{
		decodeInto[AuthorizationPolicy](t, `{"metadata":{"name":"web-to-api","namespace":"shop"},"spec":{"targetRef":{"kind":"Server","name":"api-http"},
			"requiredAuthenticationRefs":[{"kind":"MeshTLSAuthentication","name":"web-and-ops"},{"kind":"NetworkAuthentication","name":"cluster"}]}}`),
		decodeInto[AuthorizationPolicy](t, `{"metadata":{"name":"sa-admin","namespace":"shop"},"spec":{"targetRef":{"kind":"Server","name":"api-admin"},
			"requiredAuthenticationRefs":[{"kind":"ServiceAccount","name":"admin","namespace":"ops"}]}}`),
		decodeInto[AuthorizationPolicy](t, `{"metadata":{"name":"broken","namespace":"shop"},"spec":{"targetRef":{"kind":"Namespace","name":"shop"},
			"requiredAuthenticationRefs":[{"kind":"MeshTLSAuthentication","name":"missing"}]}}`),
	}
	mtls := map[string]*MeshTLSAuthentication{"shop/web-and-ops": decodeInto[MeshTLSAuthentication](t,
		`{"metadata":{"name":"web-and-ops","namespace":"shop"},"spec":{"identityRefs":[{"kind":"ServiceAccount","name":"web"},{"kind":"Namespace","name":"ops"}]}}`)}
	nets := map[string]*NetworkAuthentication{"shop/cluster": decodeInto[NetworkAuthentication](t,
		`{"metadata":{"name":"cluster","namespace":"shop"},"spec":{"networks":[{"cidr":"10.0.0.0/8","except":["10.9.0.0/16"]}]}}`)}

	set := &Set{Servers: servers, AuthorizationPolicies: aps, MeshTLS: mtls, Networks: nets}
	ip := set.ForPod(pod, "cluster.local")
	got, _ := json.Marshal(ip)
	want := `{"servers":[` +
		`{"name":"api-http","port":8080,"protocol":"http1","authorizations":[{"name":"web-to-api","identities":["spiffe://cluster.local/ns/shop/sa/web","spiffe://cluster.local/ns/ops/sa/*"],"networks":[{"cidr":"10.0.0.0/8","except":["10.9.0.0/16"]}]}]},` +
		`{"name":"api-admin","port":9000,"authorizations":[{"name":"sa-admin","identities":["spiffe://cluster.local/ns/ops/sa/admin"]}]}]}`
	if string(got) != want {
		t.Errorf("policy\n%s\nwant\n%s", got, want)
	}
	checkProblems(t, set, []*Pod{pod}, []string{
		"authorizationpolicy shop/broken: meshtlsauthentication shop/missing does not exist: it admits nothing",
		"server ops/other-ns: its podSelector selects no pod",
		"server shop/no-such-port: port grpc is no container port of pod api-1",
		"server shop/web-http: its podSelector selects no pod",
	})
	// What the controller serves, the proxy compiles.
	var back discovery.InboundPolicy
	if err := json.Unmarshal(got, &back); err != nil || len(back.Servers) != 2 || back.Servers[0].Authorizations[0].Networks[0].Except[0].String() != "10.9.0.0/16" {
		t.Errorf("round trip: %+v %v", back, err)
	}
}

func TestAnAuthorizationWithoutRequirementsAdmitsEveryone(t *testing.T) {
	ap := decodeInto[AuthorizationPolicy](t, `{"metadata":{"name":"open","namespace":"shop"},"spec":{"targetRef":{"kind":"Server","name":"x"},"requiredAuthenticationRefs":[]}}`)
	a, err := (&Set{}).authorization(ap, "cluster.local")
	if err != nil || len(a.Networks) != 2 || a.Networks[0].CIDR.String() != "0.0.0.0/0" || a.Networks[1].CIDR.String() != "::/0" {
		t.Errorf("%+v %v", a, err)
	}
}

func TestProblemsNameWhatAdmitsNothingAndWhy(t *testing.T) {
	pods := []*Pod{
		decodeInto[Pod](t, `{"metadata":{"name":"api-1","namespace":"shop","labels":{"app":"api"}},"spec":{"containers":[{"ports":[{"name":"http","containerPort":8080}]}]}}`),
		decodeInto[Pod](t, `{"metadata":{"name":"api-2","namespace":"shop","labels":{"app":"api"}},"spec":{"containers":[{"ports":[{"name":"http","containerPort":8080}]}]}}`),
	}
	set := &Set{
		Servers: []*Server{
			decodeInto[Server](t, `{"metadata":{"name":"api-http","namespace":"shop","creationTimestamp":"2026-01-01T00:00:00Z"},"spec":{"podSelector":{"matchLabels":{"app":"api"}},"port":"http"}}`),
			decodeInto[Server](t, `{"metadata":{"name":"api-8080","namespace":"shop","creationTimestamp":"2026-02-01T00:00:00Z"},"spec":{"podSelector":{},"port":8080}}`),
		},
		AuthorizationPolicies: []*AuthorizationPolicy{
			decodeInto[AuthorizationPolicy](t, `{"metadata":{"name":"to-nothing","namespace":"shop"},"spec":{"targetRef":{"kind":"Server","name":"gone"},"requiredAuthenticationRefs":[]}}`),
			decodeInto[AuthorizationPolicy](t, `{"metadata":{"name":"other-ns","namespace":"shop"},"spec":{"targetRef":{"kind":"Namespace","name":"ops"},"requiredAuthenticationRefs":[]}}`),
			decodeInto[AuthorizationPolicy](t, `{"metadata":{"name":"route","namespace":"shop"},"spec":{"targetRef":{"kind":"HTTPRoute","name":"r"},"requiredAuthenticationRefs":[]}}`),
			decodeInto[AuthorizationPolicy](t, `{"metadata":{"name":"bad-cidr","namespace":"shop"},"spec":{"targetRef":{"kind":"Server","name":"api-http"},"requiredAuthenticationRefs":[{"kind":"NetworkAuthentication","name":"bad"}]}}`),
			decodeInto[AuthorizationPolicy](t, `{"metadata":{"name":"good","namespace":"shop"},"spec":{"targetRef":{"kind":"Server","name":"api-http"},"requiredAuthenticationRefs":[{"kind":"ServiceAccount","name":"web"}]}}`),
		},
		Networks: map[string]*NetworkAuthentication{"shop/bad": decodeInto[NetworkAuthentication](t, `{"metadata":{"name":"bad","namespace":"shop"},"spec":{"networks":[{"cidr":"10.0.0.0/33"}]}}`)},
	}
	checkProblems(t, set, pods, []string{
		`authorizationpolicy shop/bad-cidr: networkauthentication shop/bad: "10.0.0.0/33" is not a CIDR: it admits nothing`,
		"authorizationpolicy shop/other-ns: it targets namespace ops, but applies only in its own (shop)",
		"authorizationpolicy shop/route: it targets HTTPRoute r, and the mesh serves no routes yet: it admits nothing",
		"authorizationpolicy shop/to-nothing: its target, Server shop/gone, does not exist",
		"server shop/api-8080: an older Server already selects its port of pods api-1 (by api-http), api-2 (by api-http): it is ignored there",
	})
	// The malformed policy breaks nothing else: the good one still admits
	// web on the older Server's port, and the newer Server is not served.
	ip := set.ForPod(pods[0], "cluster.local")
	if len(ip.Servers) != 1 || ip.Servers[0].Name != "api-http" || len(ip.Servers[0].Authorizations) != 1 || ip.Servers[0].Authorizations[0].Name != "good" {
		t.Errorf("policy of api-1: %+v", ip)
	}
}

// checkProblems compares what Problems says of set with want, in order.
func checkProblems(t *testing.T, set *Set, pods []*Pod, want []string) {
	t.Helper()
	var got []string
	for _, p := range set.Problems(pods, "cluster.local") {
		got = append(got, p.String())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
