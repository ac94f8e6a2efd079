// Package playback serves recorded footage: it joins a camera's segment
// files into one fragmented MP4 stream over a time range, without
// re-muxing samples. The init (ftyp+moov) of the first segment used is
// sent once; then each part (moof+mdat) overlapping the range is copied
// with its sequence number renumbered and its tfdt base times moved onto
// the stream's timeline. Only the moof of one part is in memory at a time;
// the mdat is copied from the file through a small buffer.
//
// The stream's time 0 is the start of its first part: the last part at or
// before the requested start whose video begins with a key frame, so it
// starts up to a GOP early. Each segment is placed at its wall-clock Start
// from the index, so a gap in the recording is a jump in the timestamps,
// which players show as a still frame or skip. It ends with the last part
// that starts before the end of the range, so up to a part late.
//
// A segment whose tracks or codec parameters differ from the first one's
// (the camera changed resolution, or gained an audio track) ends the
// stream at its boundary, cleanly: the client asks again from there.
package playback

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/outpost-gw/outpost/recorder"
	"github.com/outpost-gw/outpost/recorder/index"
	"github.com/outpost-gw/outpost/recorder/segment"
)

// Errors of Write.
var (
	// ErrNoRecording: no segment has a part in the range.
	ErrNoRecording = errors.New("playback: nothing recorded in the range")
	// ErrPath: an index entry's file is not camera/…/name.mp4 inside the
	// recordings root; it was not opened.
	ErrPath = errors.New("playback: segment path refused")
)

// Write writes one fragmented MP4 stream of recs (one camera's segments,
// as index.List returns them) covering [start, start+dur) to w. root is the
// recordings root the recordings' File paths are relative to; each path is
// checked before it is opened, and opened through an os.Root, so neither
// "..", an absolute path nor a symlink reaches outside root. A segment file
// that no longer exists (retention removed it) is skipped like a gap.
//
// Nothing is written before the first part is found: an error then
// (ErrNoRecording, ErrPath, I/O) leaves w untouched; an error after it
// leaves the stream cut short.
func Write(ctx context.Context, w io.Writer, root string, recs []index.Recording, start time.Time, dur time.Duration) error {
	return write(ctx, w, root, recs, start, dur, nil)
}

// write is Write; began, if set, is called with the wall clock of the
// stream's time 0 just before the first byte is written.
func write(ctx context.Context, w io.Writer, root string, recs []index.Recording, start time.Time, dur time.Duration, began func(time.Time)) error {
	if dur <= 0 {
		return fmt.Errorf("playback: duration %v", dur)
	}
	recs = slices.Clone(recs)
	slices.SortStableFunc(recs, func(a, b index.Recording) int { return a.Start.Compare(b.Start) })
	for _, r := range recs {
		if err := checkPath(r, recs[0].Camera); err != nil {
			return err
		}
	}
	dir, err := os.OpenRoot(root)
	if err != nil {
		return fmt.Errorf("playback: %w", err)
	}
	defer dir.Close()
	s := &stream{w: w, start: start, end: start.Add(dur), began: began, buf: make([]byte, 64<<10)}
	for _, r := range recs {
		if !r.Start.Before(s.end) {
			break
		}
		if !r.End().After(start) {
			continue
		}
		done, err := s.file(ctx, dir, r)
		if err != nil {
			return fmt.Errorf("playback: %s: %w", r.File, err)
		}
		if done {
			break
		}
	}
	if s.head == nil {
		return ErrNoRecording
	}
	return nil
}

// checkPath refuses a recording's File unless it is a clean, relative,
// local path camera/…/name.mp4 under the camera's own directory.
func checkPath(r index.Recording, camera string) error {
	p := r.File
	first, _, _ := strings.Cut(p, "/")
	if r.Camera != camera || !segment.ValidCamera(r.Camera) || first != r.Camera || !filepath.IsLocal(p) ||
		filepath.Clean(p) != p || !strings.HasSuffix(p, ".mp4") || strings.ContainsAny(p, "\\\x00") {
		return fmt.Errorf("%w: %q of camera %q", ErrPath, p, r.Camera)
	}
	return nil
}

// stream is the output under way.
type stream struct {
	w          io.Writer
	start, end time.Time
	began      func(time.Time)
	buf        []byte

	head    *header              // of the first segment used; nil until a part is out
	origin  time.Time            // wall clock of time 0
	seq     uint32               // parts written
	off     int64                // bytes written
	ends    map[*trackInfo]int64 // per track, in its time scale
	leadEnd time.Duration        // of the lead (else first) track
}

