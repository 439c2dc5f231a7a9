package controller

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meshproj/mesh/inject"
	"github.com/meshproj/mesh/kubeapi"
)

func review(t *testing.T, wh *Webhook, pod string) *kubeapi.AdmissionResponse {
	t.Helper()
	body, _ := json.Marshal(kubeapi.AdmissionReview{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview",
		Request: &kubeapi.AdmissionRequest{UID: "u-1", Namespace: "shop", Object: json.RawMessage(pod)}})
	w := httptest.NewRecorder()
	wh.ServeHTTP(w, httptest.NewRequest("POST", "/inject", bytes.NewReader(body)))
	var out kubeapi.AdmissionReview
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil || out.Response == nil {
		t.Fatalf("answer %q: %v", w.Body.String(), err)
	}
	if out.Response.UID != "u-1" {
		t.Fatalf("response %+v", out.Response)
	}
	return out.Response
}

func TestWebhookPatchesPodsAndLeavesOthersAlone(t *testing.T) {
	opt := inject.DefaultOptions("v1")
	opt.TrustAnchors = "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n"
	wh := &Webhook{Options: opt, Log: slog.New(slog.DiscardHandler)}
	resp := review(t, wh, `{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-"},"spec":{"containers":[{"name":"web","image":"web:1"}]}}`)
	if resp.PatchType == nil || *resp.PatchType != "JSONPatch" {
		t.Fatalf("no JSON patch: %+v", resp)
	}
	var ops []struct {
		Op, Path string
		Value    map[string]any
	}
	if err := json.Unmarshal(resp.Patch, &ops); err != nil || len(ops) != 2 {
		t.Fatalf("patch %s: %v", resp.Patch, err)
	}
	inits, _ := ops[0].Value["initContainers"].([]any)
	if ops[0].Path != "/spec" || len(inits) != 2 || ops[1].Op != "add" || ops[1].Path != "/metadata/annotations" {
		t.Errorf("patch %s", resp.Patch)
	}

	skipped := review(t, wh, `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x","annotations":{"mesh.io/inject":"disabled"}},"spec":{"containers":[{"name":"x","image":"x"}]}}`)
	if skipped.Patch != nil {
		t.Errorf("a pod annotated disabled was patched")
	}
	broken := review(t, wh, `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"},"spec":"oops"}`)
	if broken.Patch != nil || len(broken.Warnings) == 0 || wh.Failed.Load() != 1 {
		t.Errorf("a pod that cannot be injected must be admitted unchanged, with a warning: %+v", broken)
	}
	if !resp.Allowed || !skipped.Allowed || !broken.Allowed {
		t.Errorf("a pod was refused: %+v %+v %+v", resp, skipped, broken)
	}
	if wh.Injected.Load() != 1 || wh.Skipped.Load() != 1 {
		t.Errorf("counts: injected %d skipped %d", wh.Injected.Load(), wh.Skipped.Load())
	}
}

// A pod whose mesh settings the proxy cannot run with is refused, saying
// which: admitted unmeshed, it would lack the protection it asked for.
func TestWebhookRefusesAPodWithABadPolicySetting(t *testing.T) {
	opt := inject.DefaultOptions("v1")
	opt.TrustAnchors = "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n"
	wh := &Webhook{Options: opt, Log: slog.New(slog.DiscardHandler)}
	resp := review(t, wh, `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","annotations":{"config.mesh.io/default-inbound-policy":"denny"}},"spec":{"containers":[{"name":"web","image":"web:1"}]}}`)
	if resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, `mesh: pod/web: the pod template's annotation config.mesh.io/default-inbound-policy is "denny"`) {
		t.Errorf("response %+v; want the pod refused, saying why", resp)
	}
}
