// Package bootcmd reads and tidies the kernel command line in a gokrazy
// boot partition (FAT16 /cmdline.txt), in place, as gokrazy's own update
// handlers do.
//
// gokrazy's /update/testboot inserts " gokrazy.try_boot_inactive=1" before
// the newline and lets the file overflow its fixed length (the excess is
// cut); the trial boot then rewrites the flag to "gokrazy.switch_on_boot=1",
// which nothing reads and which stays. Each update thus eats 28 of the 63
// bytes of padding: the third trial boot would silently not happen. Tidy
// removes the leftovers after a trial, restoring the padding.
package bootcmd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
)

// ErrNotFound: no such file.
var ErrNotFound = errors.New("not found in the FAT file system")

// Extents finds a file in a FAT12/16 file system at byte offset part of
// r and returns where its (unfragmented) data starts and its length. It
// reads what gokrazy's own FAT writer makes: 8.3 names or long names
// (gokrazy.conf is stored as GOKRAZ~1.CON), root directory after the FATs, files stored in
// consecutive clusters. Names compare case-insensitively: gokrazy writes
// its short names in lower case.
func Extents(r io.ReaderAt, part int64, path string) (offset, length int64, err error) {
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
		var lfn []uint16
		for j := int64(0); j < entries; j++ {
			if _, err := r.ReadAt(buf, dir+j*32); err != nil {
				return 0, 0, err
			}
			if buf[0] == 0 {
				break
			}
			if buf[0] == 0xe5 {
				lfn = nil
				continue
			}
			if buf[11] == 0x0f { // a long-name part, stored last part first
				if buf[0]&0x40 != 0 {
					lfn = nil
				}
				var part []uint16
				for _, o := range lfnOffsets {
					part = append(part, binary.LittleEndian.Uint16(buf[o:]))
				}
				lfn = append(part, lfn...)
				continue
			}
			long := decodeLFN(lfn)
			lfn = nil
			if !strings.EqualFold(string(buf[:11]), name) && !strings.EqualFold(long, comp) {
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
	return 0, 0, fmt.Errorf("%s: %w", path, ErrNotFound)
}

// lfnOffsets are where a long-name directory entry keeps its 13 UTF-16
// characters.
var lfnOffsets = []int{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30}

// decodeLFN turns collected long-name characters into the name (they end
// at a 0x0000, the rest is 0xffff padding).
func decodeLFN(u []uint16) string {
	for i, c := range u {
		if c == 0 || c == 0xffff {
			u = u[:i]
			break
		}
	}
	return string(utf16.Decode(u))
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
