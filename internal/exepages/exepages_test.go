package exepages

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

func TestOnlyTheExecutablesReadOnlyMappingsAreTaken(t *testing.T) {
	maps := `00400000-01369000 r-xp 00000000 fd:01 123 /usr/local/bin/mesh
01369000-025f1000 r--p 00f69000 fd:01 123 /usr/local/bin/mesh
025f1000-026f6000 rw-p 021f1000 fd:01 123 /usr/local/bin/mesh
026f6000-02740000 rw-p 00000000 00:00 0
7f0000000000-7f0000021000 r-xp 00000000 fd:01 456 /usr/lib/other
7ffd0000-7ffd2000 r--p 00000000 00:00 0 [vvar]
`
	got, err := readOnly(maps, "/usr/local/bin/mesh")
	if err != nil {
		t.Fatal(err)
	}
	want := []Mapping{{0x400000, 0x1369000, "r-xp"}, {0x1369000, 0x25f1000, "r--p"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("mappings %+v; want %+v", got, want)
	}
	if _, err := readOnly("zz-01 r-xp 0 0:0 1 /x\n", "/x"); err == nil {
		t.Error("a malformed line was accepted")
	}
}

func rssFile(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "RssFile:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Skip("no RssFile in /proc/self/status")
	return 0
}

// After Drop the process holds fewer of its binary's pages, and goes on
// running its code and reading its constants as before.
func TestDropGivesBackPagesAndTheProgramGoesOn(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	before := rssFile(t)
	n, err := Drop()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFile(t)
	if n == 0 || after >= before {
		t.Errorf("Drop covered %d bytes; RssFile %d kB before, %d kB after", n, before, after)
	}
	if got := strings.Repeat(strconv.Itoa(42), 2); got != "4242" {
		t.Errorf("after Drop the program computes %q", got)
	}
	t.Logf("RssFile %d kB -> %d kB (mappings of %d bytes)", before, after, n)
}
