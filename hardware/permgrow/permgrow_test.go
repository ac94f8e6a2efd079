package permgrow

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gokrazy/tools/packer"
)

const (
	imageSize  = 1200 << 20 // what the image is built for
	firstLBA   = 8192       // gokrazy's FirstPartitionOffsetSectors
	p4Start    = firstLBA + 1100<<20/512
	gib        = int64(1) << 30
	hostname   = "outpost-test"
	sectorsGPT = 32 // sectors of gokrazy's 128×128-byte entry array
)

// mbrVariant edits the MBR packer wrote, before the disk grows.
type mbrVariant func(mbr []byte, p4Sectors uint32)

// hybridP4 adds an MBR entry for partition 4 to gokrazy's hybrid MBR.
func hybridP4(mbr []byte, p4Sectors uint32) {
	e := mbr[446+3*16:]
	copy(e[:8], []byte{0, 0xFE, 0xFF, 0xFF, 0x83, 0xFE, 0xFF, 0xFF})
	binary.LittleEndian.PutUint32(e[8:], p4Start)
	binary.LittleEndian.PutUint32(e[12:], p4Sectors)
}

// protective replaces gokrazy's hybrid MBR with a classic one whose single
// 0xEE entry covers the whole (image-sized) disk.
func protective(mbr []byte, _ uint32) {
	clear(mbr[446:510])
	copy(mbr[446:454], []byte{0, 0, 2, 0, 0xEE, 0xFE, 0xFF, 0xFF})
	binary.LittleEndian.PutUint32(mbr[454:], 1)
	binary.LittleEndian.PutUint32(mbr[458:], imageSize/512-1)
}

// makeDisk writes gokrazy's partition table for an image of imageSize into a
// sparse file, as the image build does, and then extends the file to
// diskSize, as flashing the image onto a bigger device does.
func makeDisk(t testing.TB, diskSize int64, variant mbrVariant) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(imageSize); err != nil {
		t.Fatal(err)
	}
	p := packer.NewPackForHost(firstLBA, hostname)
	if err := p.Partition(f, imageSize); err != nil {
		t.Fatal(err)
	}
	if variant != nil {
		mbr := make([]byte, 512)
		if _, err := f.ReadAt(mbr, 0); err != nil {
			t.Fatal(err)
		}
		variant(mbr, uint32(packer.PermSizeInKB(firstLBA, imageSize)*2))
		if _, err := f.WriteAt(mbr, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(diskSize); err != nil {
		t.Fatal(err)
	}
	return f
}

func mustGPT(t testing.TB, r io.ReaderAt, lba uint64, diskSize int64) *gpt {
	t.Helper()
	g, err := readGPT(r, lba, uint64(diskSize)/512)
	if err != nil {
		t.Fatalf("GPT at LBA %d: %v", lba, err)
	}
	return g
}

func readMBR(t testing.TB, r io.ReaderAt) []byte {
	t.Helper()
	mbr := make([]byte, 512)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		t.Fatal(err)
	}
	return mbr
}

func lastLBA(g *gpt, i int) uint64 { return binary.LittleEndian.Uint64(g.entry(i)[40:]) }

// checkSameTable checks that g describes the same partitions as old, except
// for the LastLBA of partition 4, which it returns.
func checkSameTable(t testing.TB, old, g *gpt) uint64 {
	t.Helper()
	if !bytes.Equal(old.sector[56:72], g.sector[56:72]) {
		t.Errorf("disk GUID changed")
	}
	for i := range int(old.numEntries) {
		o, n := old.entry(i), g.entry(i)
		if i == 3 {
			o, n = bytes.Clone(o), bytes.Clone(n)
			clear(o[40:48])
			clear(n[40:48])
		}
		if !bytes.Equal(o, n) {
			t.Errorf("partition entry %d changed", i+1)
		}
	}
	return lastLBA(g, 3)
}

