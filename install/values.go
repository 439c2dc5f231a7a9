// Package install renders the control plane's manifests from the templates
// embedded in package templates, the values a user gives, and identity
// material (generated, given as files, or left to an external issuer). The
// output is deterministic for the same values and material: stable order,
// no timestamps.
package install

import (
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/internal/otlp"
	"github.com/meshproj/mesh/wellknown"
)

// Values are the settings of an installation. YAML keys are what -f files
// and --set use (--set controller.replicas=3).
type Values struct {
	Namespace   string     `yaml:"namespace"`
	TrustDomain string     `yaml:"trustDomain"`
	Image       string     `yaml:"image"`
	Version     string     `yaml:"version"`
	HA          bool       `yaml:"ha"`
	Controller  Controller `yaml:"controller"`
	Identity    Identity   `yaml:"identity"`
	Webhook     Webhook    `yaml:"webhook"`
	Policy      Policy     `yaml:"policy"`
	Tracing     Tracing    `yaml:"tracing"`
	// PrometheusOperator renders a PodMonitor for proxies and a
	// ServiceMonitor for the controller.
	PrometheusOperator bool `yaml:"prometheusOperator"`
	// Dashboards renders Grafana dashboards as ConfigMaps for the Grafana
	// sidecar.
	Dashboards bool `yaml:"dashboards"`
}

// Controller configures the control plane's Deployment.
type Controller struct {
	Replicas      int    `yaml:"replicas"`
	CPURequest    string `yaml:"cpuRequest"`
	MemoryRequest string `yaml:"memoryRequest"`
	MemoryLimit   string `yaml:"memoryLimit"`
	LogLevel      string `yaml:"logLevel"`
}

// Identity configures certificates.
type Identity struct {
	// ExternalIssuer leaves the issuer Secret to something else (cert-manager).
	ExternalIssuer bool `yaml:"externalIssuer"`
	// CertLifetime of workload certificates.
	CertLifetime string `yaml:"certLifetime"`
	// IssuerLifetime of a generated issuer.
	IssuerLifetime string `yaml:"issuerLifetime"`
}

// Policy configures inbound authorization.
type Policy struct {
	// DefaultInbound is every proxy's policy for ports no Server selects,
	// unless a namespace or workload says otherwise with the
	// config.mesh.io/default-inbound-policy annotation.
	DefaultInbound string `yaml:"defaultInbound"`
}

// Tracing is every injected proxy's tracing, unless a namespace or
// workload annotation (config.mesh.io/trace-collector, trace-sampling)
// says otherwise.
type Tracing struct {
	// Collector is an OTLP/HTTP collector, host:port or URL; empty: none.
	Collector string `yaml:"collector"`
	// Sampling is the share of requests without a trace context that
	// start a trace, 0 to 1.
	Sampling string `yaml:"sampling"`
}

// Webhook configures the injection webhook.
type Webhook struct {
	FailurePolicy  string `yaml:"failurePolicy"`
	TimeoutSeconds int    `yaml:"timeoutSeconds"`
}

// DefaultValues are used unless told otherwise.
func DefaultValues(version string) Values {
	return Values{
		Namespace: "mesh-system", TrustDomain: "cluster.local", Image: wellknown.Image, Version: version,
		Controller: Controller{Replicas: 1, CPURequest: "100m", MemoryRequest: "50Mi", MemoryLimit: "250Mi", LogLevel: "info"},
		Identity:   Identity{CertLifetime: "24h", IssuerLifetime: "8760h"},
		Webhook:    Webhook{FailurePolicy: "Fail", TimeoutSeconds: 10},
		Policy:     Policy{DefaultInbound: string(discovery.AllUnauthenticated)},
	}
}

// LoadFile merges a values file into v. Unknown keys are errors.
func (v *Values) LoadFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading values: %w", err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && err.Error() != "EOF" {
		return fmt.Errorf("values file %s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return nil
}

// Set applies one key=value (dotted YAML keys).
func (v *Values) Set(kv string) error {
	key, value, ok := strings.Cut(kv, "=")
	if !ok || key == "" {
		return fmt.Errorf("--set %q: want key=value", kv)
	}
	field := reflect.ValueOf(v).Elem()
	for _, part := range strings.Split(key, ".") {
		found := false
		for i := 0; i < field.NumField(); i++ {
			tag, _, _ := strings.Cut(field.Type().Field(i).Tag.Get("yaml"), ",")
			if tag == part {
				field, found = field.Field(i), true
				break
			}
		}
		if !found || (field.Kind() == reflect.Struct && part == key[strings.LastIndex(key, ".")+1:]) {
			return fmt.Errorf("--set %q: unknown key %q", kv, key)
		}
	}
	switch field.Kind() {
	case reflect.String:
		field.SetString(value)
	case reflect.Int:
		n, err := strconv.Atoi(value)
		if err != nil {
			return fmt.Errorf("--set %q: %s wants a number", kv, key)
		}
		field.SetInt(int64(n))
	case reflect.Bool:
		b, err := strconv.ParseBool(value)
		if err != nil {
			return fmt.Errorf("--set %q: %s wants true or false", kv, key)
		}
		field.SetBool(b)
	default:
		return fmt.Errorf("--set %q: %s cannot be set this way", kv, key)
	}
	return nil
}

// Validate checks values and applies --ha.
func (v *Values) Validate() error {
	if v.HA && v.Controller.Replicas < 3 {
		v.Controller.Replicas = 3
	}
	if v.Controller.Replicas < 1 {
		return fmt.Errorf("controller.replicas must be at least 1")
	}
	if v.Namespace == "" || v.TrustDomain == "" || v.Image == "" || v.Version == "" {
		return fmt.Errorf("namespace, trustDomain, image and version must not be empty")
	}
	switch v.Webhook.FailurePolicy {
	case "Fail", "Ignore":
	default:
		return fmt.Errorf("webhook.failurePolicy must be Fail or Ignore, got %q", v.Webhook.FailurePolicy)
	}
	if !discovery.DefaultPolicy(v.Policy.DefaultInbound).Valid() {
		return fmt.Errorf("policy.defaultInbound %q: want one of %v", v.Policy.DefaultInbound, discovery.DefaultPolicies)
	}
	if c := v.Tracing.Collector; c != "" {
		if _, err := otlp.CollectorURL(c); err != nil {
			return fmt.Errorf("tracing.collector: %v", err)
		}
	}
	if s := v.Tracing.Sampling; s != "" {
		if f, err := strconv.ParseFloat(s, 64); err != nil || f < 0 || f > 1 {
			return fmt.Errorf("tracing.sampling %q: want a share from 0 to 1", s)
		}
		if v.Tracing.Collector == "" {
			return fmt.Errorf("tracing.sampling needs tracing.collector")
		}
	}
	if v.Webhook.TimeoutSeconds < 1 || v.Webhook.TimeoutSeconds > 30 {
		return fmt.Errorf("webhook.timeoutSeconds must be 1-30, got %d", v.Webhook.TimeoutSeconds)
	}
	for name, d := range map[string]string{"identity.certLifetime": v.Identity.CertLifetime, "identity.issuerLifetime": v.Identity.IssuerLifetime} {
		if x, err := time.ParseDuration(d); err != nil || x <= 0 {
			return fmt.Errorf("%s %q is not a positive duration", name, d)
		}
	}
	return nil
}
