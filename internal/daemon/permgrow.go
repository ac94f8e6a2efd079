package daemon

import (
	"context"
	"log/slog"
)

// growPermDevice grows the /perm partition and file system to fill the disk.
// Replaced by the permgrow wiring below once available.
func growPermDevice(ctx context.Context, log *slog.Logger, mountpoint string) error {
	return nil
}