// checkGrown verifies the final state after growing: both GPTs valid and
// identical apart from their location, everything but p4's end unchanged,
// p4 ending at the last usable LBA, and nothing left to do.
func checkGrown(t testing.TB, disk io.ReaderAt, diskSize int64, old *gpt) {
	t.Helper()
	sectors := uint64(diskSize) / 512
	prim := mustGPT(t, disk, 1, diskSize)
	back := mustGPT(t, disk, sectors-1, diskSize)
	if got := checkSameTable(t, old, prim); got != prim.lastUsable || got != sectors-sectorsGPT-2 {
		t.Errorf("p4 ends at LBA %d, want last usable LBA %d (disk of %d sectors)", got, prim.lastUsable, sectors)
	}
	checkSameTable(t, old, back)
	if prim.altLBA != sectors-1 || back.altLBA != 1 || back.entriesLBA != sectors-1-sectorsGPT ||
		back.lastUsable != prim.lastUsable || back.firstUsable != prim.firstUsable {
		t.Errorf("header fields: primary alt %d last usable %d, backup alt %d entries %d last usable %d",
			prim.altLBA, prim.lastUsable, back.altLBA, back.entriesLBA, back.lastUsable)
	}
	if !bytes.Equal(prim.entries, back.entries) {
		t.Errorf("primary and backup entries differ")
	}
	p, err := PlanGrow(disk, diskSize)
	if err != nil || p.NeedsGrow() || p.OldSize != p.NewSize {
		t.Errorf("second PlanGrow = %v, %v; want a no-op", p, err)
	}
}

type sfdiskTable struct {
	PartitionTable struct {
		Label      string
		ID         string
		LastLBA    uint64
		Partitions []struct {
			Start, Size uint64
			UUID        string
		}
	}
}

// checkTools cross-checks the grown table with sfdisk (and sgdisk if
// installed), skipping tools that are missing. sgdisk rightly reports a
// hybrid MBR entry capped at 32 bits as not matching its GPT partition, so
// cappedMBR skips it.
func checkTools(t *testing.T, path string, diskSize int64, cappedMBR bool) {
	t.Helper()
	if _, err := exec.LookPath("sfdisk"); err != nil {
		t.Log("sfdisk not installed, skipping its checks")
	} else {
		out, err := exec.Command("sfdisk", "--verify", path).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "No errors detected") {
			t.Errorf("sfdisk --verify: %v\n%s", err, out)
		}
		out, err = exec.Command("sfdisk", "--json", path).Output()
		if err != nil {
			t.Fatalf("sfdisk --json: %v", err)
		}
		var tab sfdiskTable
		if err := json.Unmarshal(out, &tab); err != nil {
			t.Fatal(err)
		}
		pt := tab.PartitionTable
		p := packer.NewPackForHost(firstLBA, hostname)
		if pt.Label != "gpt" || !strings.EqualFold(pt.ID, p.GPTPARTUUID(0)) || len(pt.Partitions) != 4 ||
			pt.LastLBA != uint64(diskSize)/512-sectorsGPT-2 {
			t.Fatalf("sfdisk sees %+v", pt)
		}
		for i, part := range pt.Partitions {
			if !strings.EqualFold(part.UUID, p.GPTPARTUUID(uint16(i+1))) {
				t.Errorf("sfdisk: partition %d has UUID %s, want %s", i+1, part.UUID, p.GPTPARTUUID(uint16(i+1)))
			}
		}
		if p4 := pt.Partitions[3]; p4.Start != p4Start || p4.Start+p4.Size-1 != pt.LastLBA {
			t.Errorf("sfdisk: p4 at %d+%d, want it to end at %d", p4.Start, p4.Size, pt.LastLBA)
		}
	}
	if _, err := exec.LookPath("sgdisk"); err != nil || cappedMBR {
		t.Log("sgdisk not installed or MBR capped, skipping its checks")
	} else if out, err := exec.Command("sgdisk", "-v", path).CombinedOutput(); err != nil || !strings.Contains(string(out), "No problems found") {
		t.Errorf("sgdisk -v: %v\n%s", err, out)
	}
}

