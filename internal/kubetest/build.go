// Package kubetest gives tests a real Kubernetes API server: etcd and
// kube-apiserver on 127.0.0.1 with generated certificates, RBAC,
// ServiceAccount token signing (so TokenRequest and TokenReview work) and
// admission webhooks. kube-apiserver is built once per machine from the
// published Go modules and cached; etcd comes from Debian's etcd-server.
// It also builds, the same way, the one-node cluster's other parts, and
// Jaeger for the tracing tests.
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

// Components are the Kubernetes binaries the tests build, all from
// k8s.io/kubernetes at KubernetesVersion.
var Components = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}

// APIServer returns the path of a kube-apiserver binary, building it first
// if this machine has none.
func APIServer(log func(string)) (string, error) {
	bins, err := Build(log)
	if err != nil {
		return "", err
	}
	return bins["kube-apiserver"], nil
}

// Build returns the paths of the Components and of CoreDNS ("coredns"),
// building them first if this machine has none. The first build takes
// minutes; then they are cached in CacheDir.
func Build(log func(string)) (map[string]string, error) {
	dir := CacheDir()
	bins := map[string]string{}
	missing := false
	for _, c := range append(Components, "coredns") {
		bins[c] = filepath.Join(dir, "bin", c)
		if _, err := os.Stat(bins[c]); err != nil {
			missing = true
		}
	}
	if !missing {
		return bins, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// One build at a time on this machine, whatever runs the tests.
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, err
	}
	if _, err := os.Stat(bins["kubectl"]); err != nil {
		log(fmt.Sprintf("building Kubernetes %s into %s (once per machine; minutes)", KubernetesVersion, dir))
		if err := buildKubernetes(dir); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(bins["coredns"]); err != nil {
		log(fmt.Sprintf("building CoreDNS %s into %s (once per machine)", CoreDNSVersion, dir))
		if err := buildCoreDNS(dir); err != nil {
			return nil, err
		}
	}
	return bins, nil
}

// goIn runs go in dir, for a static build.
func goIn(dir string, args ...string) error {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "CGO_ENABLED=0", "GOWORK=off")
	dieWithParent(cmd)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, tail(out, 3000))
	}
	return nil
}

// buildKubernetes builds every component in one go build, into DIR/bin
// through a temporary directory so that nothing is half-written there.
func buildKubernetes(dir string) error {
	if err := writeBuildModule(dir); err != nil {
		return err
	}
	if err := goIn(dir, "mod", "tidy"); err != nil {
		return err
	}
	ldflags := fmt.Sprintf("-X k8s.io/component-base/version.gitVersion=%s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=%s",
		KubernetesVersion, strings.Split(KubernetesVersion, ".")[1])
	tmp, err := os.MkdirTemp(dir, "bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	args := []string{"build", "-o", tmp + "/", "-ldflags", ldflags}
	for _, c := range Components {
		args = append(args, "k8s.io/kubernetes/cmd/"+c)
	}
	if err := goIn(dir, args...); err != nil {
		return err
	}
	return install(tmp, filepath.Join(dir, "bin"), Components)
}

// install moves the named files from src to dst.
func install(src, dst string, names []string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, n := range names {
		if err := os.Rename(filepath.Join(src, n), filepath.Join(dst, n)); err != nil {
			return err
		}
	}
	return nil
}

// CoreDNSVersion is the cluster DNS the tests run, built from its module
// with only the plugins cluster DNS needs.
const CoreDNSVersion = "v1.12.4"

const corednsMain = `// A CoreDNS with only the plugins cluster DNS needs.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	"github.com/coredns/coredns/coremain"
)

func init() { dnsserver.Directives = []string{"bind", "errors", "cache", "kubernetes"} }

func main() { coremain.Run() }
`

func buildCoreDNS(dir string) error {
	mod := filepath.Join(dir, "coredns")
	if err := os.MkdirAll(mod, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module meshcorednsbuild\n\ngo 1.26.0\n\nrequire github.com/coredns/coredns "+CoreDNSVersion+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(mod, "main.go"), []byte(corednsMain), 0o644); err != nil {
		return err
	}
	if err := goIn(mod, "mod", "tidy"); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(dir, "bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := goIn(mod, "build", "-o", filepath.Join(tmp, "coredns"), "."); err != nil {
		return err
	}
	return install(tmp, filepath.Join(dir, "bin"), []string{"coredns"})
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
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
	var deps strings.Builder
	deps.WriteString("package meshkubebuild\n\nimport (\n")
	// A program cannot be imported: its packages can, and they need the
	// same modules.
	for _, pkg := range []string{"k8s.io/kubernetes/cmd/kube-apiserver/app", "k8s.io/kubernetes/cmd/kube-controller-manager/app",
		"k8s.io/kubernetes/cmd/kube-scheduler/app", "k8s.io/kubernetes/cmd/kubelet/app", "k8s.io/kubernetes/cmd/kube-proxy/app",
		"k8s.io/kubectl/pkg/cmd"} {
		fmt.Fprintf(&deps, "\t_ %q\n", pkg)
	}
	deps.WriteString(")\n")
	return os.WriteFile(filepath.Join(dir, "deps.go"), []byte(deps.String()), 0o644)
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
