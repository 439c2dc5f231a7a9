// Package cluster tests the mesh as a user meets it: on a one-node
// Kubernetes cluster (internal/kubetest) started once for the package,
// with the mesh image built by `go run ./release/image` and imported into
// the node's containerd, and the user's commands run as they type them.
package cluster

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/meshproj/mesh/internal/kubetest"
)

// appImage is the test application's image (e2e/cluster/app).
const appImage = "docker.io/meshtest/app:1"

var (
	cluster *kubetest.Cluster
	// mesh is the mesh binary, built as the image's is.
	mesh string
	// skip says why the cluster tests cannot run here, or "".
	skip string
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		skip = "skipped in -short mode"
	} else if need := kubetest.Needs(); need != "" {
		skip = "skipped: " + need
	}
	if skip != "" {
		os.Exit(m.Run())
	}
	code, err := withCluster(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster tests:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func withCluster(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "mesh-cluster-test-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	logf := func(s string) { fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05"), s) }
	c, err := kubetest.StartCluster(logf)
	if err != nil {
		return 0, err
	}
	cluster = c
	code, err := testOn(c, dir, m, logf)
	if err != nil || code != 0 {
		fmt.Fprintln(os.Stderr, c.Logs())
	}
	c.Stop()
	if err == nil && c.Leftover != "" {
		err = fmt.Errorf("the cluster left behind %s", c.Leftover)
	}
	return code, err
}

func testOn(c *kubetest.Cluster, dir string, m *testing.M, logf func(string)) (int, error) {
	start := time.Now()

	// The images: the mesh's, as a user builds it, the test app's and
	// Jaeger's.
	meshImage := filepath.Join(dir, "mesh-image.tar")
	build := exec.Command("go", "run", "./release/image", "-platforms", "linux/"+runtime.GOARCH, "-o", meshImage)
	build.Dir = repoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("go run ./release/image: %v\n%s", err, out)
	}
	app := filepath.Join(dir, "app.tar")
	if err := kubetest.BuildImage(app, "github.com/meshproj/mesh/e2e/cluster/app", appImage); err != nil {
		return 0, err
	}
	jaegerBin, err := kubetest.Jaeger(logf)
	if err != nil {
		return 0, err
	}
	jaeger := filepath.Join(dir, "jaeger.tar")
	if err := kubetest.BinaryImage(jaeger, jaegerBin, jaegerImage); err != nil {
		return 0, err
	}
	for _, img := range []string{meshImage, app, jaeger} {
		if err := c.Import(img); err != nil {
			return 0, err
		}
	}
	mesh = filepath.Join(dir, "mesh")
	if out, err := exec.Command("go", "build", "-o", mesh, "github.com/meshproj/mesh").CombinedOutput(); err != nil {
		return 0, fmt.Errorf("building mesh: %v\n%s", err, out)
	}
	logf(fmt.Sprintf("cluster tests: images built and imported in %s", time.Since(start).Round(time.Second)))
	return m.Run(), nil
}

func repoRoot() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "."
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func needCluster(t *testing.T) *kubetest.Cluster {
	t.Helper()
	if skip != "" {
		t.Skip(skip)
	}
	return cluster
}

// kubectl runs kubectl as the cluster's admin and fails the test on error.
func kubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := cluster.Run(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// meshCmd runs the mesh binary, as a user would, against the cluster, and
// fails the test on error.
func meshCmd(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, stderr, err := meshRun(stdin, []string{"KUBECONFIG=" + cluster.Kubeconfig}, args...)
	if err != nil {
		t.Fatalf("mesh %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

// meshRun runs the mesh binary with stdin and env, and returns stdout,
// stderr and the error.
func meshRun(stdin string, env []string, args ...string) (string, string, error) {
	cmd := exec.Command(mesh, args...)
	cmd.Env = append(os.Environ(), env...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}
