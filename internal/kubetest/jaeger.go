package kubetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// JaegerVersion is the trace backend the tracing tests send spans to, on
// loopback and as a Deployment on the cluster. (v1.76.0 is served too, but
// is not an approved release on this module proxy.)
const JaegerVersion = "v1.75.0"

// JaegerDir is where the built Jaeger is kept ($MESH_JAEGER_CACHE, else
// ~/.cache/mesh/jaeger/VERSION).
func JaegerDir() string {
	if d := os.Getenv("MESH_JAEGER_CACHE"); d != "" {
		return d
	}
	home, err := os.UserCacheDir()
	if err != nil {
		home = os.TempDir()
	}
	return filepath.Join(home, "mesh", "jaeger", JaegerVersion)
}

// Jaeger returns the path of a jaeger binary (Jaeger v2, an OpenTelemetry
// Collector with Jaeger's storage and query), building it from its module
// first if this machine has none: minutes once, then cached in JaegerDir.
func Jaeger(log func(string)) (string, error) {
	dir := JaegerDir()
	bin := filepath.Join(dir, "bin", "jaeger")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err == nil { // built while this one waited
		return bin, nil
	}
	log(fmt.Sprintf("building Jaeger %s into %s (once per machine; minutes)", JaegerVersion, dir))
	mod := filepath.Join(dir, "module")
	if err := os.MkdirAll(mod, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module meshjaegerbuild\n\ngo 1.26.0\n"), 0o644); err != nil {
		return "", err
	}
	// The program is a tool of the module: its own go.mod's requirements
	// come with it, as `go install` would take them.
	const pkg = "github.com/jaegertracing/jaeger/cmd/jaeger"
	if err := goIn(mod, "get", "-tool", pkg+"@"+JaegerVersion); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, "bin-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if err := goIn(mod, "build", "-trimpath", "-o", filepath.Join(tmp, "jaeger"), pkg); err != nil {
		return "", err
	}
	return bin, install(tmp, filepath.Join(dir, "bin"), []string{"jaeger"})
}

// JaegerSpan is a span as Jaeger's query API gives it.
type JaegerSpan struct {
	TraceID    string `json:"traceID"`
	SpanID     string `json:"spanID"`
	References []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	Tags      []JaegerTag `json:"tags"`
	ProcessID string      `json:"processID"`
	// Service and Process are the span's service name and its resource's
	// attributes (such as k8s.pod.name).
	Service string      `json:"-"`
	Process []JaegerTag `json:"-"`
}

// JaegerTag is one attribute of a span or a resource.
type JaegerTag struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

// Tag is the value of the span's attribute key as text ("" if it has
// none).
func (s JaegerSpan) Tag(key string) string { return tagOf(s.Tags, key) }

// ProcessTag is the value of the span's resource attribute key as text.
func (s JaegerSpan) ProcessTag(key string) string { return tagOf(s.Process, key) }

func tagOf(tags []JaegerTag, key string) string {
	for _, tg := range tags {
		if tg.Key == key {
			return fmt.Sprint(tg.Value)
		}
	}
	return ""
}

// Parent is the ID of the span this one is a child of ("" for a root).
func (s JaegerSpan) Parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// Hop picks out of one trace's spans its client span and its server span
// (zero when it has none of that kind): one proxy hop's two halves.
func Hop(spans []JaegerSpan) (client, server JaegerSpan) {
	for _, s := range spans {
		switch s.Tag("span.kind") {
		case "client":
			client = s
		case "server":
			server = s
		}
	}
	return client, server
}

// QueryJaeger asks the query API at addr (host:port) for path, such as
// /api/traces/ID or /api/traces?service=NAME, and returns the traces it
// gives, each as its spans; none when it has no such trace.
func QueryJaeger(addr, path string) ([][]JaegerSpan, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	var body struct {
		Data []struct {
			Spans     []JaegerSpan `json:"spans"`
			Processes map[string]struct {
				ServiceName string      `json:"serviceName"`
				Tags        []JaegerTag `json:"tags"`
			} `json:"processes"`
		} `json:"data"`
		Errors []struct {
			Msg string `json:"msg"`
		} `json:"errors"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("the Jaeger query API, GET %s: %s: %w", path, resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the Jaeger query API, GET %s: %s %v", path, resp.Status, body.Errors)
	}
	var traces [][]JaegerSpan
	for _, tr := range body.Data {
		for i, s := range tr.Spans {
			p := tr.Processes[s.ProcessID]
			tr.Spans[i].Service, tr.Spans[i].Process = p.ServiceName, p.Tags
		}
		traces = append(traces, tr.Spans)
	}
	return traces, nil
}
