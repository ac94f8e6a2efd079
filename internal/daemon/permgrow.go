package daemon

import (
	"context"
	"log/slog"

	"github.com/outpost-gw/outpost/hardware/permgrow"
)

// growPermDevice grows the /perm partition and its ext4 to fill the disk the
// image was flashed on. It is idempotent and runs at every start, so a grow
// cut short by a power failure is finished on the next boot.
func growPermDevice(ctx context.Context, log *slog.Logger, mountpoint string) error {
	res, err := permgrow.Grow(ctx, log, mountpoint)
	if err != nil {
		return err
	}
	if res.Changed() {
		log.Info("grew /perm to fill the disk", "disk", res.Disk,
			"partition_before", res.PartitionBefore, "partition_after", res.PartitionAfter,
			"fs_before", res.FSBefore, "fs_after", res.FSAfter)
	} else {
		log.Debug("/perm already fills the disk", "disk", res.Disk, "fs_bytes", res.FSAfter)
	}
	return nil
}
