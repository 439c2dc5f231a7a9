package kubepolicy

import (
	"fmt"
	"sort"
	"strings"
)

// Problem is something wrong with one policy resource.
type Problem struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Message   string `json:"message"`
}

func (p Problem) String() string {
	return fmt.Sprintf("%s %s/%s: %s", strings.ToLower(p.Kind), p.Namespace, p.Name, p.Message)
}

// Problems finds what is wrong with the resources of s, given the pods of
// their namespaces: a Server that selects no pod, or a port some pod it
// selects does not have; an AuthorizationPolicy whose target does not
// exist, or one whose authentications do not exist or do not parse.
func (s *Set) Problems(pods []*Pod, trustDomain string) []Problem {
	var out []Problem
	servers := map[string]bool{}
	for _, sv := range s.Servers {
		ns, name := sv.Metadata.Namespace, sv.Metadata.Name
		servers[ns+"/"+name] = true
		var selected, portless, shadowed []string
		for _, p := range pods {
			if p.Metadata.Namespace != ns || !sv.Spec.PodSelector.Matches(p.Metadata.Labels) {
				continue
			}
			selected = append(selected, p.Metadata.Name)
			if _, ok := serverPort(p, sv.Spec.Port); !ok {
				portless = append(portless, p.Metadata.Name)
			} else if by := s.shadowedBy(sv, p); by != "" {
				shadowed = append(shadowed, p.Metadata.Name+" (by "+by+")")
			}
		}
		if len(selected) == 0 {
			out = append(out, Problem{"Server", ns, name, "its podSelector selects no pod"})
		}
		if len(portless) > 0 {
			sort.Strings(portless)
			out = append(out, Problem{"Server", ns, name, fmt.Sprintf("port %v is no container port of %s", sv.Spec.Port, Enumerate(portless, "pod", "pods"))})
		}
		if len(shadowed) > 0 {
			sort.Strings(shadowed)
			out = append(out, Problem{"Server", ns, name, fmt.Sprintf("an older Server already selects its port of %s: it is ignored there", Enumerate(shadowed, "pod", "pods"))})
		}
	}
	for _, ap := range s.AuthorizationPolicies {
		ns, name := ap.Metadata.Namespace, ap.Metadata.Name
		t := ap.Spec.TargetRef
		switch t.Kind {
		case "Server":
			if !servers[ns+"/"+t.Name] {
				out = append(out, Problem{"AuthorizationPolicy", ns, name, fmt.Sprintf("its target, Server %s/%s, does not exist", ns, t.Name)})
			}
		case "Namespace":
			if t.Name != ns {
				out = append(out, Problem{"AuthorizationPolicy", ns, name, fmt.Sprintf("it targets namespace %s, but applies only in its own (%s)", t.Name, ns)})
			}
		case "HTTPRoute":
			out = append(out, Problem{"AuthorizationPolicy", ns, name, fmt.Sprintf("it targets HTTPRoute %s, and the mesh serves no routes yet: it admits nothing", t.Name)})
		default:
			out = append(out, Problem{"AuthorizationPolicy", ns, name, fmt.Sprintf("its target kind %q is unknown: use Server or Namespace", t.Kind)})
		}
		if _, err := s.authorization(ap, trustDomain); err != nil {
			out = append(out, Problem{"AuthorizationPolicy", ns, name, err.Error() + ": it admits nothing"})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// shadowedBy names the older Server that selects the same port of pod as
// sv, if one does.
func (s *Set) shadowedBy(sv *Server, pod *Pod) string {
	port, ok := serverPort(pod, sv.Spec.Port)
	if !ok {
		return ""
	}
	for _, o := range s.selecting(pod) {
		if o == sv {
			return ""
		}
		if p, ok := serverPort(pod, o.Spec.Port); ok && p == port {
			return o.Metadata.Name
		}
	}
	return ""
}

// Enumerate names up to three items and counts the rest: "pod a",
// "pods a, b", "pods a, b, c and 4 more".
func Enumerate(items []string, one, many string) string {
	switch {
	case len(items) == 1:
		return one + " " + items[0]
	case len(items) <= 3:
		return many + " " + strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s %s and %d more", many, strings.Join(items[:3], ", "), len(items)-3)
}
