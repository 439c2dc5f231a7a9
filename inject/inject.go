// Package inject adds the mesh's sidecar proxy (and its init step) to
// Kubernetes workloads, and removes it again. It is pure: objects in,
// objects and a report out (decoding and encoding YAML and JSON documents
// live in read.go; reading files, directories and URLs is package
// manifest's). The same functions serve `mesh inject` and the admission
// webhook, which so links no file or HTTP reader.
//
// Objects are handled as unstructured maps, so fields inject does not know
// are kept as they are. Everything inject adds, or overwrites, is recorded
// in one annotation on the pod template, which makes uninject its exact
// inverse.
package inject

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/internal/otlp"
	"github.com/meshproj/mesh/wellknown"
)

// Names of inject's own, on the pods it injects.
const (
	tokenVolume = "mesh-identity-token"
	tokenDir    = "/var/run/secrets/mesh.io/serviceaccount"
	// legacyAnchorsVolume is the ConfigMap volume that carried the trust
	// anchors before they moved into the proxy's environment; uninject
	// still removes it.
	legacyAnchorsVolume = "mesh-trust-anchors"
)

// Options shape the injected proxy.
type Options struct {
	// Version is the proxy version recorded on the pod and used in the
	// default image tag.
	Version string
	// Image is the proxy image without tag; config.mesh.io/proxy-image wins.
	Image string
	// NativeSidecar runs the proxy as an init container with
	// restartPolicy Always (Kubernetes 1.29+); otherwise as the first
	// regular container, holding the app until the proxy is ready.
	NativeSidecar bool
	// Config is written onto the pod template as config.mesh.io/ annotations
	// (flags of mesh inject).
	Config map[string]string
	// Cluster-wide settings the proxy needs.
	TrustDomain   string
	IdentityAddr  string
	DiscoveryAddr string
	// TrustAnchors (PEM) go into the proxy's environment: a pod can mount
	// a ConfigMap only from its own namespace, and the anchors live in the
	// control plane's. Inject refuses to work without them.
	TrustAnchors string
	// DefaultInboundPolicy is the install's default inbound policy; a
	// config.mesh.io/default-inbound-policy annotation (pod template,
	// workload, then NamespaceConfig) wins. Empty: the proxy's own.
	DefaultInboundPolicy string
	// TraceCollector and TraceSampling are the install's tracing; the
	// config.mesh.io/trace-collector and trace-sampling annotations win.
	TraceCollector string
	TraceSampling  string
	// NamespaceConfig are the config.mesh.io/ annotations of the
	// workload's namespace (the webhook reads them), below the workload's.
	NamespaceConfig map[string]string
}

// DefaultOptions are what `mesh inject` uses without flags.
func DefaultOptions(version string) Options {
	return Options{
		Version: version, Image: wellknown.Image, NativeSidecar: true,
		TrustDomain:   "cluster.local",
		IdentityAddr:  "mesh-identity.mesh-system.svc.cluster.local:8443",
		DiscoveryAddr: "mesh-destination.mesh-system.svc.cluster.local:8086",
	}
}

// Result says what happened to one object.
type Result struct {
	Ref    string // kind/name
	Action string // injected, uninjected, skipped, unchanged
	Reason string
}

func (r Result) String() string {
	if r.Reason != "" {
		return fmt.Sprintf("%s %s: %s", r.Ref, r.Action, r.Reason)
	}
	return r.Ref + " " + r.Action
}

// obj is an unstructured Kubernetes object.
type obj = map[string]any

// TemplatePath returns where a kind keeps its pod template (metadata and
// spec): nil for kinds that have none, empty for a Pod, which is its own.
func TemplatePath(kind string) []string {
	switch kind {
	case "Pod":
		return []string{}
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job":
		return []string{"spec", "template"}
	case "CronJob":
		return []string{"spec", "jobTemplate", "spec", "template"}
	}
	return nil
}

