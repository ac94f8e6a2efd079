package install

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
)

// ModuleLister is an optional Target that lists the kernel module trees
// of the running root (gokrazy: the directories in /lib/modules).
//
// Releases update the root only: the kernel stays the one on the boot
// partition (see docs/ota.md), while its modules come with the root. A
// release must therefore ship the same module trees as the release it
// replaces; one built with another kernel pinned would boot with modules
// the kernel cannot load. The installer records the running root's list
// with the offer and fails the trial at once when the new root's differs.
//
// (It compares with the previous root rather than with uname -r: the
// pinned github.com/gokrazy/kernel.amd64 ships a 7.1.2 kernel with its
// modules under lib/modules/7.1.3, so no release would match the kernel.)
type ModuleLister interface {
	KernelModules() ([]string, error)
}

var _ ModuleLister = (*Gokrazy)(nil)

// KernelModules lists /lib/modules.
func (g *Gokrazy) KernelModules() ([]string, error) { return ModuleTrees("/lib/modules") }

// ModuleTrees lists the directories in dir (a root's /lib/modules),
// sorted; none when dir does not exist.
func ModuleTrees(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return []string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("install: reading %s: %w", dir, err)
	}
	trees := []string{}
	for _, e := range entries {
		if e.IsDir() {
			trees = append(trees, e.Name())
		}
	}
	slices.Sort(trees)
	return trees, nil
}

// checkModules compares the trial root's module trees with the ones
// recorded with the offer (nil: none recorded, nothing to compare).
func checkModules(ml ModuleLister, before []string) error {
	if before == nil {
		return nil
	}
	now, err := ml.KernelModules()
	if err != nil {
		return err
	}
	if slices.Equal(now, before) {
		return nil
	}
	return fmt.Errorf("install: this release's kernel modules are %s, the release it replaces had %s (the kernel is not updated over the air; a release must keep the pinned kernel)",
		list(now), list(before))
}

func list(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
