// Command mesh-controller is the mesh's control plane on Kubernetes:
// discovery over xDS, the identity service and the injection webhook, as
// `mesh install` deploys it. It is a binary of its own, in the same image
// as mesh, so that the sidecars do not load it. See README.md.
package main

import (
	"os"

	"github.com/meshproj/mesh/cli"
	"github.com/meshproj/mesh/cli/controllercli"
)

func main() {
	os.Exit(cli.Main(controllercli.NewCommand))
}
