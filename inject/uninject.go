package inject

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/meshproj/mesh/wellknown"
)

// Uninject removes what Inject added, restoring the object exactly when
// the restore record is there.
func Uninject(o obj) ([]Result, error) {
	if o["kind"] == "List" {
		return eachItem(o, Uninject)
	}
	kind, _ := o["kind"].(string)
	path := TemplatePath(kind)
	if path == nil {
		return []Result{{Ref: Ref(o), Action: "unchanged", Reason: "not a workload"}}, nil
	}
	tmpl := o
	if len(path) > 0 {
		var ok bool
		if tmpl, ok = asObj(get(o, path...)); !ok {
			return []Result{{Ref: Ref(o), Action: "unchanged", Reason: "no pod template"}}, nil
		}
	}
	if !injected(tmpl) {
		return []Result{{Ref: Ref(o), Action: "unchanged", Reason: "not injected"}}, nil
	}
	var rec recorder
	ann, _ := get(tmpl, "metadata", "annotations").(obj)
	if raw := str(ann[wellknown.AnnotationRestore]); raw != "" {
		if err := json.Unmarshal([]byte(raw), &rec); err != nil {
			return nil, fmt.Errorf("%s: annotation %s is not valid: %w", Ref(o), wellknown.AnnotationRestore, err)
		}
	}
	spec, _ := tmpl["spec"].(obj)
	if spec != nil {
		drop := func(key string, names ...string) {
			list, ok := spec[key].([]any)
			if !ok {
				return
			}
			spec[key] = slices.DeleteFunc(slices.Clone(list), func(v any) bool {
				m, _ := v.(obj)
				return m != nil && slices.Contains(names, str(m["name"]))
			})
		}
		drop("initContainers", wellknown.InitContainer, wellknown.ProxyContainer)
		drop("containers", wellknown.ProxyContainer)
		drop("volumes", tokenVolume, legacyAnchorsVolume)
	}
	if ann != nil {
		if rec.Annotations == nil {
			// No record (injected by something older): remove the mesh's own.
			for k := range ann {
				if k == wellknown.AnnotationProxyVersion || k == wellknown.AnnotationInjectedBy {
					delete(ann, k)
				}
			}
		}
		for k, prev := range rec.Annotations {
			if prev == nil {
				delete(ann, k)
			} else {
				ann[k] = *prev
			}
		}
		delete(ann, wellknown.AnnotationRestore)
	}
	// Remove what inject created, deepest first, if nothing else lives there.
	for _, p := range slices.Backward(rec.Created) {
		removeIfEmpty(tmpl, strings.Split(p, "."))
	}
	return []Result{{Ref: Ref(o), Action: "uninjected"}}, nil
}

func removeIfEmpty(m obj, path []string) {
	parent := m
	for _, p := range path[:len(path)-1] {
		next, ok := parent[p].(obj)
		if !ok {
			return
		}
		parent = next
	}
	key := path[len(path)-1]
	switch v := parent[key].(type) {
	case obj:
		if len(v) == 0 {
			delete(parent, key)
		}
	case []any:
		if len(v) == 0 {
			delete(parent, key)
		}
	case nil:
		delete(parent, key)
	}
}
