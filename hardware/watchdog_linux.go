package hardware

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// OpenWatchdog opens and thereby arms the watchdog device at path (normally
// "/dev/watchdog"); from then on it must be pinged or the machine reboots.
// The error wraps ErrNoWatchdog when there is no such device and
// ErrWatchdogBusy when another process holds it. Note that with the kernel
// option CONFIG_WATCHDOG_NOWAYOUT even a magic close cannot disarm it.
func OpenWatchdog(path string) (Watchdog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
		return nil, fmt.Errorf("%w: %w", ErrNoWatchdog, err)
	case errors.Is(err, unix.EBUSY):
		return nil, fmt.Errorf("%w: %w", ErrWatchdogBusy, err)
	case err != nil:
		return nil, fmt.Errorf("hardware: %w", err)
	}
	return &linuxWatchdog{f: f}, nil
}

type linuxWatchdog struct {
	mu sync.Mutex
	f  *os.File // nil once closed
}

// Ping issues WDIOC_KEEPALIVE.
func (w *linuxWatchdog) Ping() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return fmt.Errorf("hardware: ping watchdog: %w", os.ErrClosed)
	}
	rc, err := w.f.SyscallConn()
	if err != nil {
		return fmt.Errorf("hardware: ping watchdog: %w", err)
	}
	var ioctlErr error
	if err := rc.Control(func(fd uintptr) { ioctlErr = unix.IoctlWatchdogKeepalive(int(fd)) }); err != nil {
		return fmt.Errorf("hardware: ping watchdog: %w", err)
	}
	if ioctlErr != nil {
		return fmt.Errorf("hardware: ping watchdog %s: %w", w.f.Name(), ioctlErr)
	}
	return nil
}

// Close writes the magic 'V' so the driver disarms on release, then closes
// the device. Closing twice is a no-op.
func (w *linuxWatchdog) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	f := w.f
	w.f = nil
	_, werr := f.Write([]byte("V"))
	cerr := f.Close()
	if werr != nil {
		return fmt.Errorf("hardware: magic close of watchdog %s: %w", f.Name(), werr)
	}
	if cerr != nil {
		return fmt.Errorf("hardware: close watchdog %s: %w", f.Name(), cerr)
	}
	return nil
}
