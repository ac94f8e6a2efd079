//go:build !linux

package hardware

import "fmt"

// OpenWatchdog always fails with ErrNoWatchdog: watchdog devices are only
// supported on Linux.
func OpenWatchdog(path string) (Watchdog, error) {
	return nil, fmt.Errorf("%w: %s: watchdogs are only supported on Linux", ErrNoWatchdog, path)
}
