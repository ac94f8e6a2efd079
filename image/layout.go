package image

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"unicode/utf16"
)

const sector = 512

// Partition is one GPT entry of an image.
type Partition struct {
	Number             int
	Name               string
	FirstLBA, LastLBA  uint64
	TypeGUID, PartGUID [16]byte
}

// Offset is the partition's start in bytes.
func (p Partition) Offset() int64 { return int64(p.FirstLBA) * sector }

// Size is the partition's length in bytes.
func (p Partition) Size() int64 { return int64(p.LastLBA-p.FirstLBA+1) * sector }

// Layout is an image's partition table.
type Layout struct {
	Size       int64
	Partitions []Partition
}

// ReadLayout reads the primary GPT of a disk image.
func ReadLayout(path string) (Layout, error) {
	f, err := os.Open(path)
	if err != nil {
		return Layout{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Layout{}, err
	}
	l, err := parseGPT(f)
	if err != nil {
		return Layout{}, fmt.Errorf("%s: %w", path, err)
	}
	l.Size = st.Size()
	return l, nil
}

func parseGPT(r io.ReaderAt) (Layout, error) {
	hdr := make([]byte, sector)
	if _, err := r.ReadAt(hdr, sector); err != nil {
		return Layout{}, fmt.Errorf("reading GPT header: %w", err)
	}
	if string(hdr[:8]) != "EFI PART" {
		return Layout{}, fmt.Errorf("no GPT signature at LBA 1")
	}
	entriesLBA := binary.LittleEndian.Uint64(hdr[72:])
	n := binary.LittleEndian.Uint32(hdr[80:])
	size := binary.LittleEndian.Uint32(hdr[84:])
	if n > 256 || size < 128 || size > 1024 {
		return Layout{}, fmt.Errorf("implausible GPT: %d entries of %d bytes", n, size)
	}
	buf := make([]byte, int(n)*int(size))
	if _, err := r.ReadAt(buf, int64(entriesLBA)*sector); err != nil {
		return Layout{}, fmt.Errorf("reading GPT entries: %w", err)
	}
	var l Layout
	for i := 0; i < int(n); i++ {
		e := buf[i*int(size):]
		var p Partition
		copy(p.TypeGUID[:], e[0:16])
		if p.TypeGUID == [16]byte{} {
			continue
		}
		copy(p.PartGUID[:], e[16:32])
		p.Number = i + 1
		p.FirstLBA = binary.LittleEndian.Uint64(e[32:])
		p.LastLBA = binary.LittleEndian.Uint64(e[40:])
		u := make([]uint16, 36)
		for j := range u {
			u[j] = binary.LittleEndian.Uint16(e[56+2*j:])
		}
		p.Name = strings.TrimRight(string(utf16.Decode(u)), "\x00")
		l.Partitions = append(l.Partitions, p)
	}
	return l, nil
}

// Partition returns partition number n (1-based).
func (l Layout) Partition(n int) (Partition, bool) {
	for _, p := range l.Partitions {
		if p.Number == n {
			return p, true
		}
	}
	return Partition{}, false
}

// Check verifies the shape every Outpost image has: boot, root A, root B
// and /perm, in that order, within the image.
func (l Layout) Check() error {
	if len(l.Partitions) != 4 {
		return fmt.Errorf("image has %d partitions, want 4 (boot, root A, root B, perm)", len(l.Partitions))
	}
	var end uint64
	for i, p := range l.Partitions {
		if p.Number != i+1 || p.FirstLBA <= end || p.LastLBA < p.FirstLBA {
			return fmt.Errorf("partition %d out of order or overlapping", p.Number)
		}
		end = p.LastLBA
	}
	if int64(end+1)*sector > l.Size {
		return fmt.Errorf("partition 4 ends beyond the image")
	}
	boot, _ := l.Partition(1)
	rootA, _ := l.Partition(2)
	rootB, _ := l.Partition(3)
	if boot.Size() < 90<<20 || rootA.Size() < 400<<20 || rootA.Size() != rootB.Size() {
		return fmt.Errorf("unexpected sizes: boot %d, root A %d, root B %d bytes", boot.Size(), rootA.Size(), rootB.Size())
	}
	return nil
}

// FormatPerm makes an ext4 file system in the image's fourth partition, in
// place, with mkfs.ext4's offset option (no loop device, no root needed).
func FormatPerm(ctx context.Context, mkfs, img string) error {
	l, err := ReadLayout(img)
	if err != nil {
		return err
	}
	p, ok := l.Partition(4)
	if !ok {
		return fmt.Errorf("%s: no partition 4 for /perm", img)
	}
	cmd := exec.CommandContext(ctx, mkfs, "-F", "-q", "-L", "perm", "-t", "ext4",
		"-E", fmt.Sprintf("offset=%d,root_owner=0:0", p.Offset()),
		img, fmt.Sprintf("%dk", p.Size()/1024))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 for /perm: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// IsExt4 reports whether the partition holds an ext4 (or ext2/3) superblock.
func IsExt4(r io.ReaderAt, p Partition) bool {
	var magic [2]byte
	if _, err := r.ReadAt(magic[:], p.Offset()+1024+0x38); err != nil {
		return false
	}
	return magic == [2]byte{0x53, 0xef}
}
