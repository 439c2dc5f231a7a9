package main

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/meshproj/mesh/internal/ociarchive"
)

// TestArchiveIsAnIndexOfMinimalNonRootImagesNamedForThisVersion writes an
// archive from stand-in binaries and reads it back as an importer would.
func TestArchiveIsAnIndexOfMinimalNonRootImagesNamedForThisVersion(t *testing.T) {
	var images []ociarchive.PlatformImage
	for _, arch := range []string{"amd64", "arm64"} {
		p := v1.Platform{OS: "linux", Architecture: arch}
		img, err := imageFor(p, []byte("binary for "+arch), []byte("controller for "+arch), []byte("CA CERTS"), "v9.8.7")
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, ociarchive.PlatformImage{Platform: p, Image: img})
	}
	dir := t.TempDir()
	archive := filepath.Join(dir, "mesh.tar")
	if err := ociarchive.Write(archive, ociarchive.Index(images), "ghcr.io/meshproj/mesh:v9.8.7"); err != nil {
		t.Fatal(err)
	}
	// Unpack, and read the layout.
	unpacked := filepath.Join(dir, "layout")
	untar(t, archive, unpacked)
	top, err := layout.ImageIndexFromPath(unpacked)
	if err != nil {
		t.Fatal(err)
	}
	im, err := top.IndexManifest()
	if err != nil || len(im.Manifests) != 1 {
		t.Fatalf("index.json: %v %+v; want one entry, the image index", err, im)
	}
	for _, key := range []string{"org.opencontainers.image.ref.name", "io.containerd.image.name"} {
		if got := im.Manifests[0].Annotations[key]; got != "ghcr.io/meshproj/mesh:v9.8.7" {
			t.Errorf("annotation %s = %q; want the reference install writes", key, got)
		}
	}
	idx, err := top.ImageIndex(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	platforms, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var archs []string
	for _, m := range platforms.Manifests {
		archs = append(archs, m.Platform.OS+"/"+m.Platform.Architecture)
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Config.User != "2102:2102" || !slices.Equal(cfg.Config.Entrypoint, []string{"/mesh"}) || cfg.Architecture != m.Platform.Architecture {
			t.Errorf("%s: user %q entrypoint %v arch %s; want the proxy's user, /mesh, and its platform", archs[len(archs)-1], cfg.Config.User, cfg.Config.Entrypoint, cfg.Architecture)
		}
		files := filesOf(t, img)
		if got := string(files["mesh"]); got != "binary for "+m.Platform.Architecture {
			t.Errorf("/mesh is %q; want the binary for its platform", got)
		}
		if got := string(files["mesh-controller"]); got != "controller for "+m.Platform.Architecture {
			t.Errorf("/mesh-controller is %q; want the controller for its platform", got)
		}
		if string(files["etc/ssl/certs/ca-certificates.crt"]) != "CA CERTS" {
			t.Error("no CA certificates")
		}
		if !strings.Contains(string(files["etc/passwd"]), "mesh-proxy:x:2102:2102") || !strings.Contains(string(files["etc/passwd"]), ":2103:") {
			t.Errorf("/etc/passwd lacks the manifests' users:\n%s", files["etc/passwd"])
		}
		for name := range files {
			if base := filepath.Base(name); strings.HasPrefix(name, "bin/") || strings.HasPrefix(name, "usr/") || base == "sh" || base == "bash" || base == "busybox" {
				t.Errorf("the image holds %s; want no shell", name)
			}
		}
	}
	if !slices.Equal(archs, []string{"linux/amd64", "linux/arm64"}) {
		t.Errorf("platforms %v; want linux/amd64 and linux/arm64", archs)
	}
}

func TestTheSameInputsGiveTheSameImage(t *testing.T) {
	digest := func() v1.Hash {
		p := v1.Platform{OS: "linux", Architecture: "amd64"}
		img, err := imageFor(p, []byte("bin"), []byte("ctl"), []byte("ca"), "v1")
		if err != nil {
			t.Fatal(err)
		}
		d, err := ociarchive.Index([]ociarchive.PlatformImage{{Platform: p, Image: img}}).Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if a, b := digest(), digest(); a != b {
		t.Fatalf("two builds of the same inputs: %s and %s", a, b)
	}
}

func filesOf(t *testing.T, img v1.Image) map[string][]byte {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %v, %d; want one", err, len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
}

func untar(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			os.MkdirAll(p, 0o755)
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		b, _ := io.ReadAll(tr)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
