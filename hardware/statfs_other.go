//go:build !linux

package hardware

import "fmt"

func statfs(path string) (DiskUsage, error) {
	return DiskUsage{}, fmt.Errorf("%w: statfs %s", ErrNotSupported, path)
}
