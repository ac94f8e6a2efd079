package install

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// TrialChecker is an optional Target that checks the trial-booted release
// against the box before its health gate runs.
type TrialChecker interface {
	CheckTrial() error
}

var _ TrialChecker = (*Gokrazy)(nil)

// CheckTrial refuses a release whose kernel modules are not for the
// running kernel. Releases update the root only: the kernel stays the one
// on the boot partition (see docs/ota.md), while the modules come with the
// root. A release built with another kernel would run with none of its
// modules loadable; it fails its gate at once, with the reason.
func (g *Gokrazy) CheckTrial() error {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return fmt.Errorf("uname: %w", err)
	}
	return CheckKernelModules("/lib/modules", unix.ByteSliceToString(u.Release[:]))
}

// CheckKernelModules reports an error when dir (a root's /lib/modules)
// holds modules but none for kernel release. A root without modules passes.
func CheckKernelModules(dir, release string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("install: reading %s: %w", dir, err)
	}
	var have []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if e.Name() == release {
			return nil
		}
		have = append(have, e.Name())
	}
	if len(have) == 0 {
		return nil
	}
	return fmt.Errorf("install: this release's kernel modules are for %s, the box runs kernel %s (the kernel is not updated over the air; a release must keep the pinned kernel)",
		strings.Join(have, ", "), release)
}