// file streams one segment file; done reports that the stream is over.
func (s *stream) file(ctx context.Context, dir *os.Root, r index.Recording) (done bool, err error) {
	fi, err := dir.Stat(r.File)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err == nil && !fi.Mode().IsRegular() {
		err = errors.New("not a regular file")
	}
	if err != nil {
		return false, err
	}
	f, err := dir.Open(r.File)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return false, fmt.Errorf("not a regular file (%w)", err)
	}
	return s.segment(ctx, f, fi.Size(), r.Start)
}

// segment streams the parts of one segment file of the given size that
// starts at wall clock segStart.
func (s *stream) segment(ctx context.Context, f io.ReaderAt, size int64, segStart time.Time) (done bool, err error) {
	h, err := readInit(f, size)
	if err != nil {
		return false, err
	}
	if s.head != nil && !bytes.Equal(h.sig, s.head.sig) {
		return true, nil // new tracks or codec parameters: a new init would be needed
	}
	first := int64(len(h.raw))
	if s.head == nil {
		// Start at the last key part at or before start, and only if the
		// segment reaches past start.
		for off := first; ; {
			p, err := readPart(f, off, size, h)
			if p == nil || err != nil {
				return false, err // no part reaches start
			}
			if segStart.Add(p.start).After(s.start) {
				break
			}
			if p.key {
				first = p.off
			}
			if segStart.Add(p.end).After(s.start) {
				break
			}
			off = p.next
		}
	}
	var shift time.Duration // from the segment's timeline to the stream's
	for off, n := first, 0; ; n++ {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		p, err := readPart(f, off, size, h)
		if p == nil || err != nil {
			return false, err
		}
		if !segStart.Add(p.start).Before(s.end) {
			return true, nil
		}
		if s.head == nil {
			if err := s.begin(h, segStart.Add(p.start)); err != nil {
				return false, err
			}
		}
		if n == 0 {
			shift = segStart.Sub(s.origin)
			if s.seq > 0 {
				shift = max(shift, s.leadEnd) // never overlap what is out
			}
		}
		if err := s.part(f, p, shift); err != nil {
			return false, err
		}
		off = p.next
	}
}

// begin writes the init and fixes the stream's time 0.
func (s *stream) begin(h *header, origin time.Time) error {
	s.head, s.origin, s.ends = h, origin, map[*trackInfo]int64{}
	if s.began != nil {
		s.began(origin)
	}
	return s.put(h.raw)
}

// part writes one part, its moof patched: sequence number, tfdt moved by
// shift (but never before the end of the track's previous part: wall
// clocks are stamped to the millisecond, and audio may overhang), and an
// absolute base_data_offset made to point into the output.
func (s *stream) part(f io.ReaderAt, p *part, shift time.Duration) error {
	s.seq++
	binary.BigEndian.PutUint32(p.seq, s.seq)
	for _, tf := range p.trafs {
		t := s.head.track(tf.t.id) // same ID, same track: the inits are equal
		base := max(int64(tf.base)+recorder.Ticks(shift, int(t.scale)), s.ends[t])
		if tf.tfdt[0] == 1 {
			binary.BigEndian.PutUint64(tf.tfdt[4:], uint64(base))
		} else if base > math.MaxUint32 {
			return fmt.Errorf("tfdt %d does not fit version 0", base)
		} else {
			binary.BigEndian.PutUint32(tf.tfdt[4:], uint32(base))
		}
		if tf.bdo != nil {
			binary.BigEndian.PutUint64(tf.bdo, binary.BigEndian.Uint64(tf.bdo)-uint64(p.off)+uint64(s.off))
		}
		s.ends[t] = base + int64(tf.dur)
		if t == s.head.lead || (s.head.lead == nil && t == s.head.tracks[0]) {
			s.leadEnd = tickDuration(uint64(s.ends[t]), t.scale)
		}
	}
	if err := s.put(p.moof); err != nil {
		return err
	}
	n, err := io.CopyBuffer(writerOnly{s.w}, io.NewSectionReader(f, p.mdat, p.next-p.mdat), s.buf)
	s.off += n
	if err == nil && n != p.next-p.mdat {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func (s *stream) put(b []byte) error {
	n, err := s.w.Write(b)
	s.off += int64(n)
	return err
}

// writerOnly hides a ReaderFrom, so that CopyBuffer uses its buffer.
type writerOnly struct{ io.Writer }
