// Command image builds the mesh image from the static binary, without
// Docker: an OCI image index for linux/amd64 and linux/arm64, written as an
// OCI image archive (a tar of an OCI image layout) that `ctr -n k8s.io image
// import` loads and standard tools push. It is tagged with exactly the
// reference `mesh install` and `mesh inject` write for this version.
//
//	go run ./release/image -o mesh-image.tar                 # version "dev", as go run . install says
//	go run ./release/image -o mesh-image.tar -version v0.2.0 # a release
//
// The image holds the two binaries (/mesh, which every sidecar runs, and
// /mesh-controller, the control plane), CA certificates and the users the
// manifests run as (mesh-proxy 2102, the default; mesh-controller 2103),
// and no shell.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/meshproj/mesh/internal/ociarchive"
	"github.com/meshproj/mesh/wellknown"
)

func main() {
	out := flag.String("o", "", "the image archive to write (required)")
	version := flag.String("version", "dev", "the version stamped into the binary and used as the tag")
	platforms := flag.String("platforms", "linux/amd64,linux/arm64", "platforms to build, comma-separated")
	caFile := flag.String("ca-certificates", "/etc/ssl/certs/ca-certificates.crt", "CA certificates to put in the image")
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: go run ./release/image -o FILE [-version V] [-platforms linux/amd64,linux/arm64]")
		os.Exit(2)
	}
	ref, err := run(*out, *version, *platforms, *caFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s: %s for %s\nload it with: ctr -n k8s.io image import %s\n", *out, ref, *platforms, *out)
}

func run(out, version, platforms, caFile string) (string, error) {
	caCerts, err := os.ReadFile(caFile)
	if err != nil {
		return "", fmt.Errorf("CA certificates: %w", err)
	}
	work, err := os.MkdirTemp("", "mesh-image-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	var images []ociarchive.PlatformImage
	for _, p := range strings.Split(platforms, ",") {
		platform, err := v1.ParsePlatform(strings.TrimSpace(p))
		if err != nil || platform.OS != "linux" || platform.Architecture == "" {
			return "", fmt.Errorf("platform %q: want linux/ARCH, such as linux/arm64", p)
		}
		var binaries [2][]byte
		for i, pkg := range []string{"github.com/meshproj/mesh", "github.com/meshproj/mesh/cmd/mesh-controller"} {
			bin := filepath.Join(work, fmt.Sprintf("%d-%s", i, platform.Architecture))
			if err := buildBinary(bin, pkg, *platform, version); err != nil {
				return "", err
			}
			if binaries[i], err = os.ReadFile(bin); err != nil {
				return "", err
			}
		}
		img, err := imageFor(*platform, binaries[0], binaries[1], caCerts, version)
		if err != nil {
			return "", err
		}
		images = append(images, ociarchive.PlatformImage{Platform: *platform, Image: img})
	}
	ref := wellknown.Image + ":" + version
	return ref, ociarchive.Write(out, ociarchive.Index(images), ref)
}

// buildBinary cross-compiles a static binary of pkg, with the version
// stamped as `mesh version` reports it.
func buildBinary(out, pkg string, p v1.Platform, version string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-o", out,
		"-ldflags", "-s -w -X github.com/meshproj/mesh/cli.Version="+version, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture)
	if p.Variant != "" && p.Architecture == "arm" {
		cmd.Env = append(cmd.Env, "GOARM="+strings.TrimPrefix(p.Variant, "v"))
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building %s for %s: %w", pkg, p, err)
	}
	return nil
}
