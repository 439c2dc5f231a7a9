// Command mesh is a service mesh in one binary: installer, injector, sidecar
// proxy, control plane and diagnostics. See README.md.
package main

import (
	"os"

	"github.com/meshproj/mesh/cli"
)

func main() {
	os.Exit(cli.Execute())
}
