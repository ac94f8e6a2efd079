package image

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
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
// under UEFI) is left alone: testboot appends the flag to each of its lines.
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
	off, n, err := fatExtents(f, boot.Offset(), "/cmdline.txt")
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
	off, n, err := fatExtents(f, part, "/cmdline.txt")
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

// fatExtents finds a file in a FAT12/16 file system at byte offset part of
// r and returns where its (unfragmented) data starts and its length. It
// reads what gokrazy's own FAT writer makes, the way gokrazy's on-device
// reader does: 8.3 names, root directory after the FATs, files stored in
// consecutive clusters. Names compare case-insensitively: gokrazy writes
// its short names in lower case.
func fatExtents(r io.ReaderAt, part int64, path string) (offset, length int64, err error) {
	bpb := make([]byte, 512)
	if _, err := r.ReadAt(bpb, part); err != nil {
		return 0, 0, fmt.Errorf("reading FAT boot sector: %w", err)
	}
	sectorSize := int64(binary.LittleEndian.Uint16(bpb[11:]))
	perCluster := int64(bpb[13])
	reserved := int64(binary.LittleEndian.Uint16(bpb[14:]))
	fats := int64(bpb[16])
	rootEntries := int64(binary.LittleEndian.Uint16(bpb[17:]))
	fatSectors := int64(binary.LittleEndian.Uint16(bpb[22:]))
	if sectorSize < 512 || sectorSize > 4096 || perCluster == 0 || fats == 0 || fats > 2 || fatSectors == 0 || rootEntries == 0 {
		return 0, 0, fmt.Errorf("not a FAT16 file system (sector %d, %d per cluster, %d FATs of %d sectors, %d root entries)",
			sectorSize, perCluster, fats, fatSectors, rootEntries)
	}
	dir := part + (reserved+fats*fatSectors)*sectorSize
	data := dir + (rootEntries*32+sectorSize-1)/sectorSize*sectorSize
	entries := rootEntries
	comps := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i, comp := range comps {
		name := shortName(comp)
		found := false
		buf := make([]byte, 32)
		for j := int64(0); j < entries; j++ {
			if _, err := r.ReadAt(buf, dir+j*32); err != nil {
				return 0, 0, err
			}
			if buf[0] == 0 {
				break
			}
			if buf[0] == 0xe5 || buf[11] == 0x0f || !strings.EqualFold(string(buf[:11]), name) {
				continue
			}
			cluster := int64(binary.LittleEndian.Uint16(buf[26:]))
			if cluster < 2 {
				return 0, 0, fmt.Errorf("%s: bad first cluster %d", path, cluster)
			}
			at := data + (cluster-2)*perCluster*sectorSize
			isDir := buf[11]&0x10 != 0
			if i == len(comps)-1 {
				if isDir {
					return 0, 0, fmt.Errorf("%s is a directory", path)
				}
				return at, int64(binary.LittleEndian.Uint32(buf[28:])), nil
			}
			if !isDir {
				return 0, 0, fmt.Errorf("%s: %s is not a directory", path, comp)
			}
			dir, entries, found = at, perCluster*sectorSize/32, true
			break
		}
		if !found {
			break
		}
	}
	return 0, 0, fmt.Errorf("%s not found in the FAT file system", path)
}

// shortName is comp as an 11-byte 8.3 directory entry name.
func shortName(comp string) string {
	base, ext := comp, ""
	if i := strings.LastIndexByte(comp, '.'); i > 0 {
		base, ext = comp[:i], comp[i+1:]
	}
	if len(base) > 8 {
		base = base[:8]
	}
	if len(ext) > 3 {
		ext = ext[:3]
	}
	return strings.ToUpper(fmt.Sprintf("%-8s%-3s", base, ext))
}
