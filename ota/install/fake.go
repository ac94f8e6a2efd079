package install

import (
	"context"
	"io"
	"os"
	"sync"
)

// Fake is a Target for tests and benchmarks: "root" is written to Path; it
// records every call and simulates the trial-boot flag.
type Fake struct {
	Path string

	mu       sync.Mutex
	Calls    []string
	Trial    bool // the running root is a trial boot
	testboot bool // Testboot armed for the next reboot
	switched bool // Switch called during this boot
	// FailBoot makes the next trial boot fall back (corrupt new root).
	FailBoot bool
}

func (f *Fake) record(c string) { f.mu.Lock(); f.Calls = append(f.Calls, c); f.mu.Unlock() }

// StreamTo writes r to f.Path (synced).
func (f *Fake) StreamTo(ctx context.Context, dest string, r io.Reader) error {
	f.record("stream:" + dest)
	out, err := os.Create(f.Path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// ReadBack opens f.Path.
func (f *Fake) ReadBack(dest string) (Slot, error) { return os.Open(f.Path) }

func (f *Fake) Testboot(ctx context.Context) error {
	f.record("testboot")
	f.mu.Lock()
	f.testboot = true
	f.mu.Unlock()
	return nil
}

// Switch makes the running (trial) slot permanent from the next boot on.
// As on gokrazy, the box stays trial-booted (the kernel command line says
// so, and the running slot counts as the inactive one) until it reboots.
func (f *Fake) Switch(ctx context.Context) error {
	f.record("switch")
	f.mu.Lock()
	f.switched = true
	f.mu.Unlock()
	return nil
}

// Reboot only records; call Boot to simulate the machine coming back.
func (f *Fake) Reboot(ctx context.Context) error { f.record("reboot"); return nil }

// Boot simulates the reboot: an armed testboot runs the new slot once.
func (f *Fake) Boot() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Trial = f.testboot && !f.FailBoot
	f.testboot, f.switched = false, false
}

func (f *Fake) TrialBooted() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.Trial, nil
}
