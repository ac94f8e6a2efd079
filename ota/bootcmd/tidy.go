package bootcmd

import (
	"bufio"
	"bytes"
	"errors"
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

// Tidy applies TidyBytes to /cmdline.txt and TidyEntry to the systemd-boot
// entry of the FAT file system at byte offset part of f, in place (same
// length, same clusters: the amd64 MBR boot loader reads cmdline.txt at a
// fixed LBA), and reports whether it wrote.
func Tidy(f ReaderWriterAt, part int64) (bool, error) {
	c1, err := TidyFile(f, part, "/cmdline.txt", TidyBytes)
	if err != nil {
		return false, err
	}
	c2, err := TidyFile(f, part, EntryPath, TidyEntry)
	return c1 || c2, err
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

// EntryPath is systemd-boot's entry in the amd64 image (used under UEFI).
const EntryPath = "/loader/entries/gokrazy.conf"

// TidyEntry returns the systemd-boot entry with gokrazy's spent trial flags
// removed and its "linux" line moved last, without a newline, the padding
// after it restored to the same length.
//
// gokrazy's testboot appends its flag before every newline of this file
// too. gok writes "title", "linux", "options" in that order, so the flag
// lands on the linux line — systemd-boot then looks for a kernel named
// "/vmlinuz gokrazy.try_boot_inactive=1", drops the entry, and the box
// boots nothing (seen under OVMF) — and not on the options line. With the
// linux line last and no newline after it, the flag goes to "title"
// (harmless) and "options" (the kernel's command line), as intended.
func TidyEntry(b []byte) ([]byte, bool) {
	if bytes.Contains(b, []byte(TryBootInactive)) {
		return b, false
	}
	var lines []string
	linux := ""
	for _, l := range strings.Split(string(b), "\n") {
		var keep []string
		for _, f := range strings.Fields(l) {
			if f != SwitchOnBoot {
				keep = append(keep, f)
			}
		}
		switch {
		case len(keep) == 0:
		case keep[0] == "linux":
			if linux != "" || len(keep) != 2 {
				return b, false
			}
			linux = strings.Join(keep, " ")
		default:
			lines = append(lines, strings.Join(keep, " "))
		}
	}
	if linux == "" {
		return b, false
	}
	out := []byte(strings.Join(append(lines, linux), "\n"))
	if len(out) > len(b) {
		return b, false
	}
	out = append(out, bytes.Repeat([]byte{' '}, len(b)-len(out))...)
	return out, !bytes.Equal(out, b)
}

// TidyFile applies tidy to the file at path in the FAT file system at
// byte offset part of f, in place; a missing file is no error (the Pi's
// boot partition has no systemd-boot entry).
func TidyFile(f ReaderWriterAt, part int64, path string, tidy func([]byte) ([]byte, bool)) (bool, error) {
	off, n, err := Extents(f, part, path)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	if n == 0 || n > 4096 {
		return false, fmt.Errorf("%s is %d bytes", path, n)
	}
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		return false, fmt.Errorf("reading %s: %w", path, err)
	}
	out, changed := tidy(b)
	if !changed {
		return false, nil
	}
	if _, err := f.WriteAt(out, off); err != nil {
		return false, fmt.Errorf("writing %s: %w", path, err)
	}
	return true, nil
}
