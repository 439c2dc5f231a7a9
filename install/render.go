package install

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/meshproj/mesh/templates"
)

// Object is one rendered Kubernetes object.
type Object = map[string]any

// CRDs renders the CustomResourceDefinitions alone.
func CRDs() ([]Object, error) {
	return renderDir("crds", map[string]string{})
}

// Objects renders the whole control plane, in the order it should be
// applied: namespace, CRDs, then everything that uses them.
func Objects(v Values, m *Material) ([]Object, error) {
	if err := v.Validate(); err != nil {
		return nil, err
	}
	vy, err := yaml.Marshal(v)
	if err != nil {
		return nil, err
	}
	vs := vars(v, m, string(vy))
	ns, err := renderFiles([]string{"install/00-namespace.yaml"}, vs)
	if err != nil {
		return nil, err
	}
	crds, err := CRDs()
	if err != nil {
		return nil, err
	}
	rest, err := renderDir("install", vs, "install/00-namespace.yaml")
	if err != nil {
		return nil, err
	}
	if v.Dashboards {
		entries, err := fs.ReadDir(templates.FS, "dashboards")
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			b, err := fs.ReadFile(templates.FS, "dashboards/"+e.Name())
			if err != nil {
				return nil, err
			}
			vs["dashboard.name"], vs["dashboard.json"] = strings.TrimSuffix(e.Name(), ".json"), string(b)
			d, err := renderFiles([]string{"install/dashboard.part"}, vs)
			if err != nil {
				return nil, err
			}
			rest = append(rest, d...)
		}
	}
	return append(append(ns, crds...), rest...), nil
}

func renderDir(dir string, vs map[string]string, skip ...string) ([]Object, error) {
	entries, err := fs.ReadDir(templates.FS, dir)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		p := path.Join(dir, e.Name())
		if strings.HasSuffix(p, ".yaml") && !slices.Contains(skip, p) {
			files = append(files, p)
		}
	}
	sort.Strings(files)
	return renderFiles(files, vs)
}

func renderFiles(files []string, vs map[string]string) ([]Object, error) {
	var out []Object
	for _, f := range files {
		raw, err := fs.ReadFile(templates.FS, f)
		if err != nil {
			return nil, err
		}
		text, err := expand(f, string(raw), vs)
		if err != nil {
			return nil, fmt.Errorf("template %w", err)
		}
		dec := yaml.NewDecoder(strings.NewReader(text))
		for {
			var o Object
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("template %s renders invalid YAML: %w", f, err)
			}
			if len(o) > 0 {
				out = append(out, o)
			}
		}
	}
	return out, nil
}

// Encode writes objects as YAML documents or as one JSON List.
func Encode(w io.Writer, objs []Object, format string) error {
	switch format {
	case "json":
		items := make([]any, len(objs))
		for i, o := range objs {
			items[i] = o
		}
		b, err := json.MarshalIndent(map[string]any{"apiVersion": "v1", "kind": "List", "items": items}, "", "  ")
		if err != nil {
			return err
		}
		_, err = w.Write(append(b, '\n'))
		return err
	case "yaml", "":
		for i, o := range objs {
			if i > 0 {
				if _, err := io.WriteString(w, "---\n"); err != nil {
					return err
				}
			}
			enc := yaml.NewEncoder(w)
			enc.SetIndent(2)
			if err := enc.Encode(o); err != nil {
				return err
			}
			enc.Close()
		}
		return nil
	}
	return fmt.Errorf("unknown output format %q: use yaml or json", format)
}

// Uninstall returns references to every object install creates, newest
// first, for `kubectl delete -f -`.
func Uninstall(objs []Object) []Object {
	out := make([]Object, 0, len(objs))
	for i := len(objs) - 1; i >= 0; i-- {
		o := objs[i]
		meta, _ := o["metadata"].(map[string]any)
		ref := map[string]any{"name": meta["name"]}
		if ns, ok := meta["namespace"]; ok {
			ref["namespace"] = ns
		}
		out = append(out, Object{"apiVersion": o["apiVersion"], "kind": o["kind"], "metadata": ref})
	}
	return out
}
