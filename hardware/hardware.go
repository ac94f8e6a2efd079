// Package hardware tells the Outpost daemon what it is running on and how
// that machine is doing: board detection (Raspberry Pi, bare x86, VM), the
// hardware watchdog and a health-gated Petter for it, and sensor readings
// (temperature, memory, disk, load, uptime) for telemetry.
//
// Everything that reads kernel files takes an fs.FS rooted at "/" (on the
// device: os.DirFS("/")) so that it can be tested against fstest.MapFS
// fixtures, and everything that waits takes a Clock.
package hardware

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"
	"unicode"
)

var (
	// ErrNotSupported is wrapped by readings this machine cannot provide,
	// such as the temperature of a VM without thermal zones.
	ErrNotSupported = errors.New("hardware: not supported on this machine")

	// ErrNoWatchdog is wrapped by OpenWatchdog when the machine has no
	// usable watchdog device. Callers should treat it as "run without one".
	ErrNoWatchdog = errors.New("hardware: no watchdog device")

	// ErrWatchdogBusy is wrapped by OpenWatchdog when another process
	// already holds the device open (the kernel allows a single opener).
	// On gokrazy this is normally the init process, which pets
	// /dev/watchdog itself.
	ErrWatchdogBusy = errors.New("hardware: watchdog device held by another process")
)

// Clock abstracts time so that the Petter can be driven deterministically
// in tests (see hardwaretest.FakeClock).
type Clock interface {
	Now() time.Time
	// NewTicker behaves like time.NewTicker: it panics if d <= 0 and drops
	// ticks for slow receivers.
	NewTicker(d time.Duration) Ticker
}

// Ticker is the part of *time.Ticker that Clock users need.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// SystemClock is the Clock backed by the time package.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// NewTicker returns a Ticker wrapping time.NewTicker(d).
func (SystemClock) NewTicker(d time.Duration) Ticker { return systemTicker{time.NewTicker(d)} }

type systemTicker struct{ t *time.Ticker }

func (s systemTicker) C() <-chan time.Time { return s.t.C }
func (s systemTicker) Stop()               { s.t.Stop() }

// maxFileSize bounds what we read from any single kernel file; procfs and
// sysfs files we parse are a few KiB at most.
const maxFileSize = 64 << 10

// readFile reads a small file from root, refusing absurdly large ones.
func readFile(root fs.FS, name string) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("read %s: larger than %d bytes", name, maxFileSize)
	}
	return b, nil
}

// cleanString turns a firmware-provided identification string into
// something safe to log and display: no NULs, control characters or
// invalid UTF-8, surrounding space trimmed, and at most 128 runes.
func cleanString(b []byte) string {
	s := strings.ToValidUTF8(string(b), "")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 128 {
		s = string(r[:128])
	}
	return s
}
