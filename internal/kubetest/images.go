package kubetest

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/meshproj/mesh/internal/ociarchive"
)

// BuildImage builds the Go program pkg statically for this machine and
// writes an image of it, named ref, to the OCI archive at out: /NAME (the
// package's last element) is its entrypoint, run as an unprivileged user.
// The cluster's own pause image and the tests' apps are made this way.
func BuildImage(out, pkg, ref string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), "build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, path.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building %s: %v\n%s", pkg, err, b)
	}
	return BinaryImage(out, bin, ref)
}

// BinaryImage writes an image of the static program at bin, named ref, to
// the OCI archive at out, as BuildImage does: for a program built
// elsewhere, such as Jaeger.
func BinaryImage(out, bin, ref string) error {
	data, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	name := filepath.Base(bin)
	platform := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	img, err := ociarchive.Image(platform, []ociarchive.File{
		{Name: name, Data: data, Mode: 0o755},
		{Name: "tmp/", Dir: true, Mode: 0o1777},
	}, ociarchive.Config{Entrypoint: []string{"/" + name}, User: "65532:65532"})
	if err != nil {
		return err
	}
	return ociarchive.Write(out, ociarchive.Index([]ociarchive.PlatformImage{{Platform: platform, Image: img}}), ref)
}