func TestPlanGrow(t *testing.T) {
	oldP4 := int64(packer.PermSizeInKB(firstLBA, imageSize)) * 1024
	for _, tc := range []struct {
		name     string
		diskSize int64
		variant  mbrVariant
		wantMBR  func(mbr []byte, diskSize, newP4 int64) // edits the expected MBR
	}{
		{name: "gokrazy-8G", diskSize: 8 * gib},
		{name: "gokrazy-2.5T", diskSize: 2560 * gib},
		{name: "hybridP4-8G", diskSize: 8 * gib, variant: hybridP4, wantMBR: func(mbr []byte, _, newP4 int64) {
			binary.LittleEndian.PutUint32(mbr[446+3*16+12:], uint32(newP4/512))
		}},
		{name: "hybridP4-2.5T", diskSize: 2560 * gib, variant: hybridP4, wantMBR: func(mbr []byte, _, _ int64) {
			binary.LittleEndian.PutUint32(mbr[446+3*16+12:], 0xFFFFFFFF)
		}},
		{name: "protective-8G", diskSize: 8 * gib, variant: protective, wantMBR: func(mbr []byte, diskSize, _ int64) {
			binary.LittleEndian.PutUint32(mbr[446+12:], uint32(diskSize/512-1))
		}},
		{name: "protective-2.5T", diskSize: 2560 * gib, variant: protective, wantMBR: func(mbr []byte, _, _ int64) {
			binary.LittleEndian.PutUint32(mbr[446+12:], 0xFFFFFFFF)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := makeDisk(t, tc.diskSize, tc.variant)
			old := mustGPT(t, f, 1, imageSize)
			wantMBR := readMBR(t, f)

			p, err := PlanGrow(f, tc.diskSize)
			if err != nil {
				t.Fatal(err)
			}
			newP4 := (tc.diskSize/512 - sectorsGPT - 2 - p4Start + 1) * 512
			if !p.NeedsGrow() || p.Partition != 4 || p.Start != p4Start*512 || p.OldSize != oldP4 || p.NewSize != newP4 {
				t.Fatalf("plan = {Partition:%d Start:%d OldSize:%d NewSize:%d NeedsGrow:%v}, want partition 4 at %d growing from %d to %d",
					p.Partition, p.Start, p.OldSize, p.NewSize, p.NeedsGrow(), p4Start*512, oldP4, newP4)
			}
			if err := p.Apply(f); err != nil {
				t.Fatal(err)
			}
			checkGrown(t, f, tc.diskSize, old)
			if tc.wantMBR != nil {
				tc.wantMBR(wantMBR, tc.diskSize, newP4)
			}
			if got := readMBR(t, f); !bytes.Equal(got, wantMBR) {
				t.Errorf("MBR entries:\n got %x\nwant %x", got[446:], wantMBR[446:])
			}
			checkTools(t, f.Name(), tc.diskSize, tc.name == "hybridP4-2.5T")
		})
	}
}

func TestPlanGrowNoOp(t *testing.T) {
	for _, size := range []int64{imageSize, imageSize + MinGrow - 1024} {
		f := makeDisk(t, size, hybridP4)
		p, err := PlanGrow(f, size)
		if err != nil {
			t.Fatal(err)
		}
		if p.NeedsGrow() || p.OldSize != p.NewSize || p.Partition != 4 {
			t.Errorf("disk of %d bytes: plan %v, want partition 4 and no growth", size, p)
		}
	}
}

// reseal recomputes the CRCs of the primary GPT after a test edited it.
func reseal(t *testing.T, f *os.File, edit func(hdr, entries []byte)) {
	t.Helper()
	hdr, entries := make([]byte, 512), make([]byte, sectorsGPT*512)
	if _, err := f.ReadAt(hdr, 512); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(entries, 1024); err != nil {
		t.Fatal(err)
	}
	edit(hdr, entries)
	binary.LittleEndian.PutUint32(hdr[88:], crc32.ChecksumIEEE(entries))
	binary.LittleEndian.PutUint32(hdr[16:], headerCRC(hdr[:92]))
	if _, err := f.WriteAt(append(hdr, entries...), 512); err != nil {
		t.Fatal(err)
	}
}

