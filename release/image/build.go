package main

import (
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/meshproj/mesh/internal/ociarchive"
	"github.com/meshproj/mesh/wellknown"
)

// controllerUID is the controller's user in the install manifests.
const controllerUID = 2103

// passwd and group name the image's users: the proxy's (the default) and
// the controller's, as the manifests run them. No shell is given: the
// image has none.
var (
	passwd = fmt.Sprintf("root:x:0:0:root:/:/sbin/nologin\nmesh-proxy:x:%d:%d:mesh proxy:/:/sbin/nologin\nmesh-controller:x:%d:%d:mesh controller:/:/sbin/nologin\n",
		wellknown.ProxyUID, wellknown.ProxyUID, controllerUID, controllerUID)
	group = fmt.Sprintf("root:x:0:\nmesh-proxy:x:%d:\nmesh-controller:x:%d:\n", wellknown.ProxyUID, controllerUID)
)

// imageFor is the image of one platform: a single layer holding the
// binaries, the CA certificates and the users, run as the proxy's user.
func imageFor(platform v1.Platform, mesh, controller, caCerts []byte, version string) (v1.Image, error) {
	return ociarchive.Image(platform, []ociarchive.File{
		{Name: "etc/", Dir: true},
		{Name: "etc/passwd", Data: []byte(passwd), Mode: 0o644},
		{Name: "etc/group", Data: []byte(group), Mode: 0o644},
		{Name: "etc/ssl/", Dir: true},
		{Name: "etc/ssl/certs/", Dir: true},
		{Name: "etc/ssl/certs/ca-certificates.crt", Data: caCerts, Mode: 0o644},
		{Name: "mesh", Data: mesh, Mode: 0o755},
		{Name: "mesh-controller", Data: controller, Mode: 0o755},
		{Name: "tmp/", Dir: true, Mode: 0o1777},
	}, ociarchive.Config{
		Entrypoint: []string{"/mesh"},
		User:       fmt.Sprintf("%d:%d", wellknown.ProxyUID, wellknown.ProxyUID),
		Env:        []string{"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
		Labels: map[string]string{
			"org.opencontainers.image.title":    "mesh",
			"org.opencontainers.image.version":  version,
			"org.opencontainers.image.source":   "https://github.com/meshproj/mesh",
			"org.opencontainers.image.licenses": "Apache-2.0",
		},
	})
}
