package controller

import (
	"context"
	"fmt"

	"github.com/meshproj/mesh/kubeapi"
	"github.com/meshproj/mesh/pki"
	"github.com/meshproj/mesh/wellknown"
)

// ReadTrustAnchors reads the trust anchors `mesh install` put in the
// control plane's namespace, checked to be PEM certificates: what the
// webhook and `mesh inject` write into each proxy's spec.
func ReadTrustAnchors(ctx context.Context, c *kubeapi.Client, namespace string) (string, error) {
	var cm kubeapi.ConfigMap
	where := namespace + "/" + wellknown.TrustAnchorsConfigMap
	if err := c.Do(ctx, "GET", "/api/v1/namespaces/"+namespace+"/configmaps/"+wellknown.TrustAnchorsConfigMap, nil, &cm); err != nil {
		return "", fmt.Errorf("reading the trust anchors (ConfigMap %s; is the mesh installed?): %w", where, err)
	}
	pem := cm.Data[wellknown.TrustAnchorsKey]
	if _, err := pki.ParseCerts([]byte(pem)); err != nil {
		return "", fmt.Errorf("trust anchors in ConfigMap %s, key %s: %w", where, wellknown.TrustAnchorsKey, err)
	}
	return pem, nil
}
