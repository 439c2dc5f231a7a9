package install

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshproj/mesh/internal/golden"
)

func given() Files {
	return Files{TrustAnchors: "testdata/anchors.pem", IssuerCert: "testdata/issuer.crt", IssuerKey: "testdata/issuer.key",
		WebhookCA: "testdata/webhook-ca.pem", WebhookCert: "testdata/webhook.crt", WebhookKey: "testdata/webhook.key"}
}

func render(t *testing.T, v Values, f Files, format string) []byte {
	t.Helper()
	m, err := Prepare(v, f, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Objects(v, m)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Encode(&b, objs, format); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestGoldenInstall(t *testing.T) {
	v := DefaultValues("v0.1.0")
	golden.Check(t, "testdata/install.golden", render(t, v, given(), "yaml"))

	ha := DefaultValues("v0.1.0")
	ha.HA = true
	golden.Check(t, "testdata/install_ha.golden", render(t, ha, given(), "yaml"))

	extras := DefaultValues("v0.1.0")
	extras.PrometheusOperator, extras.Dashboards = true, true
	extras.Webhook.FailurePolicy = "Ignore"
	golden.Check(t, "testdata/install_extras.json.golden", render(t, extras, given(), "json"))

	crds, err := CRDs()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	Encode(&b, crds, "yaml")
	golden.Check(t, "testdata/crds.golden", b.Bytes())
}

func TestOutputIsDeterministic(t *testing.T) {
	v := DefaultValues("v0.1.0")
	if !bytes.Equal(render(t, v, given(), "yaml"), render(t, v, given(), "yaml")) {
		t.Fatal("the same values and material rendered differently")
	}
}

func TestGeneratedMaterialChains(t *testing.T) {
	v := DefaultValues("v0.1.0")
	out := render(t, v, Files{}, "yaml")
	if !bytes.Contains(out, []byte("mesh-identity-issuer")) || !bytes.Contains(out, []byte("BEGIN CERTIFICATE")) {
		t.Fatal("generated install lacks identity material")
	}
}

func TestExternalIssuerLeavesTheSecretOut(t *testing.T) {
	v := DefaultValues("v0.1.0")
	v.Identity.ExternalIssuer = true
	out := render(t, v, Files{TrustAnchors: "testdata/anchors.pem"}, "yaml")
	if bytes.Contains(out, []byte("kind: Secret\nmetadata:\n  labels:\n    app.kubernetes.io/component: identity")) || bytes.Contains(out, []byte("tls.key: LS0t")) && bytes.Count(out, []byte("tls.key")) > 1 {
		t.Fatal("the issuer Secret is rendered despite an external issuer")
	}
}

func TestBadIdentityFilesAreRefusedWithTheReason(t *testing.T) {
	v := DefaultValues("v0.1.0")
	tests := []struct {
		name string
		f    Files
		want string
	}{
		{"missing file", Files{TrustAnchors: "testdata/nope.pem", IssuerCert: "testdata/issuer.crt", IssuerKey: "testdata/issuer.key"}, "trust anchors file: open testdata/nope.pem"},
		{"not PEM", Files{TrustAnchors: "testdata/issuer.key", IssuerCert: "testdata/issuer.crt", IssuerKey: "testdata/issuer.key"}, "trust anchors file testdata/issuer.key: no PEM certificate found"},
		{"wrong chain", Files{TrustAnchors: "testdata/anchors.pem", IssuerCert: "testdata/stranger.crt", IssuerKey: "testdata/stranger.key"}, `testdata/stranger.crt: issuer "stranger issuer" does not chain to any trust anchor in testdata/anchors.pem`},
		{"key mismatch", Files{TrustAnchors: "testdata/anchors.pem", IssuerCert: "testdata/issuer.crt", IssuerKey: "testdata/stranger.key"}, "testdata/stranger.key: the key does not match the issuer certificate in testdata/issuer.crt"},
		{"expired", Files{TrustAnchors: "testdata/anchors.pem", IssuerCert: "testdata/expired.crt", IssuerKey: "testdata/expired.key"}, `testdata/expired.crt: certificate "expired issuer" expired at`},
		{"not a CA", Files{TrustAnchors: "testdata/anchors.pem", IssuerCert: "testdata/webhook.crt", IssuerKey: "testdata/webhook.key"}, "is not a CA certificate"},
		{"partial", Files{TrustAnchors: "testdata/anchors.pem"}, "give all of"},
	}
	for _, tt := range tests {
		_, err := Prepare(v, tt.f, time.Now())
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v\nwant it to contain %q", tt.name, err, tt.want)
		}
	}
}

func TestValues(t *testing.T) {
	v := DefaultValues("v1")
	if err := v.Set("controller.replicas=2"); err != nil || v.Controller.Replicas != 2 {
		t.Fatalf("%v %d", err, v.Controller.Replicas)
	}
	for _, bad := range []string{"controller=1", "nope=1", "controller.replicas=two", "noequals"} {
		if err := v.Set(bad); err == nil {
			t.Errorf("--set %s accepted", bad)
		}
	}
	if err := v.Set("tracing.collector=jaeger.tracing:4318"); err != nil || v.Validate() != nil {
		t.Errorf("tracing.collector: %v %v", err, v.Validate())
	}
	if out := render(t, v, given(), "yaml"); !bytes.Contains(out, []byte("--trace-collector=jaeger.tracing:4318")) {
		t.Error("the controller is not told the collector")
	}
	for bad, want := range map[string]string{"tracing.collector=jaeger": `tracing.collector: trace collector "jaeger"`,
		"tracing.sampling=1.5": `tracing.sampling "1.5": want a share from 0 to 1`} {
		w := DefaultValues("v1")
		w.Set("tracing.collector=jaeger.tracing:4318")
		w.Set(bad)
		if err := w.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--set %s: %v; want %q", bad, err, want)
		}
	}
	w := DefaultValues("v1")
	w.Set("tracing.sampling=0.5")
	if err := w.Validate(); err == nil || !strings.Contains(err.Error(), "tracing.sampling needs tracing.collector") {
		t.Errorf("sampling without a collector: %v", err)
	}
	v.Webhook.FailurePolicy = "Sometimes"
	if err := v.Validate(); err == nil {
		t.Error("bad failure policy accepted")
	}
	f := t.TempDir() + "/v.yaml"
	os.WriteFile(f, []byte("controller:\n  replcas: 3\n"), 0o644)
	if err := v.LoadFile(f); err == nil || !strings.Contains(err.Error(), "replcas") {
		t.Errorf("unknown key in values file: %v", err)
	}
}
