package install

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// The templates use a deliberately small language instead of text/template,
// whose reflective method calls keep the linker from dropping unused code:
// in the one mesh binary that cost every sidecar 1.7 MB of memory.
//
//	{{key}}            the value of key
//	{{b64 key}}        base64 of the value
//	{{indent N key}}   the value's lines indented by N spaces (alone on its line)
//	#if key / #if !key / #else / #end   keep lines when the value is "true"
var placeholder = regexp.MustCompile(`\{\{\s*(?:(b64|indent)\s+(?:(\d+)\s+)?)?([A-Za-z][A-Za-z0-9.]*)\s*\}\}`)

func expand(name, text string, vars map[string]string) (string, error) {
	var out strings.Builder
	var stack []bool
	active := func() bool {
		for _, on := range stack {
			if !on {
				return false
			}
		}
		return true
	}
	for n, line := range strings.Split(text, "\n") {
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(t, "#if "):
			key := strings.TrimSpace(strings.TrimPrefix(t, "#if "))
			neg := strings.HasPrefix(key, "!")
			v, ok := vars[strings.TrimPrefix(key, "!")]
			if !ok {
				return "", fmt.Errorf("%s:%d: unknown condition %q", name, n+1, key)
			}
			stack = append(stack, (v == "true") != neg)
			continue
		case t == "#else":
			if len(stack) == 0 {
				return "", fmt.Errorf("%s:%d: #else without #if", name, n+1)
			}
			stack[len(stack)-1] = !stack[len(stack)-1]
			continue
		case t == "#end":
			if len(stack) == 0 {
				return "", fmt.Errorf("%s:%d: #end without #if", name, n+1)
			}
			stack = stack[:len(stack)-1]
			continue
		}
		if !active() {
			continue
		}
		var err error
		expanded := placeholder.ReplaceAllStringFunc(line, func(m string) string {
			p := placeholder.FindStringSubmatch(m)
			v, ok := vars[p[3]]
			if !ok {
				err = fmt.Errorf("%s:%d: unknown value %q", name, n+1, p[3])
				return ""
			}
			switch p[1] {
			case "b64":
				return base64.StdEncoding.EncodeToString([]byte(v))
			case "indent":
				width, _ := strconv.Atoi(p[2])
				pad := strings.Repeat(" ", width)
				lines := strings.Split(strings.TrimRight(v, "\n"), "\n")
				for i, l := range lines {
					if l != "" {
						lines[i] = pad + l
					}
				}
				return strings.Join(lines, "\n")
			}
			return v
		})
		if err != nil {
			return "", err
		}
		out.WriteString(expanded)
		out.WriteString("\n")
	}
	if len(stack) != 0 {
		return "", fmt.Errorf("%s: #if without #end", name)
	}
	return out.String(), nil
}

// vars flattens values and material into the templates' keys.
func vars(v Values, m *Material, valuesYAML string) map[string]string {
	b := strconv.FormatBool
	return map[string]string{
		"namespace": v.Namespace, "trustDomain": v.TrustDomain, "image": v.Image, "version": v.Version, "ha": b(v.HA),
		"controller.replicas": strconv.Itoa(v.Controller.Replicas), "controller.cpuRequest": v.Controller.CPURequest,
		"controller.memoryRequest": v.Controller.MemoryRequest, "controller.memoryLimit": v.Controller.MemoryLimit,
		"controller.logLevel": v.Controller.LogLevel, "identity.externalIssuer": b(v.Identity.ExternalIssuer),
		"identity.certLifetime": v.Identity.CertLifetime, "webhook.failurePolicy": v.Webhook.FailurePolicy,
		"policy.defaultInbound": v.Policy.DefaultInbound,
		"tracing":               b(v.Tracing.Collector != ""), "tracing.collector": v.Tracing.Collector, "tracing.sampling": v.Tracing.Sampling,
		"webhook.timeoutSeconds": strconv.Itoa(v.Webhook.TimeoutSeconds), "prometheusOperator": b(v.PrometheusOperator),
		"dashboards": b(v.Dashboards), "valuesYAML": valuesYAML,
		"m.trustAnchors": m.TrustAnchors, "m.issuerCert": m.IssuerCert, "m.issuerKey": m.IssuerKey,
		"m.webhookCA": m.WebhookCA, "m.webhookCert": m.WebhookCert, "m.webhookKey": m.WebhookKey,
	}
}
