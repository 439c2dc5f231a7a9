package kubeapi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/meshproj/mesh/pki"
	"github.com/meshproj/mesh/wellknown"
)

// ReadTrustAnchors reads the trust anchors `mesh install` put in the
// control plane's namespace, checked to be PEM certificates: what the
// webhook and `mesh inject` write into each proxy's spec.
func ReadTrustAnchors(ctx context.Context, c *Client, namespace string) (string, error) {
	var cm ConfigMap
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

// ErrNoKubeconfig means no cluster was found: not in a pod, and no
// kubeconfig.
var ErrNoKubeconfig = errors.New("not in a cluster and no kubeconfig: give --kubeconfig or set KUBECONFIG")

// Find connects with the kubeconfig given, else the pod's ServiceAccount,
// else $KUBECONFIG, else ~/.kube/config.
func Find(path string) (*Client, error) {
	if path != "" {
		return FromKubeconfig(path)
	}
	if c, err := InCluster(); err == nil {
		return c, nil
	}
	if env := os.Getenv("KUBECONFIG"); env != "" {
		return FromKubeconfig(env)
	}
	if home, err := os.UserHomeDir(); err == nil {
		if p := filepath.Join(home, ".kube", "config"); fileExists(p) {
			return FromKubeconfig(p)
		}
	}
	return nil, ErrNoKubeconfig
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
