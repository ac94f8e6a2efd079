package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/image"
	"github.com/outpost-gw/outpost/ota/bootcmd"
)

// gokrazyTestboot makes the edit gokrazy's /update/testboot makes
// (update.go enableTestboot: the flag before every newline of cmdline.txt
// and of the systemd-boot entry, the file's length unchanged, the excess
// cut) to the boot partition of img.
func gokrazyTestboot(t *testing.T, img string) {
	t.Helper()
	l, err := image.ReadLayout(img)
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := l.Partition(1)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range []string{"/cmdline.txt", bootcmd.EntryPath} {
		if _, err := bootcmd.TidyFile(f, boot.Offset(), p, func(b []byte) ([]byte, bool) {
			return []byte(strings.ReplaceAll(string(b), "\n", " "+bootcmd.TryBootInactive+"\n")[:len(b)]), true
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// bootFile reads a file of img's boot partition.
func bootFile(t *testing.T, img, path string) string {
	t.Helper()
	l, _ := image.ReadLayout(img)
	boot, _ := l.Partition(1)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	off, n, err := bootcmd.Extents(f, boot.Offset(), path)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, n)
	f.ReadAt(b, off)
	return string(b)
}

// TestUEFITestboot: gokrazy's trial boot under UEFI (OVMF, systemd-boot).
// The image holds v1 in root A and v2 in root B; after testboot's edit the
// box runs v2 once (the flag reaches the kernel through the systemd-boot
// entry, whose linux line the image build moved last: as gok writes the
// entry, the edit breaks the kernel path and nothing boots), and after a
// power cut it is back on v1. Tidying afterwards restores the built files.
func TestUEFITestboot(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM twice (about 2 minutes)")
	}
	requireTools(t, "qemu-system-x86_64", "mkfs.ext4")
	start := time.Now()
	dir1, _ := buildRelease(t, "amd64", "v1")
	dir2, r2 := buildRelease(t, "amd64", "v2")
	img := filepath.Join(dir1, "disk.img")
	l, err := image.ReadLayout(img)
	if err != nil {
		t.Fatal(err)
	}
	rootB, _ := l.Partition(3)
	root2, err := os.ReadFile(filepath.Join(dir2, r2.Artifacts[0].File))
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(img, os.O_RDWR, 0)
	f.WriteAt(root2, rootB.Offset())
	f.Close()
	builtCmdline, builtEntry := bootFile(t, img, "/cmdline.txt"), bootFile(t, img, bootcmd.EntryPath)
	if !strings.HasSuffix(strings.TrimRight(builtEntry, " "), "\nlinux /vmlinuz") {
		t.Fatalf("the image's systemd-boot entry does not end with its linux line: %q", builtEntry)
	}
	gokrazyTestboot(t, img)

	v := startVMWith(t, img, vmOptions{uefi: true})
	h := v.waitVersion(t, "v2", 180*time.Second)
	serial, _ := os.ReadFile(v.serial)
	if !bytes.Contains(serial, []byte(bootcmd.TryBootInactive)) {
		t.Errorf("the kernel command line lacks the trial flag:\n%s", v.serialTail())
	}
	t.Logf("UEFI trial boot runs v2 (root B): %+v, %.0fs after the start", h, time.Since(start).Seconds())
	v.kill()
	if e := bootFile(t, img, bootcmd.EntryPath); !strings.Contains(e, bootcmd.SwitchOnBoot) || strings.Contains(e, bootcmd.TryBootInactive) {
		t.Errorf("after the trial the entry is %q: want gokrazy's one-shot rewrite", e)
	}

	v = startVMWith(t, img, vmOptions{uefi: true})
	v.waitVersion(t, "v1", 180*time.Second)
	v.kill()
	t.Logf("after a power cut: back on v1, %.0fs after the start", time.Since(start).Seconds())

	fl, _ := image.ReadLayout(img)
	boot, _ := fl.Partition(1)
	fh, _ := os.OpenFile(img, os.O_RDWR, 0)
	defer fh.Close()
	if _, err := bootcmd.Tidy(fh, boot.Offset()); err != nil {
		t.Fatal(err)
	}
	if c, e := bootFile(t, img, "/cmdline.txt"), bootFile(t, img, bootcmd.EntryPath); c != builtCmdline || e != builtEntry {
		t.Errorf("tidied boot files differ from the built ones:\n%q\n%q\nwant\n%q\n%q", c, e, builtCmdline, builtEntry)
	}
}
