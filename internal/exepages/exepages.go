// Package exepages lets a long-running process give back the pages of its
// own executable that only its start-up touched. Every package linked into
// the binary runs its initialisation at start, and the kernel maps the
// binary around each page touched (fault-around, 64 KiB at a time), so a
// process that has started holds pages of code and read-only data it will
// not use again. They are clean copies of the file, shared through the
// page cache with every process running the same binary: dropping them
// from this process's page tables frees nothing another process uses, and
// a page used again is mapped back from the page cache on its next touch
// (a minor fault, without reading the disk).
package exepages

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Mapping is one read-only mapping of the executable.
type Mapping struct {
	Start, End uintptr
	Perms      string
}

// readOnly finds the executable's mappings that are never written: its
// code (r-xp) and read-only data (r--p). Writable ones (data, bss) hold
// the process's own state and are left alone.
func readOnly(maps, exe string) ([]Mapping, error) {
	var out []Mapping
	sc := bufio.NewScanner(strings.NewReader(maps))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || strings.Join(f[5:], " ") != exe {
			continue
		}
		if f[1] != "r-xp" && f[1] != "r--p" {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			return nil, fmt.Errorf("maps line %q", sc.Text())
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			return nil, fmt.Errorf("maps line %q", sc.Text())
		}
		out = append(out, Mapping{Start: uintptr(start), End: uintptr(end), Perms: f[1]})
	}
	return out, sc.Err()
}

// exeMappings are this process's read-only mappings of its executable.
func exeMappings() ([]Mapping, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return nil, err
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return nil, err
	}
	return readOnly(string(maps), exe)
}
