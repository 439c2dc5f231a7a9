// Package memlimit gives the Go runtime a soft memory limit just under the
// container's, read from its cgroup, so that a process near its limit
// collects garbage harder instead of being killed: the collector otherwise
// lets the heap grow to twice what is live, wherever the limit stands.
//
// It does nothing when GOMEMLIMIT is set (the user chose) or when the
// cgroup sets no limit.
package memlimit

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
)

// Share is the part of the container's limit given to the runtime; the rest
// is for what the runtime does not count (binary pages, thread stacks).
const Share = 0.9

// noLimit is above any real limit: cgroup v1 says "none" with a huge number.
const noLimit = 1 << 62

// Set applies Share of the memory limit of the process's cgroup, with the
// cgroup file systems mounted under root (normally "/sys/fs/cgroup"), and
// returns the limit it set, 0 if none.
func Set(root string) (int64, error) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0, nil
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0, nil // not Linux, or no cgroups: nothing to follow
	}
	limit, err := cgroupLimit(root, string(self))
	if err != nil || limit == 0 {
		return 0, err
	}
	soft := int64(float64(limit) * Share)
	debug.SetMemoryLimit(soft)
	return soft, nil
}

// cgroupLimit reads the memory limit of the cgroup that selfCgroup (the
// text of /proc/self/cgroup) names: cgroup v1's memory controller, else
// cgroup v2's unified hierarchy. 0: no limit. In a container with its own
// cgroup namespace the path is "/", the container's own.
func cgroupLimit(root, selfCgroup string) (int64, error) {
	var files []string
	for _, line := range strings.Split(strings.TrimSpace(selfCgroup), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			files = append(files, filepath.Join(root, parts[2], "memory.max"))
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			files = append([]string{filepath.Join(root, "memory", parts[2], "memory.limit_in_bytes")}, files...)
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("reading the container's memory limit: %w", err)
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("the container's memory limit in %s: %q is not a number", f, s)
		}
		if n <= 0 || n >= noLimit {
			return 0, nil
		}
		return n, nil
	}
	return 0, nil
}
