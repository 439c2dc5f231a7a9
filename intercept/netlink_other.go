//go:build !linux

package intercept

import (
	"fmt"
	"runtime"
)

// Apply needs Linux: nftables rules live in a Linux network namespace.
func Apply(c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	return fmt.Errorf("mesh init programs nftables in a pod's network namespace and runs only on Linux, not %s (--dry-run prints the rules anywhere)", runtime.GOOS)
}

// Cleanup needs Linux, as Apply does.
func Cleanup() error {
	return fmt.Errorf("mesh init --cleanup runs only on Linux, not %s", runtime.GOOS)
}
