// Package permgrow grows the last GPT partition of the boot disk (gokrazy's
// /perm, partition 4) and its ext4 filesystem to fill the device, for images
// that were built for a small fixed size and flashed onto a larger disk.
//
// The partition-table part (PlanGrow, Plan.Apply) is pure and works on any
// io.ReaderAt/io.WriterAt, so it is tested against sparse image files. Grow
// is the on-device step (Linux, root): it finds the disk behind a mountpoint,
// applies the plan, tells the kernel about the new partition size and
// resizes the mounted ext4 online. Everything is idempotent, so Grow is meant
// to run at every start-up.
//
// Only 512-byte logical sectors are supported, as gokrazy's packer only
// writes those. Partition GUIDs, the disk GUID and all other entries are
// preserved byte for byte; only the grown entry's LastLBA, the header fields
// that depend on the device size, the CRCs and (if present) the MBR entry
// covering the grown partition change.
package permgrow

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

const (
	sectorSize = 512

	// MinGrow is the smallest growth in bytes that PlanGrow acts on; a
	// device only slightly larger than the image is left alone.
	MinGrow = 16 << 20

	// maxEntriesBytes bounds the partition entry array we are willing to
	// read (gokrazy and every common tool use 128×128 bytes = 16 KiB).
	maxEntriesBytes = 1 << 20

	mbrTypeGPT   = 0xEE
	mbrMaxSector = 0xFFFFFFFF
)

// Plan is the outcome of PlanGrow: which partition grows, from what to what,
// and the exact sectors Apply will write. The zero Plan does nothing.
type Plan struct {
	// Partition is the 1-based number of the last partition, the one that
	// grows (the kernel's partition number, 4 for gokrazy's /perm).
	Partition int
	// Start is the partition's offset in bytes from the start of the disk.
	Start int64
	// OldSize and NewSize are the partition's size in bytes before and after
	// Apply. They are equal if the partition does not need to grow.
	OldSize, NewSize int64

	writes []write
}

// write is one step of Apply: data at byte offset off, followed by a sync of
// the device if sync is set.
type write struct {
	what string
	off  int64
	data []byte
	sync bool
}

// NeedsGrow reports whether Apply would write anything: the partition can
// grow by at least MinGrow, or an earlier Apply was cut short before it
// updated the MBR entry covering the partition.
func (p Plan) NeedsGrow() bool { return len(p.writes) > 0 }

// String summarizes the plan for logs and test failures.
func (p Plan) String() string {
	return fmt.Sprintf("partition %d at byte %d: %d -> %d bytes, %d writes", p.Partition, p.Start, p.OldSize, p.NewSize, len(p.writes))
}

// gpt is a validated GPT header plus its entry array, as read from disk.
type gpt struct {
	sector      []byte // the whole header sector, kept to preserve unknown bytes
	myLBA       uint64
	altLBA      uint64
	firstUsable uint64
	lastUsable  uint64
	entriesLBA  uint64
	numEntries  uint32
	entrySize   uint32
	entries     []byte // whole sectors; only numEntries*entrySize bytes are CRCed
}

func readSectors(r io.ReaderAt, lba, n uint64) ([]byte, error) {
	buf := make([]byte, n*sectorSize)
	if _, err := r.ReadAt(buf, int64(lba*sectorSize)); err != nil {
		return nil, fmt.Errorf("reading %d sectors at LBA %d: %w", n, lba, err)
	}
	return buf, nil
}

