package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unicode/utf16"
)

// writeTestImage makes a sparse disk image with an Outpost GPT (boot 100 MB,
// root A/B 500 MB, perm) and returns its path and layout; root A starts with
// a squashfs superblock claiming squashLen bytes.
func writeTestImage(t *testing.T, squashLen uint64) (string, Layout) {
	t.Helper()
	const mb = 1 << 20 / sector
	parts := []Partition{
		{Number: 1, Name: "boot", FirstLBA: 2048, LastLBA: 2048 + 100*mb - 1},
		{Number: 2, Name: "root2", FirstLBA: 2048 + 100*mb, LastLBA: 2048 + 600*mb - 1},
		{Number: 3, Name: "root3", FirstLBA: 2048 + 600*mb, LastLBA: 2048 + 1100*mb - 1},
		{Number: 4, Name: "perm", FirstLBA: 2048 + 1100*mb, LastLBA: 2048 + 1200*mb - 1},
	}
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(2048+1200*mb+34) * sector); err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, sector)
	copy(hdr, "EFI PART")
	binary.LittleEndian.PutUint64(hdr[72:], 2)
	binary.LittleEndian.PutUint32(hdr[80:], 128)
	binary.LittleEndian.PutUint32(hdr[84:], 128)
	f.WriteAt(hdr, sector)
	for i, p := range parts {
		e := make([]byte, 128)
		e[0] = 0xaf // any non-zero type GUID
		e[16] = byte(i + 1)
		binary.LittleEndian.PutUint64(e[32:], p.FirstLBA)
		binary.LittleEndian.PutUint64(e[40:], p.LastLBA)
		for j, u := range utf16.Encode([]rune(p.Name)) {
			binary.LittleEndian.PutUint16(e[56+2*j:], u)
		}
		f.WriteAt(e, 2*sector+int64(i)*128)
	}
	sb := make([]byte, 96)
	copy(sb, "hsqs")
	binary.LittleEndian.PutUint64(sb[40:], squashLen)
	f.WriteAt(sb, parts[1].Offset())
	f.WriteAt([]byte("end of squashfs"), parts[1].Offset()+int64(squashLen)-15)
	f.WriteAt([]byte("root B, not cut"), parts[2].Offset())
	f.WriteAt([]byte("boot FAT"), parts[0].Offset())
	f.WriteAt([]byte("boot end"), parts[0].Offset()+parts[0].Size()-8)
	l, err := ReadLayout(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, l
}

// TestCutPartitions: root.img is root A's squashfs, padded to 4 KiB and no
// further; boot.img is the whole boot partition; both hash to what the
// release says and to the bytes in the disk image.
func TestCutPartitions(t *testing.T) {
	img, l := writeTestImage(t, 5<<20+100)
	dir := t.TempDir()
	arts, err := CutPartitions(img, dir)
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := l.Partition(1)
	rootA, _ := l.Partition(2)
	want := map[string][]byte{
		"root": readAt(t, img, rootA.Offset(), 5<<20+4096),
		"boot": readAt(t, img, boot.Offset(), boot.Size()),
	}
	if len(arts) != 2 {
		t.Fatalf("artifacts %+v", arts)
	}
	for _, a := range arts {
		got, err := os.ReadFile(filepath.Join(dir, a.File))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(want[a.Name])
		if !bytes.Equal(got, want[a.Name]) || a.Length != int64(len(got)) || a.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: %d bytes (release says %d, sha %s), want %d bytes", a.Name, len(got), a.Length, a.SHA256, len(want[a.Name]))
		}
	}
	// The boot image is written sparse: its zeros take no disk space.
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, "boot.img"), &st); err != nil || st.Blocks*512 > 1<<20 {
		t.Errorf("boot.img takes %d bytes on disk (%v), want it sparse", st.Blocks*512, err)
	}
}

func TestSquashfsLengthRefuses(t *testing.T) {
	for _, n := range []uint64{0, 50, 600 << 20} {
		img, l := writeTestImage(t, 4096)
		rootA, _ := l.Partition(2)
		f, _ := os.OpenFile(img, os.O_RDWR, 0)
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], n)
		f.WriteAt(b[:], rootA.Offset()+40)
		if _, err := SquashfsLength(f, rootA); err == nil {
			t.Errorf("squashfs of %d bytes accepted", n)
		}
		f.WriteAt([]byte("xxxx"), rootA.Offset())
		if _, err := SquashfsLength(f, rootA); err == nil {
			t.Error("no superblock accepted")
		}
		f.Close()
	}
}

func TestParseReleaseVersion(t *testing.T) {
	for in, want := range map[string]string{"3": "v3", "v12": "v12"} {
		if _, got, err := ParseReleaseVersion(in); err != nil || got != want {
			t.Errorf("%q → %q %v", in, got, err)
		}
	}
	for _, in := range []string{"", "0", "v", "1.2", "-1", "v3x"} {
		if _, _, err := ParseReleaseVersion(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func readAt(t *testing.T, path string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}
