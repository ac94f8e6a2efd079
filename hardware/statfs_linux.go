package hardware

import (
	"fmt"

	"golang.org/x/sys/unix"
)

func statfs(path string) (DiskUsage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return DiskUsage{}, fmt.Errorf("hardware: statfs %s: %w", path, err)
	}
	// Block counts are in fragment-size units (as statvfs(3) reports them);
	// Frsize is only zero on ancient kernels.
	bs := uint64(st.Frsize)
	if bs == 0 {
		bs = uint64(st.Bsize)
	}
	return DiskUsage{
		TotalBytes: st.Blocks * bs,
		FreeBytes:  st.Bfree * bs,
		AvailBytes: st.Bavail * bs,
	}, nil
}
