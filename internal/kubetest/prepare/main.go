// Command prepare builds and caches the Kubernetes binaries and CoreDNS the tests
// use, so that `go test` does not spend its time limit on the build.
// .ci/run runs it before the tests.
package main

import (
	"fmt"
	"os"

	"github.com/meshproj/mesh/internal/kubetest"
)

func main() {
	bins, err := kubetest.Build(func(s string) { fmt.Fprintln(os.Stderr, s) })
	if err != nil {
		fmt.Fprintln(os.Stderr, "prepare:", err)
		os.Exit(1)
	}
	for _, c := range append(kubetest.Components, "coredns") {
		fmt.Println(bins[c])
	}
}