// readGPT reads and validates the GPT header at lba and its entries on a
// disk of the given number of sectors: signature, header CRC, MyLBA,
// plausible geometry and the entry array CRC.
func readGPT(r io.ReaderAt, lba, sectors uint64) (*gpt, error) {
	if lba >= sectors {
		return nil, fmt.Errorf("GPT header LBA %d beyond the %d-sector disk", lba, sectors)
	}
	sec, err := readSectors(r, lba, 1)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	if string(sec[:8]) != "EFI PART" {
		return nil, fmt.Errorf("no GPT signature at LBA %d", lba)
	}
	hsize := le.Uint32(sec[12:])
	if hsize < 92 || hsize > sectorSize {
		return nil, fmt.Errorf("GPT header at LBA %d: bad header size %d", lba, hsize)
	}
	if want, got := le.Uint32(sec[16:]), headerCRC(sec[:hsize]); want != got {
		return nil, fmt.Errorf("GPT header at LBA %d: CRC mismatch (stored %#08x, computed %#08x)", lba, want, got)
	}
	g := &gpt{
		sector:      sec,
		myLBA:       le.Uint64(sec[24:]),
		altLBA:      le.Uint64(sec[32:]),
		firstUsable: le.Uint64(sec[40:]),
		lastUsable:  le.Uint64(sec[48:]),
		entriesLBA:  le.Uint64(sec[72:]),
		numEntries:  le.Uint32(sec[80:]),
		entrySize:   le.Uint32(sec[84:]),
	}
	switch {
	case g.myLBA != lba:
		return nil, fmt.Errorf("GPT header at LBA %d claims to be at LBA %d", lba, g.myLBA)
	case g.entrySize < 128 || g.entrySize%8 != 0 || g.numEntries == 0 ||
		uint64(g.numEntries)*uint64(g.entrySize) > maxEntriesBytes:
		return nil, fmt.Errorf("GPT header at LBA %d: unsupported entry array (%d entries of %d bytes)", lba, g.numEntries, g.entrySize)
	case g.firstUsable > g.lastUsable || g.lastUsable >= sectors || g.altLBA >= sectors || g.altLBA == g.myLBA:
		return nil, fmt.Errorf("GPT header at LBA %d: usable LBAs %d-%d, alternate LBA %d do not fit a %d-sector disk",
			lba, g.firstUsable, g.lastUsable, g.altLBA, sectors)
	}
	n := g.entriesSectors()
	if end := g.entriesLBA + n; end < g.entriesLBA || end > sectors ||
		(g.entriesLBA <= g.lastUsable && end > g.firstUsable) ||
		(g.entriesLBA <= lba && lba < end) {
		return nil, fmt.Errorf("GPT header at LBA %d: entry array at LBA %d overlaps the header or usable space", lba, g.entriesLBA)
	}
	if g.entries, err = readSectors(r, g.entriesLBA, n); err != nil {
		return nil, err
	}
	if want, got := le.Uint32(sec[88:]), crc32.ChecksumIEEE(g.entries[:g.entriesBytes()]); want != got {
		return nil, fmt.Errorf("GPT at LBA %d: entry array CRC mismatch (stored %#08x, computed %#08x)", lba, want, got)
	}
	return g, nil
}

func (g *gpt) entriesBytes() uint64 { return uint64(g.numEntries) * uint64(g.entrySize) }

func (g *gpt) entriesSectors() uint64 { return (g.entriesBytes() + sectorSize - 1) / sectorSize }

// entry returns the raw bytes of entry i (TypeGUID, GUID, FirstLBA, LastLBA,
// Attributes, Name).
func (g *gpt) entry(i int) []byte {
	off := uint64(i) * uint64(g.entrySize)
	return g.entries[off : off+uint64(g.entrySize)]
}

// headerCRC computes the CRC of a header with its CRC field taken as zero.
func headerCRC(h []byte) uint32 {
	c := bytes.Clone(h)
	clear(c[16:20])
	return crc32.ChecksumIEEE(c)
}

// header returns a copy of g's header sector with the location-dependent
// fields replaced and both CRCs recomputed.
func (g *gpt) header(my, alt, entriesLBA, lastUsable uint64, entriesCRC uint32) []byte {
	le := binary.LittleEndian
	h := bytes.Clone(g.sector)
	le.PutUint64(h[24:], my)
	le.PutUint64(h[32:], alt)
	le.PutUint64(h[48:], lastUsable)
	le.PutUint64(h[72:], entriesLBA)
	le.PutUint32(h[88:], entriesCRC)
	hsize := le.Uint32(h[12:])
	le.PutUint32(h[16:], headerCRC(h[:hsize]))
	return h
}

