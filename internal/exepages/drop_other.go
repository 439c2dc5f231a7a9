//go:build !linux

package exepages

// Drop does nothing where there is no /proc and madvise to do it with.
func Drop() (int, error) { return 0, nil }
