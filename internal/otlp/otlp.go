// Package otlp reads the address of an OpenTelemetry collector, as the
// proxy's --trace-collector, inject and install take it.
package otlp

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// CollectorURL reads a collector's address, host:port (OTLP/HTTP at
// /v1/traces) or an http(s) URL, into the URL spans are sent to.
func CollectorURL(s string) (string, error) {
	if !strings.Contains(s, "://") {
		if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
			return "", fmt.Errorf("trace collector %q: want host:port (OTLP over HTTP, such as jaeger.tracing:4318) or an http:// URL", s)
		}
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("trace collector %q: want host:port or an http(s) URL without credentials or query", s)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	return u.String(), nil
}