// PlanGrow reads the protective (or hybrid) MBR and the primary GPT of disk,
// a device of diskSize bytes, and plans growing the last partition so that it
// ends at the device's last usable LBA, with the backup GPT moved to the end
// of the device. It fails without planning anything if the disk is not a
// valid GPT disk, if partitions overlap the last one, or if the device is
// smaller than the table claims. A partition that would grow by less than
// MinGrow yields a Plan that does nothing.
func PlanGrow(disk io.ReaderAt, diskSize int64) (Plan, error) {
	if diskSize < 64*sectorSize {
		return Plan{}, fmt.Errorf("permgrow: device of %d bytes is too small for a GPT", diskSize)
	}
	sectors := uint64(diskSize) / sectorSize
	mbr, err := readSectors(disk, 0, 1)
	if err != nil {
		return Plan{}, fmt.Errorf("permgrow: MBR: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA || !hasGPTEntry(mbr) {
		return Plan{}, errors.New("permgrow: not a GPT disk: no protective MBR entry")
	}
	g, err := readGPT(disk, 1, sectors)
	if err != nil {
		return Plan{}, fmt.Errorf("permgrow: primary GPT: %w", err)
	}

	le := binary.LittleEndian
	last := -1
	var first, oldLast uint64
	for i := range int(g.numEntries) {
		e := g.entry(i)
		if allZero(e[:16]) {
			continue
		}
		f, l := le.Uint64(e[32:]), le.Uint64(e[40:])
		if f > l || f < g.firstUsable || l > g.lastUsable {
			return Plan{}, fmt.Errorf("permgrow: partition %d (LBA %d-%d) lies outside the usable LBAs %d-%d", i+1, f, l, g.firstUsable, g.lastUsable)
		}
		if last < 0 || l > oldLast {
			last, first, oldLast = i, f, l
		}
	}
	if last < 0 {
		return Plan{}, errors.New("permgrow: the GPT has no partitions")
	}
	for i := range int(g.numEntries) {
		if e := g.entry(i); i != last && !allZero(e[:16]) && le.Uint64(e[40:]) >= first {
			return Plan{}, fmt.Errorf("permgrow: partition %d overlaps the last partition %d", i+1, last+1)
		}
	}

	entSectors := g.entriesSectors()
	if g.entriesLBA < 2 || g.entriesLBA+entSectors > g.firstUsable {
		return Plan{}, fmt.Errorf("permgrow: primary GPT entries at LBA %d are not between the header and the first usable LBA %d", g.entriesLBA, g.firstUsable)
	}
	if sectors < entSectors+2 {
		return Plan{}, fmt.Errorf("permgrow: device of %d sectors cannot hold a backup GPT", sectors)
	}
	newAlt := sectors - 1
	newLastUsable := newAlt - entSectors - 1
	newLast := oldLast
	if newLastUsable > oldLast && (newLastUsable-oldLast)*sectorSize >= MinGrow {
		newLast = newLastUsable
	}
	p := Plan{
		Partition: last + 1,
		Start:     int64(first * sectorSize),
		OldSize:   int64((oldLast - first + 1) * sectorSize),
		NewSize:   int64((newLast - first + 1) * sectorSize),
	}

	altAfter := g.altLBA
	if newLast != oldLast {
		// The new backup lies behind the new last usable LBA, i.e. behind
		// every partition. If the old backup already sits at the device
		// end, it is overwritten while the primary is still valid; see
		// Apply.
		altAfter = newAlt
		entries := bytes.Clone(g.entries)
		le.PutUint64(entries[uint64(last)*uint64(g.entrySize)+40:], newLast)
		ecrc := crc32.ChecksumIEEE(entries[:g.entriesBytes()])
		backupEntriesLBA := newAlt - entSectors
		p.writes = append(p.writes,
			write{what: "backup GPT entries", off: int64(backupEntriesLBA * sectorSize), data: entries},
			write{what: "backup GPT header", off: int64(newAlt * sectorSize), data: g.header(newAlt, 1, backupEntriesLBA, newLastUsable, ecrc), sync: true})

		// Only the entry sectors up to the one holding the grown entry
		// change. With the usual layout (entries right behind the header)
		// the header and that sector go out in a single write.
		changed := entries[:(uint64(last)*uint64(g.entrySize)+40)/sectorSize*sectorSize+sectorSize]
		hdr := g.header(1, newAlt, g.entriesLBA, newLastUsable, ecrc)
		if g.entriesLBA == 2 {
			p.writes = append(p.writes, write{what: "primary GPT header and entries", off: sectorSize, data: append(hdr, changed...), sync: true})
		} else {
			p.writes = append(p.writes,
				write{what: "primary GPT entries", off: int64(g.entriesLBA * sectorSize), data: changed},
				write{what: "primary GPT header", off: sectorSize, data: hdr, sync: true})
		}
	}
	if newMBR, changed := growMBR(mbr, first, newLast, altAfter); changed {
		p.writes = append(p.writes, write{what: "MBR", off: 0, data: newMBR, sync: true})
	}
	return p, nil
}

// growMBR returns mbr with the entries that should track the grown partition
// enlarged: a non-GPT entry starting at the partition's first LBA (a hybrid
// MBR entry for it) and a 0xEE entry that starts at LBA 1 and covers the
// partition's start (a classic whole-disk protective entry, which then ends at
// the backup GPT header altLBA; gokrazy's 0xEE entry only covers the GPT
// itself and stays). Sizes are capped at the 32-bit maximum and never shrink.
func growMBR(mbr []byte, first, last, altLBA uint64) ([]byte, bool) {
	le := binary.LittleEndian
	out := bytes.Clone(mbr)
	changed := false
	for i := range 4 {
		e := out[446+16*i : 446+16*(i+1)]
		typ, start, size := e[4], uint64(le.Uint32(e[8:])), uint64(le.Uint32(e[12:]))
		var want uint64
		switch {
		case typ == mbrTypeGPT && start == 1 && start+size > first:
			want = altLBA
		case typ != 0 && typ != mbrTypeGPT && start == first:
			want = last - first + 1
		default:
			continue
		}
		want = min(want, mbrMaxSector)
		if want > size {
			le.PutUint32(e[12:], uint32(want))
			copy(e[5:8], []byte{0xFE, 0xFF, 0xFF}) // end CHS: "use the LBA fields"
			changed = true
		}
	}
	return out, changed
}

func hasGPTEntry(mbr []byte) bool {
	for i := range 4 {
		if mbr[446+16*i+4] == mbrTypeGPT {
			return true
		}
	}
	return false
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Apply performs the plan's writes on disk, which must be the device that
// was planned on, syncing at the marked points if disk has a Sync() error
// method (as *os.File does). The order makes every cut point safe:
//
//  1. Backup entries, then backup header, at the new end of the device: an
//     area behind every partition that nothing uses (or, if the backup is
//     already at the device end, the old backup). Until step 2 the primary
//     GPT is untouched and valid, and it is what the kernel and every tool
//     read, so a cut here changes nothing; the next run redoes this step.
//  2. After a sync, the changed primary entry sector, then the primary
//     header that commits it (its CRC covers the entries). The new backup
//     is complete and on stable storage before this starts, so at any cut
//     either the primary is intact (old or new, each with a valid backup at
//     its AlternateLBA) or a torn primary is backed by the valid new backup
//     at the last LBA, which gdisk/sfdisk and the kernel (with the "gpt"
//     parameter) fall back to. Linux does not look at the backup without
//     that parameter, though, so with the usual layout (entries at LBA 2)
//     header and entries go out as one 1 KiB write within the first 4 KiB
//     of the disk, which flash media (SD, eMMC, SSD) commit as one page
//     program: this shrinks the torn window to what the hardware allows.
//  3. After a sync, the MBR, if an entry in it tracks the grown partition.
//     It is not used to find partitions on a GPT disk; a stale entry left by
//     a cut is fixed by the next PlanGrow/Apply.
//
// Partition data is never written, so /perm stays intact whatever the table
// says: its start and type never change, only its end moves outward.
func (p Plan) Apply(disk io.WriterAt) error {
	syncer, _ := disk.(interface{ Sync() error })
	for _, w := range p.writes {
		if _, err := disk.WriteAt(w.data, w.off); err != nil {
			return fmt.Errorf("permgrow: writing %s at byte %d: %w", w.what, w.off, err)
		}
		if w.sync && syncer != nil {
			if err := syncer.Sync(); err != nil {
				return fmt.Errorf("permgrow: syncing after %s: %w", w.what, err)
			}
		}
	}
	return nil
}
