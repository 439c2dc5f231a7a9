// Package kubetest gives tests a real Kubernetes API server: etcd and
// kube-apiserver on 127.0.0.1 with generated certificates, RBAC,
// ServiceAccount token signing (so TokenRequest and TokenReview work) and
// admission webhooks. kube-apiserver is built once per machine from the
// published Go modules and cached; etcd comes from Debian's etcd-server.
//
// It is for tests only; nothing in the mesh binary uses it.
package kubetest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// KubernetesVersion is the API server the tests run against.
const KubernetesVersion = "v1.37.2"

// stagingVersion is the published version of k8s.io/kubernetes' staging
// modules that matches KubernetesVersion.
const stagingVersion = "v0.37.2"

// CacheDir is where built binaries are kept ($MESH_KUBE_CACHE, else
// ~/.cache/mesh/kube/VERSION).
func CacheDir() string {
	if d := os.Getenv("MESH_KUBE_CACHE"); d != "" {
		return d
	}
	home, err := os.UserCacheDir()
	if err != nil {
		home = os.TempDir()
	}
	return filepath.Join(home, "mesh", "kube", KubernetesVersion)
}

// APIServer returns the path of a kube-apiserver binary, building it first
// if this machine has none. The build takes minutes the first time.
func APIServer(log func(string)) (string, error) {
	dir := CacheDir()
	bin := filepath.Join(dir, "bin", "kube-apiserver")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// One build at a time on this machine, whatever runs the tests.
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil // built while we waited
	}
	log(fmt.Sprintf("building kube-apiserver %s into %s (once per machine; minutes)", KubernetesVersion, dir))
	if err := writeBuildModule(dir); err != nil {
		return "", err
	}
	run := func(args ...string) error {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, tail(out))
		}
		return nil
	}
	if err := run("mod", "tidy"); err != nil {
		return "", err
	}
	ldflags := fmt.Sprintf("-X k8s.io/component-base/version.gitVersion=%s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=%s",
		KubernetesVersion, strings.Split(KubernetesVersion, ".")[1])
	tmp := bin + ".tmp"
	if err := run("build", "-o", tmp, "-ldflags", ldflags, "k8s.io/kubernetes/cmd/kube-apiserver"); err != nil {
		return "", err
	}
	return bin, os.Rename(tmp, bin)
}

func tail(b []byte) string {
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// writeBuildModule writes a module that requires k8s.io/kubernetes and
// replaces each of its ./staging modules with the published build.
func writeBuildModule(dir string) error {
	out, err := exec.Command("go", "mod", "download", "-json", "k8s.io/kubernetes@"+KubernetesVersion).Output()
	if err != nil {
		return fmt.Errorf("downloading k8s.io/kubernetes@%s: %w", KubernetesVersion, err)
	}
	var info struct{ GoMod string }
	if err := json.Unmarshal(out, &info); err != nil || info.GoMod == "" {
		return fmt.Errorf("go mod download gave no go.mod: %s", out)
	}
	f, err := os.Open(info.GoMod)
	if err != nil {
		return err
	}
	defer f.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "module meshkubebuild\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n", KubernetesVersion)
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 3 && fields[1] == "=>" && strings.HasPrefix(fields[2], "./staging/") {
			fmt.Fprintf(&b, "\t%s => %s %s\n", fields[0], fields[0], stagingVersion)
			n++
		}
	}
	if n == 0 {
		return fmt.Errorf("found no staging modules in %s", info.GoMod)
	}
	b.WriteString(")\n")
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "deps.go"), []byte("package meshkubebuild\n\nimport _ \"k8s.io/kubernetes/cmd/kube-apiserver/app\"\n"), 0o644)
}

// Etcd returns the path of etcd (from Debian's etcd-server package).
func Etcd() (string, error) {
	for _, p := range []string{"etcd", "/usr/bin/etcd"} {
		if path, err := exec.LookPath(p); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("etcd not found: apt-get install etcd-server")
}
