package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/meshproj/mesh/wellknown"
)

// epoch is every file's and the image's time: the same inputs give the same
// image, digest for digest.
var epoch = time.Unix(0, 0).UTC()

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
// binary, the CA certificates and the users, run as the proxy's user.
func imageFor(platform v1.Platform, binary, caCerts []byte, version string) (v1.Image, error) {
	layer, err := filesLayer([]file{
		{name: "etc/", dir: true},
		{name: "etc/passwd", data: []byte(passwd), mode: 0o644},
		{name: "etc/group", data: []byte(group), mode: 0o644},
		{name: "etc/ssl/", dir: true},
		{name: "etc/ssl/certs/", dir: true},
		{name: "etc/ssl/certs/ca-certificates.crt", data: caCerts, mode: 0o644},
		{name: "mesh", data: binary, mode: 0o755},
		{name: "tmp/", dir: true, mode: 0o1777},
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Variant = platform.OS, platform.Architecture, platform.Variant
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config.Entrypoint = []string{"/mesh"}
	cfg.Config.User = fmt.Sprintf("%d:%d", wellknown.ProxyUID, wellknown.ProxyUID)
	cfg.Config.WorkingDir = "/"
	cfg.Config.Env = []string{"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}
	cfg.Config.Labels = map[string]string{
		"org.opencontainers.image.title":    "mesh",
		"org.opencontainers.image.version":  version,
		"org.opencontainers.image.source":   "https://github.com/meshproj/mesh",
		"org.opencontainers.image.licenses": "Apache-2.0",
	}
	return mutate.ConfigFile(img, cfg)
}

// platformImage is one platform's image.
type platformImage struct {
	platform v1.Platform
	image    v1.Image
}

// indexOf gathers the platforms' images, in the order given, into one
// image index.
func indexOf(images []platformImage) v1.ImageIndex {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, pi := range images {
		p := pi.platform
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: pi.image, Descriptor: v1.Descriptor{Platform: &p}})
	}
	return idx
}

// writeArchive writes idx as an OCI image layout in a tar file, named ref
// for the tools that import it (containerd's ctr reads both annotations).
func writeArchive(path string, idx v1.ImageIndex, ref string) error {
	dir, err := os.MkdirTemp("", "mesh-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref,
		"io.containerd.image.name":          ref,
	})); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := tarDir(dir, tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path) // nothing half-written at path
}

// file is one entry of a layer.
type file struct {
	name string
	data []byte
	mode int64
	dir  bool
}

func filesLayer(files []file) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, ModTime: epoch, Uname: "root", Gname: "root", Format: tar.FormatPAX}
		if f.dir {
			h.Typeflag = tar.TypeDir
			if h.Mode == 0 {
				h.Mode = 0o755
			}
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
}

// tarDir writes the files under dir into a tar file at out, in a stable
// order and with fixed times.
func tarDir(dir, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name, h.ModTime, h.Uid, h.Gid, h.Uname, h.Gname = filepath.ToSlash(rel), epoch, 0, 0, "", ""
		if info.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if info.IsDir() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
