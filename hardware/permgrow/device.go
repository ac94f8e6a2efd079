package permgrow

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Result reports what Grow found and did. Sizes are in bytes; the partition
// sizes are those of the GPT, the filesystem sizes are block count × block
// size from the ext4 superblock.
type Result struct {
	Disk      string // whole-disk device node, e.g. /dev/mmcblk0
	Partition string // partition device node, e.g. /dev/mmcblk0p4

	PartitionBefore, PartitionAfter int64
	FSBefore, FSAfter               int64
}

// Changed reports whether Grow grew the partition or the filesystem.
func (r Result) Changed() bool {
	return r.PartitionAfter != r.PartitionBefore || r.FSAfter != r.FSBefore
}

// mountInfo is one line of /proc/<pid>/mountinfo (see proc(5)), with the
// octal escapes (\040 etc.) of the path fields decoded.
type mountInfo struct {
	ID, ParentID   int
	Major, Minor   uint32
	Root           string
	MountPoint     string
	Options        string
	Optional       []string // e.g. "shared:1"; nil if none
	FSType, Source string
	SuperOptions   string
}

// parseMountinfo parses the mountinfo format:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// Empty lines are skipped; any malformed line is an error naming it.
func parseMountinfo(r io.Reader) ([]mountInfo, error) {
	var out []mountInfo
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		m, err := parseMountinfoLine(line)
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n, err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	return out, nil
}

func parseMountinfoLine(line string) (mountInfo, error) {
	f := strings.FieldsFunc(line, func(r rune) bool { return r == ' ' })
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || len(f) < sep+4 {
		return mountInfo{}, fmt.Errorf("want at least 10 fields with a \"-\" separator after the 6th, got %q", line)
	}
	var m mountInfo
	var err error
	if m.ID, err = strconv.Atoi(f[0]); err != nil {
		return mountInfo{}, fmt.Errorf("mount ID: %w", err)
	}
	if m.ParentID, err = strconv.Atoi(f[1]); err != nil {
		return mountInfo{}, fmt.Errorf("parent ID: %w", err)
	}
	maj, min, ok := strings.Cut(f[2], ":")
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return mountInfo{}, fmt.Errorf("bad major:minor %q", f[2])
	}
	m.Major, m.Minor = uint32(ma), uint32(mi)
	m.Root, m.MountPoint, m.Options = unescapeOctal(f[3]), unescapeOctal(f[4]), f[5]
	if sep > 6 {
		m.Optional = f[6:sep]
	}
	m.FSType, m.Source = unescapeOctal(f[sep+1]), unescapeOctal(f[sep+2])
	m.SuperOptions = strings.Join(f[sep+3:], " ")
	return m, nil
}

// unescapeOctal decodes the kernel's \ooo escapes (used for space, tab,
// newline and backslash); other backslashes are kept literally.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && '0' <= s[i+1] && s[i+1] <= '3' && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return '0' <= c && c <= '7' }

// findMount returns the mount visible at mountpoint: the last matching line,
// as later mounts stack on top of earlier ones.
func findMount(mounts []mountInfo, mountpoint string) (mountInfo, bool) {
	for i := len(mounts) - 1; i >= 0; i-- {
		if mounts[i].MountPoint == mountpoint {
			return mounts[i], true
		}
	}
	return mountInfo{}, false
}

// blockPartition describes a partition and its whole disk as found in sysfs.
type blockPartition struct {
	Disk, Part string // kernel names, e.g. "mmcblk0", "mmcblk0p4"
	Number     int    // partition number, e.g. 4
	DiskDev    string // the disk's "major:minor"
}

// resolvePartition finds the partition with device number major:minor below
// sysfs (normally "/sys"): /sys/dev/block/M:m links to the same directory as
// /sys/class/block/<part>, whose "partition" file holds the number and whose
// parent directory is the whole disk. This works for any naming scheme (sda4,
// vda4, mmcblk0p4, nvme0n1p4) as it never parses names.
func resolvePartition(sysfs string, major, minor uint32) (blockPartition, error) {
	dir, err := filepath.EvalSymlinks(filepath.Join(sysfs, "dev", "block", fmt.Sprintf("%d:%d", major, minor)))
	if err != nil {
		return blockPartition{}, fmt.Errorf("block device %d:%d: %w", major, minor, err)
	}
	bp := blockPartition{Part: filepath.Base(dir), Disk: filepath.Base(filepath.Dir(dir))}
	num, err := os.ReadFile(filepath.Join(dir, "partition"))
	if errors.Is(err, os.ErrNotExist) {
		return blockPartition{}, fmt.Errorf("block device %s (%d:%d) is not a partition", bp.Part, major, minor)
	}
	if err != nil {
		return blockPartition{}, err
	}
	if bp.Number, err = strconv.Atoi(strings.TrimSpace(string(num))); err != nil || bp.Number < 1 {
		return blockPartition{}, fmt.Errorf("%s: bad partition number %q", bp.Part, num)
	}
	dev, err := os.ReadFile(filepath.Join(filepath.Dir(dir), "dev"))
	if err != nil {
		return blockPartition{}, fmt.Errorf("disk of %s: %w", bp.Part, err)
	}
	bp.DiskDev = strings.TrimSpace(string(dev))
	return bp, nil
}

// ext4Super holds what Grow needs from an ext4 superblock.
type ext4Super struct {
	BlockSize uint64
	Blocks    uint64
	Is64Bit   bool // block numbers may exceed 32 bits
}

// parseExt4Super decodes the superblock, i.e. the 1024 bytes at offset 1024
// of the filesystem.
func parseExt4Super(sb []byte) (ext4Super, error) {
	le := binary.LittleEndian
	if len(sb) < 1024 || le.Uint16(sb[0x38:]) != 0xEF53 {
		return ext4Super{}, errors.New("no ext2/3/4 superblock magic")
	}
	logBS := le.Uint32(sb[0x18:])
	if logBS > 6 {
		return ext4Super{}, fmt.Errorf("bad block size exponent %d", logBS)
	}
	s := ext4Super{
		BlockSize: 1024 << logBS,
		Blocks:    uint64(le.Uint32(sb[0x04:])),
		Is64Bit:   le.Uint32(sb[0x60:])&0x80 != 0, // INCOMPAT_64BIT
	}
	if s.Is64Bit {
		s.Blocks |= uint64(le.Uint32(sb[0x150:])) << 32
	}
	return s, nil
}
