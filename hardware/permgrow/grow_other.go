//go:build !linux || !(386 || amd64 || arm || arm64 || riscv64 || loong64)

package permgrow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
)

// Grow is only implemented on Linux (with the asm-generic ioctl encoding);
// here it returns an error wrapping errors.ErrUnsupported without touching
// anything.
func Grow(ctx context.Context, log *slog.Logger, mountpoint string) (Result, error) {
	return Result{}, fmt.Errorf("permgrow: growing %s on %s/%s: %w", mountpoint, runtime.GOOS, runtime.GOARCH, errors.ErrUnsupported)
}
