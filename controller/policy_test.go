package controller

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
	pod := decodeInto[policyPod](t, `{"metadata":{"name":"api-1","namespace":"shop","labels":{"app":"api","tier":"back"}},
		"spec":{"containers":[{"ports":[{"name":"http","containerPort":8080},{"name":"admin","containerPort":9000}]}]}}`)
	servers := []*policyServer{
		decodeInto[policyServer](t, `{"metadata":{"name":"api-http","namespace":"shop"},"spec":{"podSelector":{"matchLabels":{"app":"api"}},"port":"http","proxyProtocol":"HTTP/1"}}`),
		decodeInto[policyServer](t, `{"metadata":{"name":"api-admin","namespace":"shop"},"spec":{"podSelector":{"matchExpressions":[{"key":"tier","operator":"In","values":["back"]}]},"port":9000}}`),
		decodeInto[policyServer](t, `{"metadata":{"name":"web-http","namespace":"shop"},"spec":{"podSelector":{"matchLabels":{"app":"web"}},"port":8080}}`),
		decodeInto[policyServer](t, `{"metadata":{"name":"other-ns","namespace":"ops"},"spec":{"podSelector":{},"port":8080}}`),
		decodeInto[policyServer](t, `{"metadata":{"name":"no-such-port","namespace":"shop"},"spec":{"podSelector":{},"port":"grpc"}}`),
	}
	aps := []*authorizationPolicy{
		decodeInto[authorizationPolicy](t, `{"metadata":{"name":"web-to-api","namespace":"shop"},"spec":{"targetRef":{"kind":"Server","name":"api-http"},
			"requiredAuthenticationRefs":[{"kind":"MeshTLSAuthentication","name":"web-and-ops"},{"kind":"NetworkAuthentication","name":"cluster"}]}}`),
		decodeInto[authorizationPolicy](t, `{"metadata":{"name":"sa-admin","namespace":"shop"},"spec":{"targetRef":{"kind":"Server","name":"api-admin"},
			"requiredAuthenticationRefs":[{"kind":"ServiceAccount","name":"admin","namespace":"ops"}]}}`),
		decodeInto[authorizationPolicy](t, `{"metadata":{"name":"broken","namespace":"shop"},"spec":{"targetRef":{"kind":"Namespace","name":"shop"},
			"requiredAuthenticationRefs":[{"kind":"MeshTLSAuthentication","name":"missing"}]}}`),
	}
	mtls := map[string]*meshTLSAuthentication{"shop/web-and-ops": decodeInto[meshTLSAuthentication](t,
		`{"metadata":{"name":"web-and-ops","namespace":"shop"},"spec":{"identityRefs":[{"kind":"ServiceAccount","name":"web"},{"kind":"Namespace","name":"ops"}]}}`)}
	nets := map[string]*networkAuthentication{"shop/cluster": decodeInto[networkAuthentication](t,
		`{"metadata":{"name":"cluster","namespace":"shop"},"spec":{"networks":[{"cidr":"10.0.0.0/8","except":["10.9.0.0/16"]}]}}`)}

	ip, problems := podPolicy(pod, "cluster.local", servers, aps, mtls, nets)
	got, _ := json.Marshal(ip)
	want := `{"servers":[` +
		`{"name":"api-http","port":8080,"protocol":"http1","authorizations":[{"name":"web-to-api","identities":["spiffe://cluster.local/ns/shop/sa/web","spiffe://cluster.local/ns/ops/sa/*"],"networks":[{"cidr":"10.0.0.0/8","except":["10.9.0.0/16"]}]}]},` +
		`{"name":"api-admin","port":9000,"authorizations":[{"name":"sa-admin","identities":["spiffe://cluster.local/ns/ops/sa/admin"]}]}]}`
	if string(got) != want {
		t.Errorf("policy\n%s\nwant\n%s", got, want)
	}
	all := strings.Join(problems, "\n")
	for _, p := range []string{"server shop/no-such-port: port grpc is no container port of pod api-1", "authorizationpolicy shop/broken: meshtlsauthentication shop/missing does not exist"} {
		if !strings.Contains(all, p) {
			t.Errorf("problems do not say %q:\n%s", p, all)
		}
	}
	// What the controller serves, the proxy compiles.
	var back discovery.InboundPolicy
	if err := json.Unmarshal(got, &back); err != nil || len(back.Servers) != 2 || back.Servers[0].Authorizations[0].Networks[0].Except[0].String() != "10.9.0.0/16" {
		t.Errorf("round trip: %+v %v", back, err)
	}
}

func TestAnAuthorizationWithoutRequirementsAdmitsEveryone(t *testing.T) {
	ap := decodeInto[authorizationPolicy](t, `{"metadata":{"name":"open","namespace":"shop"},"spec":{"targetRef":{"kind":"Server","name":"x"},"requiredAuthenticationRefs":[]}}`)
	a, err := authorization(ap, "cluster.local", nil, nil)
	if err != nil || len(a.Networks) != 2 || a.Networks[0].CIDR.String() != "0.0.0.0/0" || a.Networks[1].CIDR.String() != "::/0" {
		t.Errorf("%+v %v", a, err)
	}
}
