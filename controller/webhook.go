package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshproj/mesh/inject"
	"github.com/meshproj/mesh/kubeapi"
	"github.com/meshproj/mesh/wellknown"
)

// Webhook is the mutating admission webhook: it runs the inject package
// on pods as they are created and answers with a JSON patch.
type Webhook struct {
	Options inject.Options
	Log     *slog.Logger
	// Client reads the pod's namespace, whose config.mesh.io/ annotations
	// (such as default-inbound-policy) apply below the workload's; nil:
	// none are read.
	Client *kubeapi.Client
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
	var ce *inject.ConfigError
	switch {
	case errors.As(err, &ce):
		// The owner asked for something the proxy cannot do: say so, rather
		// than admit the pod without the protection it asked for.
		wh.Failed.Add(1)
		wh.Log.Info("pod refused: its mesh settings are wrong", slog.String("namespace", req.Namespace), slog.Any("error", err))
		resp.Allowed = false
		resp.Result = &kubeapi.Status{Code: http.StatusBadRequest, Message: "mesh: " + err.Error()}
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
	opt := wh.Options
	if wh.Client != nil {
		ns := fmt.Sprint(meta["namespace"])
		var n kubeapi.Namespace
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := wh.Client.Do(ctx, "GET", "/api/v1/namespaces/"+url.PathEscape(ns), nil, &n); err != nil {
			return nil, inject.Result{}, fmt.Errorf("reading namespace %s for its config.mesh.io/ annotations: %w", ns, err)
		}
		opt.NamespaceConfig = map[string]string{}
		for k, v := range n.Metadata.Annotations {
			if key, ok := strings.CutPrefix(k, wellknown.ConfigPrefix); ok {
				opt.NamespaceConfig[key] = v
			}
		}
	}
	results, err := inject.Inject(pod, opt)
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
