package inventory

import (
	"strings"
	"testing"
)

var mesh = &Mesh{Workloads: []Workload{
	{Kind: "deploy", Name: "web", Namespace: "shop", Services: []string{"web", "frontend"}},
	{Kind: "deploy", Name: "api", Namespace: "shop", Services: []string{"api"}, Instances: []Instance{{Name: "api-5d8c-x2x9q"}, {Name: "api-5d8c-k7w2p"}}},
	{Kind: "sts", Name: "db", Namespace: "shop"},
	{Kind: "job", Name: "load", Namespace: "batch"},
	{Kind: "po", Name: "lonely", Namespace: "batch"},
}}

func refs(ws []Workload) string {
	var out []string
	for _, w := range ws {
		out = append(out, w.Ref())
	}
	return strings.Join(out, " ")
}

func TestSelectTakesResourcesAsKubectlUsersTypeThem(t *testing.T) {
	for typed, want := range map[string]string{
		"":                  "deploy/api sts/db job/load po/lonely deploy/web",
		"deploy":            "deploy/api deploy/web",
		"deployments":       "deploy/api deploy/web",
		"deploy/web":        "deploy/web",
		"deployment/web":    "deploy/web",
		"web":               "deploy/web",
		"sts/db":            "sts/db",
		"statefulsets":      "sts/db",
		"job/load":          "job/load",
		"po/lonely":         "po/lonely",
		"pod/lonely":        "po/lonely",
		"po/api-5d8c-k7w2p": "po/api-5d8c-k7w2p",
		"ns/batch":          "job/load po/lonely",
		"namespace/shop":    "deploy/api sts/db deploy/web",
		"Deployments/api":   "deploy/api",
		"ds":                "error: no ds in the mesh",
		"deploy/nope":       `error: no workload "nope" in the mesh; it has deploy/api, deploy/web, job/load, po/lonely, sts/db`,
		"sts/web":           `error: no workload "web" in the mesh; it has deploy/api, deploy/web, job/load, po/lonely, sts/db`,
		"svcx/web":          `error: resource "svcx/web": unknown kind "svcx" (use deploy/NAME, sts/NAME, ds/NAME, job/NAME, po/NAME, svc/NAME or ns/NAME)`,
		"svc/frontend":      "deploy/web",
		"service/api":       "deploy/api",
		"svc":               "deploy/api deploy/web",
		"svc/db":            `error: svc/db: no meshed workload is behind service "db"`,
	} {
		ws, err := mesh.Select(typed)
		got := refs(ws)
		if err != nil {
			got = "error: " + err.Error()
		}
		if got != want {
			t.Errorf("Select(%q) = %s; want %s", typed, got, want)
		}
	}
}

func TestServesKnowsEveryNameAPodMayUseForAService(t *testing.T) {
	web := Workload{Namespace: "shop", Services: []string{"web"}}
	demo := Workload{Namespace: "demo", Service: "api.demo:80"}
	for _, c := range []struct {
		w         Workload
		authority string
		want      bool
	}{
		{web, "web", true},
		{web, "web:8080", true},
		{web, "web.shop", true},
		{web, "web.shop.svc:80", true},
		{web, "WEB.shop.svc.cluster.local.:8080", true},
		{web, "web.shop.svc.example.org", true},
		{web, "web.other", false},
		{web, "webx.shop", false},
		{web, "10.0.0.1:80", false},
		{demo, "api.demo:80", true},
		{demo, "api.demo", true},
		{demo, "api", false},
	} {
		if got := c.w.Serves(c.authority); got != c.want {
			t.Errorf("%+v Serves(%q) = %v; want %v", c.w, c.authority, got, c.want)
		}
	}
}
