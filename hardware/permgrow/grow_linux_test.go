//go:build linux && (386 || amd64 || arm || arm64 || riscv64 || loong64)

package permgrow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gokrazy/tools/packer"
	"golang.org/x/sys/unix"
)

// hasCap reports whether the test process has capability c in effect.
func hasCap(t *testing.T, c int) bool {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			return err == nil && caps&(1<<c) != 0
		}
	}
	return false
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestGrowLoop runs Grow for real: a gokrazy image with an ext4 /perm on an
// 8 GiB loop device, mounted. It needs root, losetup, mkfs.ext4 and e2fsck,
// and is opt-in because it attaches a loop device and mounts a filesystem.
func TestGrowLoop(t *testing.T) {
	if os.Getenv("PERMGROW_LOOP_TEST") == "" {
		t.Skip("set PERMGROW_LOOP_TEST=1 to run against a loop device (root only)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	const diskSize = 8 * gib
	oldP4 := int64(packer.PermSizeInKB(firstLBA, imageSize)) * 1024
	newP4 := (diskSize/512 - sectorsGPT - 2 - p4Start + 1) * 512
	for _, tc := range []struct {
		name        string
		tableGrown  bool // as after a power cut between table and fs resize
		blockSizeKB int
	}{
		{name: "fresh-1k", blockSizeKB: 1},
		{name: "fresh-4k", blockSizeKB: 4},
		{name: "table-already-grown", tableGrown: true, blockSizeKB: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := makeDisk(t, imageSize, nil)
			run(t, "mkfs.ext4", "-q", "-F", "-b", fmt.Sprint(tc.blockSizeKB*1024),
				"-E", fmt.Sprintf("offset=%d", p4Start*512), f.Name(), fmt.Sprintf("%dk", oldP4/1024))
			if err := f.Truncate(diskSize); err != nil {
				t.Fatal(err)
			}
			if tc.tableGrown {
				p, err := PlanGrow(f, diskSize)
				if err != nil {
					t.Fatal(err)
				}
				if err := p.Apply(f); err != nil {
					t.Fatal(err)
				}
			}
			loop := run(t, "losetup", "--find", "--show", "--partscan", f.Name())
			t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
			if _, err := os.Stat(loop + "p4"); err != nil {
				// Kernels without CONFIG_EFI_PARTITION do not scan the
				// table; partx parses it and adds the partitions with BLKPG.
				run(t, "partx", "--add", loop)
			}
			mnt := filepath.Join(t.TempDir(), "perm")
			if err := os.Mkdir(mnt, 0o755); err != nil {
				t.Fatal(err)
			}
			run(t, "mount", "-t", "ext4", loop+"p4", mnt)
			mounted := true
			t.Cleanup(func() {
				if mounted {
					exec.Command("umount", mnt).Run()
				}
			})

			log := slog.New(slog.NewTextHandler(t.Output(), nil))
			res, err := Grow(context.Background(), log, mnt)
			if errors.Is(err, unix.EPERM) && !hasCap(t, unix.CAP_SYS_RESOURCE) {
				// Sandboxes may drop CAP_SYS_RESOURCE, which ext4 requires
				// for online resizing; check what happened before that.
				if out := run(t, "sfdisk", "--verify", loop); !strings.Contains(out, "No errors detected") {
					t.Errorf("sfdisk --verify %s:\n%s", loop, out)
				}
				if size := run(t, "cat", "/sys/class/block/"+filepath.Base(loop)+"p4/size"); size != fmt.Sprint(newP4/512) {
					t.Errorf("kernel partition size %s sectors, want %d", size, newP4/512)
				}
				t.Skipf("no CAP_SYS_RESOURCE, filesystem not resized: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", res)
			wantBefore := oldP4
			if tc.tableGrown {
				wantBefore = newP4
			}
			if res.Disk != loop || res.Partition != loop+"p4" || res.PartitionBefore != wantBefore || res.PartitionAfter != newP4 ||
				res.FSBefore != oldP4/int64(tc.blockSizeKB*1024)*int64(tc.blockSizeKB*1024) ||
				res.FSAfter > newP4 || res.FSAfter < newP4-MinGrow {
				t.Errorf("Grow = %+v, want %s grown from %d to %d bytes", res, loop+"p4", wantBefore, newP4)
			}
			if res, err := Grow(context.Background(), log, mnt); err != nil || res.Changed() {
				t.Errorf("second Grow = %+v, %v; want no change", res, err)
			}
			if out := run(t, "sfdisk", "--verify", loop); !strings.Contains(out, "No errors detected") {
				t.Errorf("sfdisk --verify %s:\n%s", loop, out)
			}
			run(t, "umount", mnt)
			mounted = false
			run(t, "e2fsck", "-f", "-n", loop+"p4")
		})
	}
}

func TestGrowRejects(t *testing.T) {
	if _, err := Grow(context.Background(), slog.New(slog.DiscardHandler), "/nonexistent-mountpoint"); err == nil ||
		!strings.Contains(err.Error(), "nothing is mounted") {
		t.Errorf("Grow(unmounted) = %v", err)
	}
	if _, err := Grow(context.Background(), slog.New(slog.DiscardHandler), "/proc"); err == nil ||
		!strings.Contains(err.Error(), "not ext4") {
		t.Errorf("Grow(/proc) = %v", err)
	}
}
