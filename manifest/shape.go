package manifest

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshproj/mesh/inject"
)

// CheckShape refuses a workload (or each item of a List) whose pod template
// does not have the shape Kubernetes requires, naming the field: the API
// server would refuse it anyway, and rewriting it would print a workload
// that cannot be applied. It decodes the template into the real Kubernetes
// type, so every field's type is checked as the API server checks it, then
// asks for what Kubernetes requires of every container (a name and an
// image). Objects that are not workloads pass.
//
// The webhook needs none of this: what it is sent the API server has
// decoded already.
func CheckShape(o map[string]any) error {
	if o["kind"] == "List" {
		items, _ := o["items"].([]any)
		for i, it := range items {
			if item, ok := it.(map[string]any); ok {
				if err := CheckShape(item); err != nil {
					return fmt.Errorf("item %d of the List: %w", i, err)
				}
			}
		}
		return nil
	}
	kind, _ := o["kind"].(string)
	path := inject.TemplatePath(kind)
	if path == nil {
		return nil
	}
	tmpl := any(o)
	for _, k := range path {
		m, _ := tmpl.(map[string]any)
		tmpl = m[k]
	}
	t, ok := tmpl.(map[string]any)
	if !ok {
		return fmt.Errorf("%s: %s: want an object (the pod template)", inject.Ref(o), strings.Join(path, "."))
	}
	if err := checkTemplate(t, strings.Join(path, ".")); err != nil {
		return fmt.Errorf("%s: %w", inject.Ref(o), err)
	}
	return nil
}

func checkTemplate(tmpl map[string]any, at string) error {
	raw, err := json.Marshal(tmpl)
	if err != nil {
		return fmt.Errorf("%s: %w", at, err)
	}
	var pt corev1.PodTemplateSpec
	if err := json.Unmarshal(raw, &pt); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("%s: want %s, got %s", fieldPath(at, te.Field), kindOf(te.Type.Kind().String()), te.Value)
		}
		return fmt.Errorf("%s: %w", at, err)
	}
	if len(pt.Spec.Containers) == 0 {
		return fmt.Errorf("%s: required (a pod needs at least one container)", fieldPath(at, "spec.containers"))
	}
	for _, l := range []struct {
		name string
		cs   []corev1.Container
	}{{"containers", pt.Spec.Containers}, {"initContainers", pt.Spec.InitContainers}} {
		for i, c := range l.cs {
			field := fieldPath(at, fmt.Sprintf("spec.%s[%d]", l.name, i))
			switch {
			case c.Name == "":
				return fmt.Errorf("%s.name: required (every container needs a name)", field)
			case c.Image == "":
				return fmt.Errorf("%s.image: required (container %q names no image)", field, c.Name)
			}
		}
	}
	return nil
}

// fieldPath joins where the template is with the path json reports
// (dotted Go field names such as "spec.containers.name").
func fieldPath(at, field string) string {
	switch {
	case field == "":
		return at
	case at == "":
		return field
	}
	return at + "." + field
}

// kindOf says a Go kind the way a manifest's author thinks of it.
func kindOf(kind string) string {
	switch kind {
	case "slice", "array":
		return "a list"
	case "struct", "map":
		return "an object"
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	}
	if strings.HasPrefix(kind, "int") || strings.HasPrefix(kind, "uint") || strings.HasPrefix(kind, "float") {
		return "a number"
	}
	return kind
}
