package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Run(context.Background(), args, Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	return code, out.String(), errOut.String()
}

func TestVersion(t *testing.T) {
	code, out, _ := run(t, "version", "-o", "json")
	var v VersionInfo
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.Version == "" || v.Go == "" {
		t.Fatalf("version -o json: %d %q", code, out)
	}
	if code, out, _ := run(t, "version", "--short"); code != 0 || strings.TrimSpace(out) != v.Version {
		t.Fatalf("version --short: %d %q", code, out)
	}
}

func TestExitCodes(t *testing.T) {
	if code, _, errOut := run(t, "proxy", "--no-such-flag"); code != 2 || !strings.Contains(errOut, "mesh proxy --help") {
		t.Errorf("unknown flag: exit %d, %q", code, errOut)
	}
	if code, _, errOut := run(t, "version", "extra"); code != 2 || !strings.Contains(errOut, "takes no arguments") {
		t.Errorf("extra argument: exit %d, %q", code, errOut)
	}
	if code, _, errOut := run(t, "proxy"); code != 2 || !strings.Contains(errOut, "give --discovery-file (local mode) or --discovery-addr") {
		t.Errorf("missing discovery: exit %d, %q", code, errOut)
	}
	if code, _, errOut := run(t, "proxy", "--discovery-file", "d.yaml", "--discovery-addr", "c:8086"); code != 2 || !strings.Contains(errOut, "exclude each other") {
		t.Errorf("two discovery sources: exit %d, %q", code, errOut)
	}
	if code, _, errOut := run(t, "proxy", "--discovery-addr", "c:8086", "--cores", "-1"); code != 2 || !strings.Contains(errOut, "--cores must not be negative") {
		t.Errorf("negative cores: exit %d, %q", code, errOut)
	}
	if code, _, errOut := run(t, "proxy", "--discovery-addr", "controller"); code != 2 || !strings.Contains(errOut, `--discovery-addr "controller": want host:port`) {
		t.Errorf("bad discovery address: exit %d, %q", code, errOut)
	}
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	if code, _, errOut := run(t, "proxy", "--discovery-file", missing); code != 1 || !strings.Contains(errOut, missing) {
		t.Errorf("missing discovery file: exit %d, %q", code, errOut)
	}
}

func TestSettingsPrecedenceIsFlagThenEnvThenFile(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "mesh.yaml")
	os.WriteFile(cfg, []byte("log-level: warn\nconnect-timeout: 7s\nadmin-addr: 127.0.0.1:1\n"), 0o644)
	t.Setenv("MESH_CONNECT_TIMEOUT", "5s")
	t.Setenv("MESH_ADMIN_ADDR", "127.0.0.1:2")

	cmd := newProxyCommand(Streams{})
	root := &cobra.Command{Use: "mesh"}
	root.PersistentFlags().String("config", "", "")
	root.PersistentFlags().String("log-level", "info", "")
	root.PersistentFlags().String("log-format", "auto", "")
	root.AddCommand(cmd)
	if err := root.PersistentFlags().Set("config", cfg); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Flags().Set("admin-addr", "127.0.0.1:3"); err != nil {
		t.Fatal(err)
	}
	v, err := settings(cmd)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"admin-addr":      "127.0.0.1:3", // flag beats env and file
		"connect-timeout": "5s",          // env beats file
		"log-level":       "warn",        // file beats default
		"outbound-addr":   "127.0.0.1:4140",
	} {
		if got := v.GetString(key); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
}

func TestConfigFileWithUnknownKeyIsRefused(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "mesh.yaml")
	os.WriteFile(cfg, []byte("outbound-adr: 127.0.0.1:1\n"), 0o644)
	code, _, errOut := run(t, "proxy", "--config", cfg)
	if code == 0 || !strings.Contains(errOut, `unknown key "outbound-adr"`) || !strings.Contains(errOut, cfg) {
		t.Fatalf("exit %d, %q", code, errOut)
	}
}

func TestBadFlagValuesAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"proxy", "--discovery-file", "x", "--inbound-forward", "localhost"},
		{"proxy", "--discovery-file", "x", "--outbound-tcp", "15432"},
		{"proxy", "--discovery-file", "x", "--opaque-ports", "smtp"},
		{"proxy", "--discovery-file", "x", "--log-level", "loud"},
		{"proxy", "--discovery-file", "x", "--detect-timeout", "0s"},
	} {
		if code, _, errOut := run(t, args...); code != 2 {
			t.Errorf("%v: exit %d (%s), want 2", args, code, errOut)
		}
	}
}

func TestLabelsFromEnvironment(t *testing.T) {
	t.Setenv("MESH_LABEL", "namespace=shop,pod=web-1")
	cmd := newProxyCommand(Streams{})
	root := NewRootCommand(Streams{})
	root.AddCommand(cmd)
	cmd.Flags().Set("discovery-file", "x")
	o, err := completeProxy(cmd, Streams{ErrOut: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Labels["namespace"] != "shop" || o.cfg.Labels["pod"] != "web-1" || len(o.cfg.Labels) != 2 {
		t.Fatalf("labels %v", o.cfg.Labels)
	}
}
