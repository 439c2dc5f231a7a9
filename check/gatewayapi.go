package check

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/meshproj/mesh/inventory/kube"
)

// The Gateway API's route CRDs the controller reads, and the oldest
// release whose v1 routes it reads (the mesh profile's, GAMMA, is in
// the standard channel from v1.1.0 on).
var (
	gatewayRouteCRDs  = []string{"httproutes.gateway.networking.k8s.io", "grpcroutes.gateway.networking.k8s.io"}
	minGatewayAPI     = [3]int{1, 1, 0}
	gatewayAPIVersion = "v1.6.3" // the release the controller is built with (go.mod; a test checks)
)

// Annotations the Gateway API puts on its CRDs.
const (
	gatewayBundleVersion = "gateway.networking.k8s.io/bundle-version"
	gatewayChannel       = "gateway.networking.k8s.io/channel"
)

// gatewayAPIHint says how to install the CRDs.
func gatewayAPIHint() string {
	return "routes (HTTPRoute, GRPCRoute) need the Gateway API's CRDs: kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/" +
		gatewayAPIVersion + "/standard-install.yaml (Services without routes are unaffected)"
}

// gatewayAPI says which release of the Gateway API's route CRDs the
// cluster has, and whether the controller can read it: missing is a
// warning (routes are optional), too old or without v1 served is one too.
func (c *Cluster) gatewayAPI(ctx context.Context) (Status, string) {
	var found []string
	var problems []string
	for _, name := range gatewayRouteCRDs {
		var got struct {
			Metadata struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
			Spec struct {
				Versions []crdVersion `json:"versions"`
			} `json:"spec"`
		}
		err := c.Source.Get(ctx, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"+name, &got)
		if kube.IsNotFound(err) {
			problems = append(problems, name+": not installed")
			continue
		}
		if err != nil {
			return Fail, err.Error()
		}
		kind := strings.SplitN(name, ".", 2)[0]
		version := got.Metadata.Annotations[gatewayBundleVersion]
		desc := kind + " " + version
		if ch := got.Metadata.Annotations[gatewayChannel]; ch != "" {
			desc += " (" + ch + ")"
		}
		found = append(found, desc)
		if !slices.ContainsFunc(got.Spec.Versions, func(v crdVersion) bool { return v.Name == "v1" && v.Served }) {
			problems = append(problems, name+": v1 is not served")
		}
		if v, ok := parseRelease(version); !ok || less(v, minGatewayAPI) {
			problems = append(problems, fmt.Sprintf("%s: release %q is older than v%d.%d.%d, the first whose mesh routes are standard", name, version, minGatewayAPI[0], minGatewayAPI[1], minGatewayAPI[2]))
		}
	}
	detail := strings.Join(found, ", ")
	if len(problems) > 0 {
		return Warn, strings.TrimPrefix(detail+"\n"+strings.Join(problems, "\n"), "\n")
	}
	return OK, detail
}

// parseRelease reads "v1.6.3".
func parseRelease(s string) ([3]int, bool) {
	var v [3]int
	parts := strings.Split(strings.TrimPrefix(s, "v"), ".")
	if len(parts) != 3 {
		return v, false
	}
	for i, p := range parts {
		p, _, _ = strings.Cut(p, "-")
		n, err := strconv.Atoi(p)
		if err != nil {
			return v, false
		}
		v[i] = n
	}
	return v, true
}

func less(a, b [3]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}
