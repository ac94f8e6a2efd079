package segment

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/outpost-gw/outpost/internal/atomicfile"
)

// Repair makes a segment file consistent after a crash or power cut, and
// describes it. It walks the boxes (ftyp, moov, then moof+mdat pairs) and
// truncates the file after the last complete, well-formed part, then
// fsyncs it; a file that is intact is only read. A file without an intact
// header or without a complete part holds nothing playable: Repair removes
// it and returns an error wrapping ErrUnrecoverable. Camera and Start come
// from the path when it follows the Writer's naming.
//
// Do not repair a file a Writer is still appending to.
func Repair(path string) (SegmentInfo, error) {
	info := SegmentInfo{Path: path}
	info.Camera, info.Start = parseName(path)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return info, fmt.Errorf("segment: repair: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return info, fmt.Errorf("segment: repair: %w", err)
	}
	res, err := walk(f, fi.Size())
	if err == nil && res.parts == 0 {
		err = fmt.Errorf("%w: no complete part", ErrUnrecoverable)
	}
	if errors.Is(err, ErrUnrecoverable) {
		f.Close()
		if rerr := os.Remove(path); rerr != nil {
			return info, fmt.Errorf("segment: repair %s: %w (not removed: %w)", path, err, rerr)
		}
		if serr := atomicfile.SyncDir(filepath.Dir(path)); serr != nil {
			return info, fmt.Errorf("segment: repair %s: %w (removed, %w)", path, err, serr)
		}
		return info, fmt.Errorf("segment: repair %s: %w (removed)", path, err)
	}
	if err != nil {
		return info, fmt.Errorf("segment: repair %s: %w", path, err)
	}
	if res.good < fi.Size() {
		if err := f.Truncate(res.good); err != nil {
			return info, fmt.Errorf("segment: repair: %w", err)
		}
		if err := f.Sync(); err != nil {
			return info, fmt.Errorf("segment: repair: fsync %s: %w", path, err)
		}
	}
	info.Bytes, info.Trimmed = res.good, fi.Size()-res.good
	info.Parts, info.Duration, info.Codecs = res.parts, res.duration(), res.codecs()
	return info, nil
}

// parseName reads camera and start time from a path made by the Writer,
// .../<camera>/<YYYY-MM-DD>/<stamp>.mp4; zero values if it is not one.
func parseName(path string) (string, time.Time) {
	stamp, ok := strings.CutSuffix(filepath.Base(path), ".mp4")
	if !ok {
		return "", time.Time{}
	}
	start, err := time.Parse(stampLayout, stamp)
	dayDir := filepath.Dir(path)
	if err != nil || filepath.Base(dayDir) != start.Format(dayLayout) {
		return "", time.Time{}
	}
	camera := filepath.Base(filepath.Dir(dayDir))
	if !cameraRE.MatchString(camera) {
		camera = ""
	}
	return camera, start
}

// Scan repairs and describes every segment file under dir (a recordings
// root or one camera's folder), sorted by camera and start, to rebuild the
// index at start-up. Files Repair removed are left out; other failures are
// joined into the error, next to the segments that could be read. Run it
// before any Writer writes under dir.
func Scan(dir string) ([]SegmentInfo, error) {
	var infos []SegmentInfo
	var errs []error
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if _, start := parseName(path); start.IsZero() {
			return nil
		}
		info, err := Repair(path)
		switch {
		case err == nil:
			infos = append(infos, info)
		case !errors.Is(err, ErrUnrecoverable):
			errs = append(errs, err)
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	slices.SortFunc(infos, func(a, b SegmentInfo) int {
		if c := strings.Compare(a.Camera, b.Camera); c != 0 {
			return c
		}
		return a.Start.Compare(b.Start)
	})
	return infos, errors.Join(errs...)
}
