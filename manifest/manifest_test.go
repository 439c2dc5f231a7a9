package manifest

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestReadTakesFilesDirectoriesURLsAndStdin(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	for name, body := range map[string]string{"a.yaml": "a", "sub/b.json": "b", "sub/c.yml": "c", "notes.txt": "skipped"} {
		os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("from the web"))
	}))
	defer srv.Close()
	got, err := Read([]string{dir, "-", srv.URL + "/m.yaml"}, strings.NewReader("from stdin"))
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, s := range got {
		seen = append(seen, filepath.Base(s.Name)+"="+string(s.Data))
	}
	want := "a.yaml=a b.json=b c.yml=c stdin=from stdin m.yaml=from the web"
	if strings.Join(seen, " ") != want {
		t.Errorf("read %q; want %q", strings.Join(seen, " "), want)
	}
	if _, err := Read([]string{srv.URL + "/missing"}, nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a URL answering 404: %v", err)
	}
	if _, err := Read([]string{filepath.Join(dir, "nope.yaml")}, nil); err == nil {
		t.Error("a missing file was read")
	}
}

func TestCheckShapeNamesTheFieldKubernetesWouldRefuse(t *testing.T) {
	const deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n"
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"containers as a string", deploy + "    spec: {containers: nginx}\n",
			"deployment/web: spec.template.spec.containers: want a list, got string"},
		{"a container without a name", deploy + "    spec: {containers: [{image: nginx}]}\n",
			"deployment/web: spec.template.spec.containers[0].name: required"},
		{"a container without an image", deploy + "    spec: {containers: [{name: web}]}\n",
			"spec.template.spec.containers[0].image: required"},
		{"an init container without a name", deploy + "    spec: {containers: [{name: web, image: nginx}], initContainers: [{image: busybox}]}\n",
			"spec.template.spec.initContainers[0].name: required"},
		{"no containers", deploy + "    spec: {containers: []}\n",
			"spec.template.spec.containers: required"},
		{"a port that is not a number", deploy + "    spec: {containers: [{name: web, image: nginx, ports: [{containerPort: eighty}]}]}\n",
			"spec.template.spec.containers.ports.containerPort: want a number"},
		{"the template as a list", deploy + "    - a\n",
			"deployment/web: spec.template: want an object"},
		{"labels as a list", deploy + "    metadata: {labels: [a]}\n    spec: {containers: [{name: web, image: nginx}]}\n",
			"spec.template.metadata.labels: want an object"},
		{"a pod", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: \"\", image: x}]}\n",
			"pod/p: spec.containers[0].name: required"},
		{"a List item", "apiVersion: v1\nkind: List\nitems:\n- " + strings.ReplaceAll(deploy+"    spec: {containers: 3}\n", "\n", "\n  "),
			"item 0 of the List: deployment/web: spec.template.spec.containers: want a list, got number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckShape(decode(t, tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckShape: %v; want an error containing %q", err, tc.want)
			}
		})
	}
	for _, ok := range []string{
		deploy + "    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx, ports: [{containerPort: 80}], resources: {limits: {memory: 64Mi}}}]}\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {containers: not a pod}\n",
	} {
		if err := CheckShape(decode(t, ok)); err != nil {
			t.Errorf("a well-formed object was refused: %v\n%s", err, ok)
		}
	}
}

func decode(t *testing.T, doc string) map[string]any {
	t.Helper()
	var o map[string]any
	if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
		t.Fatalf("test document: %v\n%s", err, doc)
	}
	return o
}
