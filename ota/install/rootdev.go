package install

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/outpost-gw/outpost/ota/bootcmd"
)

// The root= forms gokrazy boots with (github.com/gokrazy/internal/rootdev,
// which gokrazy's /update/root uses to pick the partition it writes):
// root=/dev/sda2, root=PARTUUID=<MBR disk signature>-02, and under GPT
// root=PARTUUID=<partition 1's UUID>/PARTNROFF=1.
var (
	rootDevRe = regexp.MustCompile(`(?:^|\s)root=/dev/(?:mmcblk[01]p|sda|loop0p|nvme0n1p)([23])(?:\s|$)`)
	rootMBRRe = regexp.MustCompile(`(?:^|\s)root=PARTUUID=[0-9a-fA-F]+-0?([23])(?:\s|$)`)
	rootGPTRe = regexp.MustCompile(`(?:^|\s)root=PARTUUID=[0-9a-fA-F-]+/PARTNROFF=([12])(?:\s|$)`)
)

// ActiveRootPartition is the root partition (2 or 3) the kernel command
// line names, as gokrazy reads it; the other one is where /update/root
// writes. (During a trial boot the running slot is the other one: gokrazy
// then writes over the running root, which the installer refuses.)
func ActiveRootPartition(cmdline string) (int, error) {
	if m := rootGPTRe.FindStringSubmatch(cmdline); m != nil {
		off, _ := strconv.Atoi(m[1])
		return 1 + off, nil
	}
	for _, re := range []*regexp.Regexp{rootMBRRe, rootDevRe} {
		if m := re.FindStringSubmatch(cmdline); m != nil {
			n, _ := strconv.Atoi(m[1])
			return n, nil
		}
	}
	return 0, fmt.Errorf("install: no gokrazy root= (partition 2 or 3) on the kernel command line %q", strings.TrimSpace(cmdline))
}

// InactiveRootDevice names the block device gokrazy's /update/root writes:
// the root partition the command line does not name, on the disk that holds
// /perm (partition 4), from /proc/cmdline and /proc/self/mountinfo.
func InactiveRootDevice(cmdline string, mountinfo io.Reader) (string, error) {
	active, err := ActiveRootPartition(cmdline)
	if err != nil {
		return "", err
	}
	boot, err := bootcmd.BootPartition(mountinfo, "/perm") // the disk's partition 1
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(boot, "1") + strconv.Itoa(5-active), nil
}

func (g *Gokrazy) inactiveRoot() (string, error) {
	if g.InactiveRoot != nil {
		return g.InactiveRoot()
	}
	p := g.Cmdline
	if p == "" {
		p = "/proc/cmdline"
	}
	cmdline, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	return InactiveRootDevice(string(cmdline), f)
}

// ReadBack opens the partition gokrazy just wrote ("root" only: the
// inactive root slot, which during a trial boot is the running one, as
// gokrazy counts them) for the installer's checks. The page cache of the
// device is dropped first (gokrazy synced it), so the bytes come from the
// medium, not from what was cached while writing.
func (g *Gokrazy) ReadBack(dest string) (Slot, error) {
	f, err := g.openSlot("read back", dest)
	if err != nil {
		return nil, err
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		f.Close()
		return nil, fmt.Errorf("install: dropping the cache of %s: %w", f.Name(), err)
	}
	return f, nil
}

// openSlot opens the device of the root slot gokrazy writes, for reading
// (what names the caller in errors; dest must be "root").
func (g *Gokrazy) openSlot(what, dest string) (*os.File, error) {
	if dest != "root" {
		return nil, fmt.Errorf("install: %s %q: only the root slot", what, dest)
	}
	dev, err := g.inactiveRoot()
	if err != nil {
		return nil, err
	}
	return os.Open(dev)
}
