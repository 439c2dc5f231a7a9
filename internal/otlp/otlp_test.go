package otlp

import "testing"

func TestCollectorURL(t *testing.T) {
	for in, want := range map[string]string{
		"jaeger.tracing:4318":            "http://jaeger.tracing:4318/v1/traces",
		"http://127.0.0.1:4318":          "http://127.0.0.1:4318/v1/traces",
		"https://otel.example/custom/tr": "https://otel.example/custom/tr",
		"jaeger":                         "",
		"ftp://x:1":                      "",
		"http://u:p@x:1":                 "",
	} {
		got, err := CollectorURL(in)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("CollectorURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
