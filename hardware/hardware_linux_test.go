package hardware

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestDisk(t *testing.T) {
	s := NewLinuxSensors(os.DirFS("/"))
	d, err := s.Disk(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if d.TotalBytes == 0 || d.FreeBytes > d.TotalBytes || d.AvailBytes > d.FreeBytes {
		t.Errorf("Disk() = %+v; want 0 < total, avail <= free <= total", d)
	}
	if _, err := s.Disk(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Disk(missing) error = %v, want fs.ErrNotExist", err)
	}
}

// The real device is never opened here: opening /dev/watchdog arms it.
func TestOpenWatchdogMissing(t *testing.T) {
	_, err := OpenWatchdog(filepath.Join(t.TempDir(), "watchdog"))
	if !errors.Is(err, ErrNoWatchdog) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenWatchdog(missing) error = %v, want ErrNoWatchdog and fs.ErrNotExist", err)
	}
}

func TestWatchdogMagicClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := OpenWatchdog(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Ping(); err == nil {
		t.Error("Ping on a regular file succeeded; want the ioctl to fail")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "V" {
		t.Errorf("device received %q, want the magic %q", got, "V")
	}
	if err := w.Ping(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Ping after Close = %v, want os.ErrClosed", err)
	}
}
