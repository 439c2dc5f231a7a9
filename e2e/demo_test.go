package e2e

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshproj/mesh/inventory"
	"github.com/meshproj/mesh/stat"
	"github.com/meshproj/mesh/tap"
)

// execMesh prepares a mesh command without colour.
func execMesh(args ...string) *exec.Cmd {
	cmd := exec.Command(meshBin, args...)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	return cmd
}

// meshCmd runs a mesh command to completion and returns its output and
// exit code.
func meshCmd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := execMesh(args...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("mesh %s: %v", strings.Join(args, " "), err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

func TestDemoStatTapAndCheckAgainstALivingMesh(t *testing.T) {
	state := filepath.Join(t.TempDir(), "demo.json")
	d := startMesh(t, "demo", "--duration", "30s", "--state-file", state, "--rate", "30")
	var m *inventory.Mesh
	waitFor(t, "the demo's state file", func() bool {
		var err error
		m, err = inventory.StateFile{Path: state}.Mesh(t.Context())
		return err == nil
	})
	// The state file is written just before the demo prints what to type
	// next, so the hint may still be on its way.
	waitFor(t, "the demo to say what to type next", func() bool {
		return strings.Contains(d.out.String(), "mesh stat deploy/web --to deploy/api")
	})

	// stat: api has 2 meshed replicas, auth fails now and then, traffic flows.
	var rows []stat.Row
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, code := meshCmd(t, "stat", "--state-file", state, "-o", "json")
		if code != 0 {
			t.Fatalf("mesh stat exit %d: %s", code, out)
		}
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("mesh stat -o json: %v\n%s", err, out)
		}
		by := map[string]stat.Row{}
		for _, r := range rows {
			by[r.Name] = r
		}
		api, auth, web := by["deploy/api"], by["deploy/auth"], by["deploy/web"]
		if api.MeshedReady == 2 && api.Instances == 2 && auth.SuccessRate != nil && *auth.SuccessRate < 1 && web.RPS > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stat never showed api 2/2, auth below 100%% and web traffic: %+v", rows)
		}
		time.Sleep(time.Second)
	}
	if out, _ := meshCmd(t, "stat", "--state-file", state); !strings.Contains(out, "deploy/api") || !strings.Contains(out, "2/2") {
		t.Errorf("stat table:\n%s", out)
	}

	// tap: only events whose path matches.
	out, code := meshCmd(t, "tap", "deploy/api", "--state-file", state, "--path", "/items/books", "--max", "9", "-o", "json")
	if code != 0 {
		t.Fatalf("mesh tap exit %d: %s", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 9 {
		t.Fatalf("tap --max 9 gave %d lines:\n%s", len(lines), out)
	}
	for _, l := range lines {
		var e tap.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("tap event %q: %v", l, err)
		}
		if !strings.HasPrefix(e.Path, "/items/books") || e.Workload != "deploy/api" || !e.TLS {
			t.Errorf("tap event does not match the filter: %+v", e)
		}
	}

	// authz: api admits web alone; traffic's own calls to it are refused,
	// counted, and tapped with why.
	waitFor(t, "mesh authz to count api's refusals", func() bool {
		out, code := meshCmd(t, "authz", "deploy/api", "--state-file", state, "--window", "60s", "-o", "json")
		var rows []stat.AuthzRow
		if code != 0 || json.Unmarshal([]byte(out), &rows) != nil {
			t.Fatalf("mesh authz exit %d: %s", code, out)
		}
		var allowed, denied uint64
		for _, r := range rows {
			if r.Authorization == "web-only" && strings.Contains(r.Admits, "/sa/web") {
				allowed += r.Allowed
			}
			if r.Server != "" && r.Authorization == "" && slices.Contains(r.Reasons, "no authorization admits the client") {
				denied += r.Denied
			}
		}
		return allowed > 0 && denied > 0
	})
	out, code = meshCmd(t, "tap", "deploy/api", "--state-file", state, "--path", "/internal", "--max", "2", "-o", "json")
	if code != 0 || !strings.Contains(out, `"status":403`) || !strings.Contains(out, "no authorization admits the client (spiffe://cluster.local/ns/demo/sa/traffic") {
		t.Errorf("tap of traffic's refused calls to api: exit %d\n%s", code, out)
	}

	// check: passes, then fails with a hint once a proxy is gone.
	if out, code := meshCmd(t, "check", "--state-file", state); code != 0 || !strings.Contains(out, "Status check results are ✓") {
		t.Fatalf("mesh check on a healthy demo: exit %d\n%s", code, out)
	}
	api2 := m.Workloads[2].Instances[1]
	if api2.Name != "api-2" {
		t.Fatalf("unexpected demo layout: %+v", m.Workloads)
	}
	if err := syscall.Kill(api2.PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the api-2 proxy to stop", func() bool { return syscall.Kill(api2.PID, 0) != nil })
	out, code = meshCmd(t, "check", "--state-file", state)
	if code != 1 || !strings.Contains(out, "× proxy of deploy/api (api-2) is live") || !strings.Contains(out, "hint: ") {
		t.Fatalf("mesh check after stopping a proxy: exit %d\n%s", code, out)
	}

	// The demo ends by itself and leaves nothing behind.
	if code := d.exitCode(t, 60*time.Second); code != 0 {
		t.Fatalf("demo exit code %d:\n%s", code, d.out.String())
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file left behind: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(m.ControlPlane.DiscoveryFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("demo directory left behind: %v", err)
	}
	for _, w := range m.Workloads {
		for _, in := range w.Instances {
			if err := syscall.Kill(in.PID, 0); err == nil {
				t.Errorf("proxy %s (pid %d) still running after the demo ended", in.Name, in.PID)
			}
		}
	}
}
