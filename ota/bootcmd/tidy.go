package bootcmd

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
)

// Flag names gokrazy writes into cmdline.txt.
const (
	TryBootInactive = "gokrazy.try_boot_inactive=1"
	SwitchOnBoot    = "gokrazy.switch_on_boot=1"
)

// ReaderWriterAt is a boot partition (device or image file).
type ReaderWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// TidyBytes returns cmdline.txt's content without gokrazy's spent trial
// flags, the padding after the newline restored to the same length. It
// changes nothing while a trial boot is armed (TryBootInactive present) or
// when the content is not "command line, newline, padding".
func TidyBytes(b []byte) ([]byte, bool) {
	if bytes.Contains(b, []byte(TryBootInactive)) {
		return b, false
	}
	line, pad, ok := bytes.Cut(b, []byte{'\n'})
	if !ok || len(bytes.Trim(pad, " ")) != 0 {
		return b, false
	}
	var keep []string
	for _, f := range strings.Fields(string(line)) {
		if f != SwitchOnBoot {
			keep = append(keep, f)
		}
	}
	out := []byte(strings.Join(keep, " ") + "\n")
	if len(keep) == 0 || len(out) > len(b) {
		return b, false
	}
	out = append(out, bytes.Repeat([]byte{' '}, len(b)-len(out))...)
	return out, !bytes.Equal(out, b)
}

// Tidy applies TidyBytes to /cmdline.txt of the FAT file system at byte
// offset part of f, in place (same length, same clusters: the amd64 MBR
// boot loader reads it at a fixed LBA), and reports whether it wrote.
func Tidy(f ReaderWriterAt, part int64) (bool, error) {
	off, n, err := Extents(f, part, "/cmdline.txt")
	if err != nil {
		return false, err
	}
	if n == 0 || n > 4096 {
		return false, fmt.Errorf("cmdline.txt is %d bytes", n)
	}
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		return false, fmt.Errorf("reading cmdline.txt: %w", err)
	}
	out, changed := TidyBytes(b)
	if !changed {
		return false, nil
	}
	if _, err := f.WriteAt(out, off); err != nil {
		return false, fmt.Errorf("writing cmdline.txt: %w", err)
	}
	return true, nil
}

// TidyDevice tidies the boot partition device at path and syncs it.
func TidyDevice(path string) (bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	changed, err := Tidy(f, 0)
	if err != nil || !changed {
		return changed, err
	}
	if err := f.Sync(); err != nil {
		return true, err
	}
	return true, f.Close()
}

// BootPartition names the boot partition (partition 1) of the disk that
// holds the file system mounted at mountpoint (gokrazy: /perm, partition
// 4), from a /proc/self/mountinfo listing.
func BootPartition(mountinfo io.Reader, mountpoint string) (string, error) {
	sc := bufio.NewScanner(mountinfo)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, rest := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || fields[4] != mountpoint || len(rest) < 2 {
			continue
		}
		dev := rest[1]
		disk := strings.TrimRight(dev, "0123456789")
		if !strings.HasPrefix(dev, "/dev/") || disk == dev {
			return "", fmt.Errorf("%s is on %s: not a numbered partition", mountpoint, dev)
		}
		return disk + "1", nil
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s is not mounted", mountpoint)
}
