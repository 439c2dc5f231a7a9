package memlimit

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestCgroupLimit(t *testing.T) {
	const v1 = "12:memory:/pods/p1\n11:cpu,cpuacct:/pods/p1\n1:name=systemd:/\n"
	const v2 = "0::/pods/p1\n"
	for _, tc := range []struct {
		name, self, file, contents string
		want                       int64
		wantErr                    bool
	}{
		{"v2 limit", v2, "pods/p1/memory.max", "262144000\n", 262144000, false},
		{"v2 none", v2, "pods/p1/memory.max", "max\n", 0, false},
		{"v1 limit", v1, "memory/pods/p1/memory.limit_in_bytes", "262144000\n", 262144000, false},
		{"v1 none", v1, "memory/pods/p1/memory.limit_in_bytes", "9223372036854771712\n", 0, false},
		{"own cgroup namespace", "12:memory:/\n", "memory/memory.limit_in_bytes", "104857600\n", 104857600, false},
		{"another cgroup's limit is not ours", v1, "memory/memory.limit_in_bytes", "104857600\n", 0, false},
		{"garbage", v2, "pods/p1/memory.max", "lots\n", 0, true},
		{"no cgroup files", v2, "", "", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if tc.file != "" {
				p := filepath.Join(root, tc.file)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte(tc.contents), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := cgroupLimit(root, tc.self)
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Fatalf("cgroupLimit = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestSetLeavesAUsersGOMEMLIMITAlone(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	t.Setenv("GOMEMLIMIT", "100MiB")
	if soft, err := Set(t.TempDir()); soft != 0 || err != nil {
		t.Fatalf("with GOMEMLIMIT set, Set = %d, %v; want it to do nothing", soft, err)
	}
	if got := debug.SetMemoryLimit(-1); got != prev {
		t.Fatalf("the runtime's limit changed to %d", got)
	}
}
