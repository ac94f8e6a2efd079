package image

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/outpost-gw/outpost/ota/bootcmd"
)

// FixCmdline puts a newline into the image's /cmdline.txt, in place.
//
// gok writes cmdline.txt as the kernel command line followed by 64 spaces of
// padding and no newline. gokrazy's /update/testboot adds
// "gokrazy.try_boot_inactive=1" by replacing "\n" in that file, so without a
// newline a trial boot silently does nothing (and /update/switch's padding
// goes before a newline too). We turn the first padding space into the
// newline: the file keeps its length and its clusters, which matters because
// the amd64 MBR boot loader reads cmdline.txt at an LBA recorded at build
// time. Each testboot then eats 28 of the remaining 63 spaces.
//
// The amd64 image's systemd-boot entry (/loader/entries/gokrazy.conf, used
// under UEFI) gets its linux line moved last (bootcmd.TidyEntry): as gok
// writes it, testboot's flag breaks the kernel path and the box boots
// nothing under UEFI.
func FixCmdline(img string) error {
	l, err := ReadLayout(img)
	if err != nil {
		return err
	}
	boot, ok := l.Partition(1)
	if !ok {
		return fmt.Errorf("%s: no boot partition", img)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := fixCmdlineFAT(f, boot.Offset()); err != nil {
		return fmt.Errorf("%s: boot partition: %w", img, err)
	}
	if _, err := bootcmd.TidyFile(f, boot.Offset(), bootcmd.EntryPath, bootcmd.TidyEntry); err != nil {
		return fmt.Errorf("%s: boot partition: %w", img, err)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// ReadCmdline returns the bytes of /cmdline.txt in the image's boot
// partition.
func ReadCmdline(img string) ([]byte, error) {
	l, err := ReadLayout(img)
	if err != nil {
		return nil, err
	}
	boot, ok := l.Partition(1)
	if !ok {
		return nil, fmt.Errorf("%s: no boot partition", img)
	}
	f, err := os.Open(img)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	off, n, err := bootcmd.Extents(f, boot.Offset(), "/cmdline.txt")
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	_, err = f.ReadAt(b, off)
	return b, err
}

func fixCmdlineFAT(f interface {
	io.ReaderAt
	io.WriterAt
}, part int64) error {
	off, n, err := bootcmd.Extents(f, part, "/cmdline.txt")
	if err != nil {
		return err
	}
	if n == 0 || n > 4096 {
		return fmt.Errorf("cmdline.txt is %d bytes", n)
	}
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		return fmt.Errorf("reading cmdline.txt: %w", err)
	}
	if bytes.IndexByte(b, '\n') >= 0 {
		return nil // already has one (a fixed gok, or fixed before)
	}
	end := len(bytes.TrimRight(b, " "))
	if end == len(b) || end == 0 {
		return fmt.Errorf("cmdline.txt %q has no padding to put a newline in", b)
	}
	if _, err := f.WriteAt([]byte{'\n'}, off+int64(end)); err != nil {
		return fmt.Errorf("writing cmdline.txt: %w", err)
	}
	return nil
}
