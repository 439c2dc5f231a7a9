package inventory

import (
	"strings"
	"testing"
)

var mesh = &Mesh{Workloads: []Workload{
	{Kind: "deploy", Name: "web", Namespace: "shop"},
	{Kind: "deploy", Name: "api", Namespace: "shop"},
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
		"":                "deploy/api sts/db job/load po/lonely deploy/web",
		"deploy":          "deploy/api deploy/web",
		"deployments":     "deploy/api deploy/web",
		"deploy/web":      "deploy/web",
		"deployment/web":  "deploy/web",
		"web":             "deploy/web",
		"sts/db":          "sts/db",
		"statefulsets":    "sts/db",
		"job/load":        "job/load",
		"po/lonely":       "po/lonely",
		"pod/lonely":      "po/lonely",
		"ns/batch":        "job/load po/lonely",
		"namespace/shop":  "deploy/api sts/db deploy/web",
		"Deployments/api": "deploy/api",
		"ds":              "error: no ds in the mesh",
		"deploy/nope":     `error: no workload "nope" in the mesh; it has deploy/api, deploy/web, job/load, po/lonely, sts/db`,
		"sts/web":         `error: no workload "web" in the mesh; it has deploy/api, deploy/web, job/load, po/lonely, sts/db`,
		"svcx/web":        `error: resource "svcx/web": unknown kind "svcx" (use deploy/NAME, sts/NAME, ds/NAME, job/NAME, po/NAME or ns/NAME)`,
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
