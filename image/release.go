package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/outpost-gw/outpost/internal/atomicfile"
)

// ReleaseFile is the description `outpost release build` writes beside the
// partition images and `outpost release sign` reads: which files make the
// release, and their signed length and digest.
const ReleaseFile = "release.json"

// Release describes one built release.
type Release struct {
	// Version is the manifest's release number (what a box's floor is
	// compared with); ImageVersion the string stamped into outpostd.
	Version      uint64            `json:"version"`
	ImageVersion string            `json:"image_version"`
	Target       string            `json:"target"`
	Artifacts    []ReleaseArtifact `json:"artifacts"`
	// Disk is the full flashable image the partitions were cut from
	// (for new boxes), relative to the release directory.
	Disk string `json:"disk"`
}

// ReleaseArtifact is one partition image of a release.
type ReleaseArtifact struct {
	Name   string `json:"name"` // "root" or "boot"
	File   string `json:"file"` // relative to the release directory
	Length int64  `json:"length"`
	SHA256 string `json:"sha256"` // lowercase hex
}

// ParseReleaseVersion accepts a release number as "3" or "v3" and returns
// the number and the version string stamped into the image ("v3").
func ParseReleaseVersion(s string) (uint64, string, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(s, "v"), 10, 64)
	if err != nil || n == 0 {
		return 0, "", fmt.Errorf("release version %q: want a positive release number such as 3 or v3 (boxes refuse numbers at or below the one they run)", s)
	}
	return n, "v" + strconv.FormatUint(n, 10), nil
}

// BuildRelease builds the disk image for o.Target into dir/disk.img and cuts
// the partitions an update streams out of it: root.img (the squashfs of root
// A, trimmed to its own length, so a box downloads tens of MB, not the
// 500 MB partition) and boot.img (the whole FAT boot partition). It writes
// dir/release.json describing them. o.Out is ignored; o.Version must be
// what ParseReleaseVersion returned for version.
func BuildRelease(ctx context.Context, dir string, version uint64, o Options) (Release, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Release{}, err
	}
	o.Out = filepath.Join(dir, "disk.img")
	if err := Build(ctx, o); err != nil {
		return Release{}, err
	}
	arts, err := CutPartitions(o.Out, dir)
	if err != nil {
		return Release{}, err
	}
	r := Release{Version: version, ImageVersion: o.Version, Target: o.Target, Artifacts: arts, Disk: "disk.img"}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return Release{}, err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, ReleaseFile), append(b, '\n'), 0o644); err != nil {
		return Release{}, err
	}
	return r, nil
}

// LoadRelease reads dir/release.json.
func LoadRelease(dir string) (Release, error) {
	var r Release
	b, err := os.ReadFile(filepath.Join(dir, ReleaseFile))
	if err != nil {
		return r, fmt.Errorf("%w (build the release with `outpost release build --out %s` first)", err, dir)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("%s: %w", filepath.Join(dir, ReleaseFile), err)
	}
	return r, nil
}

// CutPartitions writes root.img and boot.img from img into dir and returns
// their descriptions.
func CutPartitions(img, dir string) ([]ReleaseArtifact, error) {
	l, err := ReadLayout(img)
	if err != nil {
		return nil, err
	}
	if err := l.Check(); err != nil {
		return nil, err
	}
	f, err := os.Open(img)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	boot, _ := l.Partition(1)
	rootA, _ := l.Partition(2)
	rootLen, err := SquashfsLength(f, rootA)
	if err != nil {
		return nil, fmt.Errorf("%s: root A: %w", img, err)
	}
	var arts []ReleaseArtifact
	for _, c := range []struct {
		name string
		p    Partition
		n    int64
	}{{"root", rootA, rootLen}, {"boot", boot, boot.Size()}} {
		file := c.name + ".img"
		sum, err := writeSparse(filepath.Join(dir, file), io.NewSectionReader(f, c.p.Offset(), c.n))
		if err != nil {
			return nil, fmt.Errorf("writing %s: %w", file, err)
		}
		arts = append(arts, ReleaseArtifact{Name: c.name, File: file, Length: c.n, SHA256: hex.EncodeToString(sum)})
	}
	return arts, nil
}

// SquashfsLength returns the length of the squashfs file system at the start
// of p, rounded up to 4 KiB as mksquashfs pads it.
func SquashfsLength(r io.ReaderAt, p Partition) (int64, error) {
	sb := make([]byte, 96)
	if _, err := r.ReadAt(sb, p.Offset()); err != nil {
		return 0, fmt.Errorf("reading squashfs superblock: %w", err)
	}
	if string(sb[:4]) != "hsqs" {
		return 0, errors.New("no squashfs superblock")
	}
	used := int64(binary.LittleEndian.Uint64(sb[40:]))
	n := (used + 4095) &^ 4095
	if used <= 96 || n > p.Size() {
		return 0, fmt.Errorf("squashfs claims %d bytes in a %d byte partition", used, p.Size())
	}
	return n, nil
}

// writeSparse copies r to path (temp, fsync, rename), leaving holes for
// all-zero blocks, and returns the SHA-256 of all bytes.
func writeSparse(path string, r io.Reader) ([]byte, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	buf := make([]byte, 64<<10)
	zero := make([]byte, len(buf))
	var size int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			h.Write(buf[:n])
			if bytes.Equal(buf[:n], zero[:n]) {
				if _, err := tmp.Seek(int64(n), io.SeekCurrent); err != nil {
					return nil, err
				}
			} else if _, err := tmp.Write(buf[:n]); err != nil {
				return nil, err
			}
			size += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if err := tmp.Truncate(size); err != nil {
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, err
	}
	return h.Sum(nil), atomicfile.SyncDir(filepath.Dir(path))
}