// Ref names an object as kubectl does (kind/name), for
// messages and reports.
func Ref(o obj) string {
	kind, _ := o["kind"].(string)
	name := str(get(o, "metadata", "name"))
	if name == "" {
		name = str(get(o, "metadata", "generateName")) + "*"
	}
	return strings.ToLower(kind) + "/" + name
}

func get(o obj, path ...string) any {
	var cur any = o
	for _, p := range path {
		m, ok := cur.(obj)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// Inject injects o (a List's items one by one) and reports per object.
func Inject(o obj, opt Options) ([]Result, error) {
	if o["kind"] == "List" {
		return eachItem(o, func(item obj) ([]Result, error) { return Inject(item, opt) })
	}
	kind, _ := o["kind"].(string)
	path := TemplatePath(kind)
	if path == nil {
		return []Result{{Ref: Ref(o), Action: "unchanged", Reason: "not a workload"}}, nil
	}
	tmpl, ok := asObj(get(o, path...))
	if !ok && len(path) > 0 {
		return nil, fmt.Errorf("%s has no pod template at %s", Ref(o), strings.Join(path, "."))
	}
	if len(path) == 0 {
		tmpl = o
	}
	if why := skipReason(o, tmpl); why != "" {
		action := "skipped"
		if why == "already injected" {
			action = "unchanged"
		}
		return []Result{{Ref: Ref(o), Action: action, Reason: why}}, nil
	}
	spec, ok := asObj(tmpl["spec"])
	if !ok {
		return nil, fmt.Errorf("%s has no pod spec", Ref(o))
	}
	if strings.TrimSpace(opt.TrustAnchors) == "" {
		return nil, errors.New("no trust anchors to give the proxy (mesh inject reads them from the cluster, or from --identity-trust-anchors-file)")
	}
	if err := checkConfig(o, tmpl, opt); err != nil {
		return nil, err
	}
	r := &recorder{Annotations: map[string]*string{}}
	injectPod(tmpl, spec, o, opt, r)
	return []Result{{Ref: Ref(o), Action: "injected"}}, nil
}

func eachItem(list obj, f func(obj) ([]Result, error)) ([]Result, error) {
	items, _ := list["items"].([]any)
	var out []Result
	for i, it := range items {
		item, ok := it.(obj)
		if !ok {
			return nil, fmt.Errorf("item %d of the List is not an object", i)
		}
		rs, err := f(item)
		if err != nil {
			return nil, fmt.Errorf("item %d of the List: %w", i, err)
		}
		out = append(out, rs...)
	}
	return out, nil
}

func asObj(v any) (obj, bool) {
	m, ok := v.(obj)
	return m, ok
}

// skipReason says why a workload is left alone, or "".
func skipReason(o, tmpl obj) string {
	if injected(tmpl) {
		return "already injected"
	}
	if b, _ := get(tmpl, "spec", "hostNetwork").(bool); b {
		return "hostNetwork: the pod shares the node's network, which the proxy must not intercept"
	}
	if ns := str(get(o, "metadata", "namespace")); ns == "kube-system" {
		return "kube-system is never meshed"
	}
	for _, m := range []obj{o, tmpl} {
		if v := str(get(m, "metadata", "annotations", wellknown.AnnotationInject)); v == "disabled" {
			return wellknown.AnnotationInject + ": disabled"
		}
	}
	return ""
}

func injected(tmpl obj) bool {
	if str(get(tmpl, "metadata", "annotations", wellknown.AnnotationProxyVersion)) != "" {
		return true
	}
	for _, list := range []string{"containers", "initContainers"} {
		cs, _ := get(tmpl, "spec", list).([]any)
		for _, c := range cs {
			if m, ok := c.(obj); ok && (m["name"] == wellknown.ProxyContainer || m["name"] == wellknown.InitContainer) {
				return true
			}
		}
	}
	return false
}

// recorder remembers what inject created or overwrote, for uninject.
type recorder struct {
	// Created lists fields that did not exist, as dotted paths relative to
	// the pod template.
	Created []string `json:"created,omitempty"`
	// Annotations holds the previous value of each annotation inject set
	// (null: there was none).
	Annotations map[string]*string `json:"annotations"`
}

// ensureObj returns m[key] as an object, creating (and recording) it.
func (r *recorder) ensureObj(m obj, key, path string) obj {
	if v, ok := m[key].(obj); ok {
		return v
	}
	v := obj{}
	m[key] = v
	r.Created = append(r.Created, path)
	return v
}

func (r *recorder) ensureList(m obj, key, path string) []any {
	if v, ok := m[key].([]any); ok {
		return v
	}
	r.Created = append(r.Created, path)
	return nil
}

func (r *recorder) setAnnotation(ann obj, key, value string) {
	if _, seen := r.Annotations[key]; !seen {
		if old, ok := ann[key].(string); ok {
			r.Annotations[key] = &old
		} else {
			r.Annotations[key] = nil
		}
	}
	ann[key] = value
}

// config reads a config key: the pod template's annotation, else the
// workload's, else the default.
func config(o, tmpl obj, key, def string) string {
	if v := str(get(tmpl, "metadata", "annotations", wellknown.ConfigPrefix+key)); v != "" {
		return v
	}
	if v := str(get(o, "metadata", "annotations", wellknown.ConfigPrefix+key)); v != "" {
		return v
	}
	return def
}

// configOr is a config key's value in force: the pod template's, the
// workload's, the namespace's, then def.
func configOr(o, tmpl obj, opt Options, key, def string) string {
	if v := opt.NamespaceConfig[key]; v != "" {
		def = v
	}
	return config(o, tmpl, key, def)
}

// serviceName names a workload in its proxy's spans: the pod template's
// app.kubernetes.io/name or app label, else the workload's name; for a
// pod (the webhook's case), its controller's, without a ReplicaSet's
// template hash.
func serviceName(o, tmpl obj) string {
	for _, l := range []string{"app.kubernetes.io/name", "app"} {
		if v := str(get(tmpl, "metadata", "labels", l)); v != "" {
			return v
		}
	}
	name := str(get(o, "metadata", "name"))
	if o["kind"] != "Pod" {
		return name
	}
	refs, _ := get(o, "metadata", "ownerReferences").([]any)
	for _, r := range refs {
		ref, _ := r.(obj)
		if ref == nil || ref["controller"] != true {
			continue
		}
		owner := str(ref["name"])
		if hash := str(get(o, "metadata", "labels", "pod-template-hash")); ref["kind"] == "ReplicaSet" && hash != "" {
			owner = strings.TrimSuffix(owner, "-"+hash)
		}
		return owner
	}
	if name == "" {
		name = strings.TrimSuffix(str(get(o, "metadata", "generateName")), "-")
	}
	return name
}

func injectPod(tmpl, spec, o obj, opt Options, r *recorder) {
	meta := r.ensureObj(tmpl, "metadata", "metadata")
	ann := r.ensureObj(meta, "annotations", "metadata.annotations")
	for _, k := range wellknown.ConfigKeys {
		if v, ok := opt.Config[k]; ok {
			r.setAnnotation(ann, wellknown.ConfigPrefix+k, v)
		}
	}
	r.setAnnotation(ann, wellknown.AnnotationProxyVersion, opt.Version)
	r.setAnnotation(ann, wellknown.AnnotationInjectedBy, "mesh inject "+opt.Version)
	if str(ann[wellknown.AnnotationInject]) == "" {
		r.setAnnotation(ann, wellknown.AnnotationInject, "enabled")
	}

	image := config(o, tmpl, wellknown.ProxyImage, opt.Image+":"+opt.Version)
	inits := r.ensureList(spec, "initContainers", "spec.initContainers")
	proxy := proxyContainer(o, tmpl, opt, image)
	front := []any{initContainer(o, tmpl, image)}
	if opt.NativeSidecar {
		proxy["restartPolicy"] = "Always"
		proxy["startupProbe"] = obj{
			"httpGet":          obj{"path": "/ready", "port": wellknown.AdminPort},
			"periodSeconds":    1,
			"failureThreshold": 120,
		}
		front = append(front, proxy)
	} else {
		// The kubelet starts containers in order and waits for a postStart
		// hook: the app starts once the proxy is ready.
		proxy["lifecycle"] = obj{"postStart": obj{"exec": obj{"command": []any{"/mesh", "await", "--admin-addr", "127.0.0.1:" + strconv.Itoa(wellknown.AdminPort), "--timeout", "2m"}}}}
		containers, _ := spec["containers"].([]any)
		spec["containers"] = append([]any{proxy}, containers...)
	}
	spec["initContainers"] = append(front, inits...)

	vols := r.ensureList(spec, "volumes", "spec.volumes")
	spec["volumes"] = append(vols,
		obj{"name": tokenVolume, "projected": obj{"sources": []any{obj{"serviceAccountToken": obj{
			"audience": wellknown.TokenAudience, "expirationSeconds": 86400, "path": "token"}}}}},
	)
	restore, _ := json.Marshal(r)
	ann[wellknown.AnnotationRestore] = string(restore)
}

func initContainer(o, tmpl obj, image string) obj {
	skipIn := joinPorts(strconv.Itoa(wellknown.AdminPort), config(o, tmpl, wellknown.SkipInboundPorts, ""))
	args := []any{"init", "--inbound-port", strconv.Itoa(wellknown.InboundPort), "--outbound-port", strconv.Itoa(wellknown.OutboundPort),
		"--proxy-uid", strconv.Itoa(wellknown.ProxyUID), "--skip-inbound-ports", skipIn}
	if v := config(o, tmpl, wellknown.SkipOutboundPorts, ""); v != "" {
		args = append(args, "--skip-outbound-ports", v)
	}
	if v := config(o, tmpl, wellknown.SkipOutboundCIDRs, ""); v != "" {
		args = append(args, "--skip-outbound-cidrs", v)
	}
	return obj{
		"name":  wellknown.InitContainer,
		"image": image,
		"args":  args,
		"securityContext": obj{
			"allowPrivilegeEscalation": false,
			"readOnlyRootFilesystem":   true,
			"runAsUser":                0,
			"runAsNonRoot":             false,
			"capabilities":             obj{"add": []any{"NET_ADMIN", "NET_RAW"}, "drop": []any{"ALL"}},
		},
		"resources": obj{"requests": obj{"cpu": "10m", "memory": "10Mi"}, "limits": obj{"memory": "50Mi"}},
	}
}

func joinPorts(parts ...string) string {
	var out []string
	for _, p := range parts {
		for f := range strings.SplitSeq(p, ",") {
			if f = strings.TrimSpace(f); f != "" && !slices.Contains(out, f) {
				out = append(out, f)
			}
		}
	}
	return strings.Join(out, ",")
}

// ConfigError is a config.mesh.io/ setting the proxy could not run with.
// The webhook refuses the pod for it rather than admit it unmeshed: an
// unmeshed pod would not have the protection its owner asked for.
type ConfigError struct {
	Ref   string // the workload
	Where string // the flag or annotation that says it
	Value string
	Want  string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("%s: %s is %q: want %s", e.Ref, e.Where, e.Value, e.Want)
}

// checkConfig refuses a setting the proxy would not start with: the one in
// force (the first of flag, pod template, workload and namespace).
func checkConfig(o, tmpl obj, opt Options) error {
	for _, k := range []struct {
		key   string
		valid func(string) bool
		want  string
	}{
		{wellknown.DefaultInboundPolicy, func(v string) bool { return discovery.DefaultPolicy(v).Valid() }, "one of " + joinPolicies()},
		{wellknown.AccessLog, func(v string) bool { return v == "json" }, "one of json"},
		{wellknown.TraceCollector, func(v string) bool { _, err := otlp.CollectorURL(v); return err == nil }, "host:port of an OTLP/HTTP collector, or an http(s) URL"},
		{wellknown.TraceSampling, func(v string) bool { f, err := strconv.ParseFloat(v, 64); return err == nil && f >= 0 && f <= 1 }, "a share from 0 to 1"},
	} {
		ann := wellknown.ConfigPrefix + k.key
		for _, c := range []struct{ where, value string }{
			{"flag --" + k.key, opt.Config[k.key]},
			{"the pod template's annotation " + ann, str(get(tmpl, "metadata", "annotations", ann))},
			{"the workload's annotation " + ann, str(get(o, "metadata", "annotations", ann))},
			{"the namespace's annotation " + ann, opt.NamespaceConfig[k.key]},
		} {
			if c.value == "" {
				continue
			}
			if !k.valid(c.value) {
				return &ConfigError{Ref: Ref(o), Where: c.where, Value: c.value, Want: k.want}
			}
			break
		}
	}
	return nil
}

func joinPolicies() string {
	var names []string
	for _, p := range discovery.DefaultPolicies {
		names = append(names, string(p))
	}
	return strings.Join(names, ", ")
}

// probes lists the HTTP probes of the app's containers as PORT:PATH,
// named ports resolved through the container's ports.
func probes(tmpl obj) string {
	var out []string
	containers, _ := get(tmpl, "spec", "containers").([]any)
	for _, c := range containers {
		c, _ := c.(obj)
		if c == nil || c["name"] == wellknown.ProxyContainer {
			continue
		}
		named := map[string]string{}
		ports, _ := c["ports"].([]any)
		for _, p := range ports {
			if p, _ := p.(obj); p != nil && str(p["name"]) != "" {
				named[str(p["name"])] = fmt.Sprint(p["containerPort"])
			}
		}
		for _, kind := range []string{"startupProbe", "livenessProbe", "readinessProbe"} {
			hg, _ := get(c, kind, "httpGet").(obj)
			if hg == nil {
				continue
			}
			port := fmt.Sprint(hg["port"])
			if n, ok := named[port]; ok {
				port = n
			}
			path := str(hg["path"])
			if path == "" {
				path = "/"
			}
			if entry := port + ":" + path; !slices.Contains(out, entry) {
				out = append(out, entry)
			}
		}
	}
	return strings.Join(out, ",")
}

func fieldEnv(name, path string) obj {
	return obj{"name": name, "valueFrom": obj{"fieldRef": obj{"fieldPath": path}}}
}

func env(name, value string) obj { return obj{"name": name, "value": value} }

func proxyContainer(o, tmpl obj, opt Options, image string) obj {
	envs := []any{
		fieldEnv("MESH_POD_NAME", "metadata.name"),
		fieldEnv("MESH_POD_NAMESPACE", "metadata.namespace"),
		fieldEnv("MESH_POD_IP", "status.podIP"),
		fieldEnv("MESH_SERVICE_ACCOUNT", "spec.serviceAccountName"),
		env("MESH_IDENTITY", "spiffe://"+opt.TrustDomain+"/ns/$(MESH_POD_NAMESPACE)/sa/$(MESH_SERVICE_ACCOUNT)"),
		env("MESH_IDENTITY_ADDR", opt.IdentityAddr),
		env("MESH_IDENTITY_TRUST_ANCHORS_PEM", opt.TrustAnchors),
		env("MESH_IDENTITY_TOKEN_FILE", tokenDir+"/token"),
		env("MESH_DISCOVERY_ADDR", opt.DiscoveryAddr),
		env("MESH_INBOUND_ADDR", "0.0.0.0:"+strconv.Itoa(wellknown.InboundPort)),
		env("MESH_OUTBOUND_ADDR", "127.0.0.1:"+strconv.Itoa(wellknown.OutboundPort)),
		env("MESH_ADMIN_ADDR", "0.0.0.0:"+strconv.Itoa(wellknown.AdminPort)),
		env("MESH_LOG_FORMAT", "json"),
		env("MESH_LOG_LEVEL", config(o, tmpl, wellknown.ProxyLogLevel, "info")),
		env("MESH_LABEL", "namespace=$(MESH_POD_NAMESPACE),pod=$(MESH_POD_NAME)"),
	}
	if v := config(o, tmpl, wellknown.OpaquePorts, ""); v != "" {
		envs = append(envs, env("MESH_OPAQUE_PORTS", v))
	}
	if c := configOr(o, tmpl, opt, wellknown.TraceCollector, opt.TraceCollector); c != "" {
		envs = append(envs, env("MESH_TRACE_COLLECTOR", c), env("MESH_TRACE_SERVICE", serviceName(o, tmpl)))
		if v := configOr(o, tmpl, opt, wellknown.TraceSampling, opt.TraceSampling); v != "" {
			envs = append(envs, env("MESH_TRACE_SAMPLING", v))
		}
	}
	def := opt.DefaultInboundPolicy
	if v := opt.NamespaceConfig[wellknown.DefaultInboundPolicy]; v != "" {
		def = v
	}
	if v := config(o, tmpl, wellknown.DefaultInboundPolicy, def); v != "" {
		envs = append(envs, env("MESH_DEFAULT_INBOUND_POLICY", v))
	}
	if v := config(o, tmpl, wellknown.AccessLog, opt.NamespaceConfig[wellknown.AccessLog]); v != "" {
		envs = append(envs, env("MESH_ACCESS_LOG", v))
	}
	// The kubelet's probes reach the app through the proxy, from the
	// node: they are let through whatever the policy, as the pod's owner
	// wrote them.
	if v := probes(tmpl); v != "" {
		envs = append(envs, env("MESH_INBOUND_PROBES", v))
	}
	requests := obj{"cpu": config(o, tmpl, wellknown.ProxyCPURequest, "100m"), "memory": config(o, tmpl, wellknown.ProxyMemRequest, "20Mi")}
	limits := obj{"memory": config(o, tmpl, wellknown.ProxyMemLimit, "250Mi")}
	if v := config(o, tmpl, wellknown.ProxyCPULimit, ""); v != "" {
		limits["cpu"] = v
	}
	probe := func(path string) obj {
		return obj{"httpGet": obj{"path": path, "port": wellknown.AdminPort}, "periodSeconds": 10, "timeoutSeconds": 1}
	}
	return obj{
		"name":  wellknown.ProxyContainer,
		"image": image,
		"args":  []any{"proxy"},
		"env":   envs,
		"ports": []any{
			obj{"name": "mesh-proxy", "containerPort": wellknown.InboundPort, "protocol": "TCP"},
			obj{"name": "mesh-admin", "containerPort": wellknown.AdminPort, "protocol": "TCP"},
		},
		"livenessProbe":  probe("/live"),
		"readinessProbe": probe("/ready"),
		"resources":      obj{"requests": requests, "limits": limits},
		"securityContext": obj{
			"runAsUser":                wellknown.ProxyUID,
			"runAsGroup":               wellknown.ProxyUID,
			"runAsNonRoot":             true,
			"readOnlyRootFilesystem":   true,
			"allowPrivilegeEscalation": false,
			"capabilities":             obj{"drop": []any{"ALL"}},
			"seccompProfile":           obj{"type": "RuntimeDefault"},
		},
		"volumeMounts": []any{
			obj{"name": tokenVolume, "mountPath": tokenDir, "readOnly": true},
		},
		"terminationMessagePolicy": "FallbackToLogsOnError",
	}
}
