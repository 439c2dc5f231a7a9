// Command prepare builds and caches the Kubernetes binaries, CoreDNS and
// Jaeger the tests use, so that `go test` does not spend its time limit on
// the build.
// .ci/run runs it before the tests.
package main

import (
	"fmt"
	"os"

	"github.com/meshproj/mesh/internal/kubetest"
)

func main() {
	log := func(s string) { fmt.Fprintln(os.Stderr, s) }
	bins, err := kubetest.Build(log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "prepare:", err)
		os.Exit(1)
	}
	for _, c := range append(kubetest.Components, "coredns") {
		fmt.Println(bins[c])
	}
	jaeger, err := kubetest.Jaeger(log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "prepare:", err)
		os.Exit(1)
	}
	fmt.Println(jaeger)
}
