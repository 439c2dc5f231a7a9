// Package templates holds what mesh renders, embedded in the binary: the
// control plane's manifests (install/), the CRDs (crds/) and Grafana
// dashboards (dashboards/). Package install fills them in.
package templates

import "embed"

// FS holds every template.
//
//go:embed install/*.yaml install/*.part crds/*.yaml dashboards/*.json
var FS embed.FS
