package controller

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"

	"github.com/meshproj/mesh/inject"
	"github.com/meshproj/mesh/kubeapi"
)

// Webhook is the mutating admission webhook: it runs the inject package
// on pods as they are created and answers with a JSON patch.
type Webhook struct {
	Options inject.Options
	Log     *slog.Logger
	// Injected and Skipped count decisions, for metrics.
	Injected, Skipped, Failed atomic.Int64
}

// ServeHTTP answers an AdmissionReview.
func (wh *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<20))
	if err != nil {
		http.Error(w, "reading admission review: "+err.Error(), http.StatusBadRequest)
		return
	}
	var review kubeapi.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, "body is not an AdmissionReview with a request", http.StatusBadRequest)
		return
	}
	req := review.Request
	resp := &kubeapi.AdmissionResponse{UID: req.UID, Allowed: true}
	patch, result, err := wh.mutate(req)
	switch {
	case err != nil:
		// Never block a pod for a fault of ours: admit it unmeshed and say why.
		wh.Failed.Add(1)
		wh.Log.Error("injection failed; pod admitted without the proxy", slog.String("namespace", req.Namespace), slog.Any("error", err))
		resp.Warnings = []string{"mesh: injection failed: " + err.Error()}
	case patch != nil:
		wh.Injected.Add(1)
		pt := "JSONPatch"
		resp.Patch, resp.PatchType = patch, &pt
		wh.Log.Info("pod injected", slog.String("namespace", req.Namespace), slog.String("pod", result.Ref))
	default:
		wh.Skipped.Add(1)
		wh.Log.Debug("pod not injected", slog.String("namespace", req.Namespace), slog.String("reason", result.String()))
	}
	review.Response = resp
	review.Request = nil
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(review)
}

// mutate injects the pod and returns the JSON patch, or nil when the pod
// stays as it is.
func (wh *Webhook) mutate(req *kubeapi.AdmissionRequest) ([]byte, inject.Result, error) {
	var pod map[string]any
	if err := json.Unmarshal(req.Object, &pod); err != nil {
		return nil, inject.Result{}, fmt.Errorf("decoding pod: %w", err)
	}
	if pod["kind"] != "Pod" {
		return nil, inject.Result{Ref: fmt.Sprint(pod["kind"]), Action: "unchanged"}, nil
	}
	meta, _ := pod["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		pod["metadata"] = meta
	}
	hadAnnotations := meta["annotations"] != nil
	if meta["namespace"] == nil {
		meta["namespace"] = req.Namespace // pods of controllers arrive without one
	}
	results, err := inject.Inject(pod, wh.Options)
	if err != nil {
		return nil, inject.Result{}, err
	}
	if len(results) != 1 || results[0].Action != "injected" {
		return nil, results[0], nil
	}
	annOp := "add"
	if hadAnnotations {
		annOp = "replace"
	}
	patch, err := json.Marshal([]map[string]any{
		{"op": "replace", "path": "/spec", "value": pod["spec"]},
		{"op": annOp, "path": "/metadata/annotations", "value": meta["annotations"]},
	})
	return patch, results[0], err
}