func TestPlanGrowRejects(t *testing.T) {
	le := binary.LittleEndian
	for _, tc := range []struct {
		name, want string
		size       int64
		edit       func(t *testing.T, f *os.File)
	}{
		{name: "smaller-than-table", want: "do not fit", size: imageSize - 1<<20},
		{name: "tiny", want: "too small", size: 4096},
		{name: "no-mbr", want: "not a GPT disk", edit: func(t *testing.T, f *os.File) {
			f.WriteAt(make([]byte, 512), 0)
		}},
		{name: "mbr-only", want: "not a GPT disk", edit: func(t *testing.T, f *os.File) {
			f.WriteAt([]byte{0x83}, 446+16+4) // the 0xEE entry becomes a Linux one
		}},
		{name: "no-gpt", want: "no GPT signature", edit: func(t *testing.T, f *os.File) {
			f.WriteAt(make([]byte, 512), 512)
		}},
		{name: "header-crc", want: "CRC mismatch", edit: func(t *testing.T, f *os.File) {
			f.WriteAt([]byte{1}, 512+56) // disk GUID
		}},
		{name: "entries-crc", want: "entry array CRC mismatch", edit: func(t *testing.T, f *os.File) {
			f.WriteAt([]byte{'X'}, 1024+56) // name of p1
		}},
		{name: "overlap", want: "partition 3 overlaps the last partition 4", edit: func(t *testing.T, f *os.File) {
			reseal(t, f, func(_, e []byte) { le.PutUint64(e[2*128+40:], p4Start) })
		}},
		{name: "outside", want: "outside the usable LBAs", edit: func(t *testing.T, f *os.File) {
			reseal(t, f, func(_, e []byte) { le.PutUint64(e[3*128+40:], imageSize/512-2) })
		}},
		{name: "empty", want: "no partitions", edit: func(t *testing.T, f *os.File) {
			reseal(t, f, func(_, e []byte) { clear(e) })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size := tc.size
			if size == 0 {
				size = 8 * gib
			}
			f := makeDisk(t, max(size, imageSize), nil)
			if tc.edit != nil {
				tc.edit(t, f)
			}
			if _, err := PlanGrow(f, size); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("PlanGrow = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

// overlay is an in-memory copy-on-write layer over a disk image: writes land
// in a sector map, so many crash scenarios can share one base file.
type overlay struct {
	base io.ReaderAt
	secs map[int64][]byte
}

func newOverlay(base io.ReaderAt) *overlay { return &overlay{base: base, secs: map[int64][]byte{}} }

func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	for n := 0; n < len(p); {
		s, in := (off+int64(n))/512, int((off+int64(n))%512)
		chunk := p[n:min(len(p), n+512-in)]
		if sec, ok := o.secs[s]; ok {
			copy(chunk, sec[in:])
		} else if m, err := o.base.ReadAt(chunk, off+int64(n)); err != nil {
			return n + m, err
		}
		n += len(chunk)
	}
	return len(p), nil
}

func (o *overlay) WriteAt(p []byte, off int64) (int, error) {
	if off%512 != 0 || len(p)%512 != 0 {
		return 0, errors.New("overlay: unaligned write")
	}
	for i := 0; i < len(p); i += 512 {
		o.secs[off/512+int64(i/512)] = bytes.Clone(p[i : i+512])
	}
	return len(p), nil
}

var errCut = errors.New("power cut")

// cutWriter models a power cut: it passes on only the first left sectors
// and then fails, tearing the write that crosses the budget.
type cutWriter struct {
	w    io.WriterAt
	left int
}

func (c *cutWriter) WriteAt(p []byte, off int64) (int, error) {
	n := min(len(p), c.left*512)
	if n > 0 {
		if _, err := c.w.WriteAt(p[:n], off); err != nil {
			return 0, err
		}
	}
	c.left -= n / 512
	if n < len(p) {
		return n, errCut
	}
	return n, nil
}

func TestApplyCrashSafety(t *testing.T) {
	const diskSize = 8 * gib
	for _, variant := range []struct {
		name string
		mbr  mbrVariant
	}{{"gokrazy", nil}, {"hybridP4", hybridP4}} {
		t.Run(variant.name, func(t *testing.T) {
			f := makeDisk(t, diskSize, variant.mbr)
			old := mustGPT(t, f, 1, imageSize)
			oldLast := lastLBA(old, 3)
			p, err := PlanGrow(f, diskSize)
			if err != nil {
				t.Fatal(err)
			}
			total, primStart, primEnd := 0, 0, 0
			for _, w := range p.writes {
				if w.off == 512 {
					primStart, primEnd = total, total+len(w.data)/512
				}
				total += len(w.data) / 512
			}
			newLast := uint64(diskSize/512 - sectorsGPT - 2)
			for cut := 0; cut <= total; cut++ {
				disk := newOverlay(f)
				err := p.Apply(&cutWriter{w: disk, left: cut})
				if (err == nil) != (cut == total) {
					t.Fatalf("cut after %d sectors: Apply = %v", cut, err)
				}
				prim, perr := readGPT(disk, 1, uint64(diskSize)/512)
				if perr != nil {
					// Only a torn primary write may leave the primary
					// invalid, and then the new backup must be complete.
					if cut <= primStart || cut >= primEnd {
						t.Fatalf("cut after %d sectors: primary GPT invalid: %v", cut, perr)
					}
					back := mustGPT(t, disk, uint64(diskSize)/512-1, diskSize)
					if got := checkSameTable(t, old, back); got != newLast {
						t.Errorf("cut after %d sectors: backup p4 ends at %d, want %d", cut, got, newLast)
					}
					continue
				}
				// A valid primary must have a valid backup where it says.
				back := mustGPT(t, disk, prim.altLBA, diskSize)
				got, gotBack := checkSameTable(t, old, prim), checkSameTable(t, old, back)
				if (got != oldLast && got != newLast) || got != gotBack {
					t.Errorf("cut after %d sectors: p4 ends at %d (backup %d), want %d or %d", cut, got, gotBack, oldLast, newLast)
				}
				// The next start-up finishes the job.
				p2, err := PlanGrow(disk, diskSize)
				if err != nil {
					t.Fatalf("cut after %d sectors: re-plan: %v", cut, err)
				}
				if err := p2.Apply(disk); err != nil {
					t.Fatal(err)
				}
				checkGrown(t, disk, diskSize, old)
				want := readMBR(t, newOverlay(f))
				if variant.mbr != nil {
					binary.LittleEndian.PutUint32(want[446+3*16+12:], uint32(newLast-p4Start+1))
				}
				if !bytes.Equal(readMBR(t, disk), want) {
					t.Errorf("cut after %d sectors: MBR not finished after re-run", cut)
				}
			}
		})
	}
}

// syncRecorder records the order of writes and syncs.
type syncRecorder struct {
	overlay
	ops []string
}

func (s *syncRecorder) WriteAt(p []byte, off int64) (int, error) {
	where := "write@end"
	if off < 1<<20 {
		where = "write@start"
	}
	s.ops = append(s.ops, where)
	return s.overlay.WriteAt(p, off)
}

func (s *syncRecorder) Sync() error { s.ops = append(s.ops, "sync"); return nil }

func TestApplySyncOrder(t *testing.T) {
	f := makeDisk(t, 8*gib, hybridP4)
	p, err := PlanGrow(f, 8*gib)
	if err != nil {
		t.Fatal(err)
	}
	rec := &syncRecorder{overlay: *newOverlay(f)}
	if err := p.Apply(rec); err != nil {
		t.Fatal(err)
	}
	want := "write@end write@end sync write@start sync write@start sync"
	if got := strings.Join(rec.ops, " "); got != want {
		t.Errorf("Apply did %q, want %q", got, want)
	}
}

// sparseDisk serves data, then zeros up to size: a cheap disk for fuzzing.
type sparseDisk struct {
	data []byte
	size int64
}

func (s sparseDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= s.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), s.size-off))
	clear(p[:n])
	if off < int64(len(s.data)) {
		copy(p[:n], s.data[off:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// fixCRCs recomputes the primary GPT's CRCs in data (when the header
// fields allow it), so that the fuzzer gets past the checksums and explores
// the layout logic.
func fixCRCs(data []byte, size int64) []byte {
	if len(data) < 1024 {
		return data
	}
	data = bytes.Clone(data)
	le := binary.LittleEndian
	hdr := data[512:1024]
	n := uint64(le.Uint32(hdr[80:])) * uint64(le.Uint32(hdr[84:]))
	if lba := le.Uint64(hdr[72:]); n <= maxEntriesBytes && lba < 1<<40 {
		entries := make([]byte, n)
		sparseDisk{data: data, size: size}.ReadAt(entries, int64(lba*512))
		le.PutUint32(hdr[88:], crc32.ChecksumIEEE(entries))
	}
	if hsize := le.Uint32(hdr[12:]); hsize >= 92 && hsize <= 512 {
		le.PutUint32(hdr[16:], headerCRC(hdr[:hsize]))
	}
	return data
}

func FuzzPlanGrow(f *testing.F) {
	f.Add([]byte{}, int64(1<<20), false)
	f.Add(make([]byte, 1536), 8*gib, true)
	f.Fuzz(func(t *testing.T, data []byte, size int64, fix bool) {
		if fix {
			data = fixCRCs(data, size)
		}
		disk := sparseDisk{data: data, size: size}
		p, err := PlanGrow(disk, size)
		if err != nil {
			return
		}
		if p.Partition < 1 || p.OldSize <= 0 || p.NewSize < p.OldSize || p.Start+p.NewSize > size {
			t.Fatalf("implausible plan %v for a disk of %d bytes", p, size)
		}
		if !p.NeedsGrow() {
			return
		}
		ov := newOverlay(disk)
		if err := p.Apply(ov); err != nil {
			t.Fatal(err)
		}
		if _, err := readGPT(ov, uint64(size)/512-1, uint64(size)/512); p.NewSize != p.OldSize && err != nil {
			t.Fatalf("backup GPT after Apply: %v", err)
		}
		p2, err := PlanGrow(ov, size)
		if err != nil || p2.NeedsGrow() || p2.OldSize != p.NewSize {
			t.Fatalf("PlanGrow after Apply = %v, %v; want a no-op at size %d", p2, err, p.NewSize)
		}
	})
}
