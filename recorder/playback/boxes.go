package playback

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/outpost-gw/outpost/recorder/segment"
)

// Bounds on what is read into memory at once, as segment's walker has them:
// our own moov is < 2 KB, a moof < 10 KB per second of 60 fps video. The
// mdat is never read whole: it is copied through a small buffer.
const (
	maxFtyp    = 4 << 10
	maxMoov    = 1 << 20
	maxMoof    = 4 << 20
	maxTracks  = 16
	maxSamples = 1 << 20 // per trun
)

// errStop marks a box that is cut short or malformed: the segment's
// usable content ends before it.
var errStop = errors.New("truncated or malformed box")

const sampleNonSync = 1 << 16 // sample_is_non_sync_sample in sample flags

type box struct {
	typ       string
	off, size int64 // size includes the header
	hdr       int64
}

func (b box) end() int64 { return b.off + b.size }

// readHeader reads the box header at off (segment.ReadBoxHeader); errStop
// if it is cut short, runs past limit or is invalid (size 0, "to the end
// of the file", is refused).
func readHeader(r io.ReaderAt, off, limit int64) (box, error) {
	h, err := segment.ReadBoxHeader(r, off, limit)
	if errors.Is(err, segment.ErrBoxCut) {
		return box{}, errStop
	}
	if err != nil {
		return box{}, err
	}
	return box{typ: h.Type, off: h.Off, size: h.Size, hdr: h.Hdr}, nil
}

// readAll reads the bytes [off, end), which lie within the file.
func readAll(r io.ReaderAt, off, end int64) ([]byte, error) {
	buf := make([]byte, end-off)
	if _, err := r.ReadAt(buf, off); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errStop
		}
		return nil, err
	}
	return buf, nil
}

// children calls fn for each box in buf (32-bit sizes only, as in moov and
// moof), with the whole box and its body; both alias buf.
func children(buf []byte, fn func(typ string, whole, body []byte) error) error {
	for off := 0; off < len(buf); {
		if len(buf)-off < 8 {
			return errStop
		}
		size := int(binary.BigEndian.Uint32(buf[off:]))
		if size < 8 || size > len(buf)-off {
			return errStop
		}
		if err := fn(string(buf[off+4:off+8]), buf[off:off+size], buf[off+8:off+size]); err != nil {
			return err
		}
		off += size
	}
	return nil
}

type trackInfo struct {
	id, scale       uint32
	video           bool
	defDur, defSize uint32 // trex defaults
	defFlags        uint32
}

// header is a segment's init: ftyp+moov as stored, and what parts need.
type header struct {
	raw    []byte // ftyp+moov, written at the start of the output
	tracks []*trackInfo
	lead   *trackInfo // the first video track; nil: audio only
	// sig is moov without mvhd: two segments with equal sig have the same
	// tracks and codec parameters, so one init serves both.
	sig []byte
}

func (h *header) track(id uint32) *trackInfo {
	for _, t := range h.tracks {
		if t.id == id {
			return t
		}
	}
	return nil
}

// readInit reads and checks the ftyp and moov at the start of a segment.
func readInit(r io.ReaderAt, size int64) (*header, error) {
	ftyp, err := readHeader(r, 0, size)
	if err == nil && (ftyp.typ != "ftyp" || ftyp.size > maxFtyp) {
		err = errors.New("no ftyp")
	}
	if err != nil {
		return nil, err
	}
	moov, err := readHeader(r, ftyp.end(), size)
	if err == nil && (moov.typ != "moov" || moov.hdr != 8 || moov.size > maxMoov) {
		err = errors.New("no moov")
	}
	if err != nil {
		return nil, err
	}
	h := &header{}
	if h.raw, err = readAll(r, 0, moov.end()); err != nil {
		return nil, err
	}
	var mvex bool
	err = children(h.raw[ftyp.size+8:], func(typ string, whole, body []byte) error {
		if typ != "mvhd" {
			h.sig = append(h.sig, whole...)
		}
		switch typ {
		case "trak":
			t, err := parseTrak(body)
			if err != nil {
				return err
			}
			if len(h.tracks) >= maxTracks || h.track(t.id) != nil {
				return fmt.Errorf("track %d twice or too many tracks", t.id)
			}
			h.tracks = append(h.tracks, t)
			if t.video && h.lead == nil {
				h.lead = t
			}
		case "mvex":
			mvex = true
			return children(body, func(typ string, _, b []byte) error {
				if typ != "trex" {
					return nil
				}
				if len(b) < 24 {
					return errStop
				}
				if t := h.track(binary.BigEndian.Uint32(b[4:])); t != nil {
					t.defDur, t.defSize, t.defFlags = binary.BigEndian.Uint32(b[12:]), binary.BigEndian.Uint32(b[16:]), binary.BigEndian.Uint32(b[20:])
				}
				return nil
			})
		}
		return nil
	})
	switch {
	case err != nil:
		return nil, fmt.Errorf("moov: %w", err)
	case len(h.tracks) == 0 || !mvex:
		return nil, errors.New("moov: no tracks, or not fragmented")
	}
	return h, nil
}

// parseTrak reads a track's ID (tkhd), time scale (mdhd) and kind (hdlr).
func parseTrak(trak []byte) (*trackInfo, error) {
	t := &trackInfo{}
	var walk func(b []byte) error
	walk = func(b []byte) error {
		return children(b, func(typ string, _, body []byte) error {
			off := 12 // tkhd, mdhd version 0: flags, creation and modification times
			if len(body) > 0 && body[0] == 1 {
				off = 20
			}
			switch typ {
			case "mdia":
				return walk(body)
			case "tkhd", "mdhd":
				if len(body) < off+4 {
					return errStop
				}
				if v := binary.BigEndian.Uint32(body[off:]); typ == "tkhd" {
					t.id = v
				} else {
					t.scale = v
				}
			case "hdlr":
				if len(body) < 12 {
					return errStop
				}
				t.video = string(body[8:12]) == "vide"
			}
			return nil
		})
	}
	if err := walk(trak); err != nil {
		return nil, err
	}
	if t.id == 0 || t.scale == 0 {
		return nil, fmt.Errorf("track %d: time scale %d", t.id, t.scale)
	}
	return t, nil
}

// part is one moof+mdat. moof is held in memory (it is patched on the way
// out); the mdat stays on disk.
type part struct {
	off, next  int64  // moof offset; end of the mdat
	moof       []byte // the whole box
	mdat       int64  // offset of the mdat box
	seq        []byte // mfhd sequence number, aliasing moof
	trafs      []traf
	start, end time.Duration // earliest tfdt, latest end over the tracks
	key        bool          // the lead track starts with a sync sample
}

type traf struct {
	t    *trackInfo
	tfdt []byte // tfdt body, aliasing moof
	bdo  []byte // tfhd base_data_offset, aliasing moof; nil if absent
	base uint64 // tfdt
	dur  uint64 // sum of sample durations
}

// readPart reads the part at off (skipping free space and the like); nil
// without error at the end of the segment or at a box that is cut short or
// malformed, where Repair would cut the file.
func readPart(r io.ReaderAt, off, size int64, h *header) (*part, error) {
	var moof box
	for {
		b, err := readHeader(r, off, size)
		if err != nil {
			return nil, ioErr(err)
		}
		if b.typ == "moof" {
			moof = b
			break
		}
		switch b.typ {
		case "free", "skip", "sidx", "styp", "prft", "emsg", "mfra", "udta":
			off = b.end()
		default:
			return nil, nil
		}
	}
	mdat, err := readHeader(r, moof.end(), size)
	if err != nil || mdat.typ != "mdat" || moof.hdr != 8 || moof.size > maxMoof {
		return nil, ioErr(err)
	}
	p := &part{off: moof.off, next: mdat.end(), mdat: mdat.off}
	if p.moof, err = readAll(r, moof.off, moof.end()); err != nil {
		return nil, ioErr(err)
	}
	data := [2]int64{mdat.off + mdat.hdr, mdat.end()}
	err = children(p.moof[8:], func(typ string, _, body []byte) error {
		switch typ {
		case "mfhd":
			if len(body) < 8 {
				return errStop
			}
			p.seq = body[4:8]
		case "traf":
			tf, key, err := parseTraf(body, h, moof.off, data)
			if err != nil {
				return err
			}
			if tf.t == h.lead {
				p.key = key
			}
			p.trafs = append(p.trafs, tf)
		}
		return nil
	})
	if err != nil || p.seq == nil || len(p.trafs) == 0 {
		return nil, nil
	}
	if h.lead == nil {
		p.key = true
	}
	p.start = time.Duration(1<<63 - 1)
	for _, tf := range p.trafs {
		p.start = min(p.start, tickDuration(tf.base, tf.t.scale))
		p.end = max(p.end, tickDuration(tf.base+tf.dur, tf.t.scale))
	}
	return p, nil
}

// parseTraf reads a traf's track, tfdt and sample durations, checks that
// its samples lie in the mdat's payload data, and reports whether its
// first sample is a sync sample.
func parseTraf(b []byte, h *header, moofOff int64, data [2]int64) (tf traf, key bool, err error) {
	var defDur, defSize, defFlags uint32
	base, cursor, runs := moofOff, int64(-1), 0
	err = children(b, func(typ string, _, b []byte) error {
		switch typ {
		case "tfhd":
			if len(b) < 8 || tf.t != nil {
				return errStop
			}
			flags := binary.BigEndian.Uint32(b) & 0xFFFFFF
			if tf.t = h.track(binary.BigEndian.Uint32(b[4:])); tf.t == nil {
				return errStop
			}
			defDur, defSize, defFlags = tf.t.defDur, tf.t.defSize, tf.t.defFlags
			p := 8
			for _, f := range [...]struct {
				bit uint32
				n   int
			}{{0x01, 8}, {0x02, 4}, {0x08, 4}, {0x10, 4}, {0x20, 4}} {
				if flags&f.bit == 0 {
					continue
				}
				if len(b) < p+f.n {
					return errStop
				}
				switch f.bit {
				case 0x01:
					tf.bdo = b[p : p+8]
					if base = int64(binary.BigEndian.Uint64(tf.bdo)); base < 0 || base > 1<<62 {
						return errStop
					}
				case 0x08:
					defDur = binary.BigEndian.Uint32(b[p:])
				case 0x10:
					defSize = binary.BigEndian.Uint32(b[p:])
				case 0x20:
					defFlags = binary.BigEndian.Uint32(b[p:])
				}
				p += f.n
			}
		case "tfdt":
			if len(b) < 8 || (b[0] == 1 && len(b) < 12) || tf.t == nil {
				return errStop
			}
			tf.tfdt, tf.base = b, uint64(binary.BigEndian.Uint32(b[4:]))
			if b[0] == 1 {
				tf.base = binary.BigEndian.Uint64(b[4:])
			}
		case "trun":
			if len(b) < 8 || tf.tfdt == nil || tf.base > 1<<62 {
				return errStop
			}
			flags := binary.BigEndian.Uint32(b) & 0xFFFFFF
			count := int64(binary.BigEndian.Uint32(b[4:]))
			p := 8
			if cursor < 0 {
				cursor = base
			}
			if flags&0x01 != 0 {
				if len(b) < p+4 {
					return errStop
				}
				cursor = base + int64(int32(binary.BigEndian.Uint32(b[p:])))
				p += 4
			}
			first := defFlags
			if flags&0x04 != 0 {
				if len(b) < p+4 {
					return errStop
				}
				first, p = binary.BigEndian.Uint32(b[p:]), p+4 // first_sample_flags
			}
			per := 4 * countBits(flags&0xF00)
			if count > maxSamples || int64(len(b)-p) < count*int64(per) {
				return errStop
			}
			if runs++; runs == 1 && count > 0 {
				if flags&0x04 == 0 && flags&0x400 != 0 {
					first = binary.BigEndian.Uint32(b[p+4*countBits(flags&0x300):])
				}
				key = first&sampleNonSync == 0
			}
			var size uint64
			if flags&0x100 == 0 {
				tf.dur += uint64(count) * uint64(defDur)
			}
			if flags&0x200 == 0 {
				size = uint64(count) * uint64(defSize)
			}
			for range count {
				if flags&0x100 != 0 {
					tf.dur += uint64(binary.BigEndian.Uint32(b[p:]))
				}
				if flags&0x200 != 0 {
					size += uint64(binary.BigEndian.Uint32(b[p+4*countBits(flags&0x100):]))
				}
				p += per
			}
			if cursor < data[0] || cursor > data[1] || size > uint64(data[1]-cursor) || tf.dur > 1<<62 {
				return errStop
			}
			cursor += int64(size)
		}
		return nil
	})
	if err == nil && (tf.t == nil || tf.tfdt == nil || runs == 0) {
		err = errStop
	}
	return tf, key, err
}

func countBits(v uint32) int {
	n := 0
	for ; v != 0; v &= v - 1 {
		n++
	}
	return n
}

// ioErr keeps real I/O errors and turns errStop into "no more parts".
func ioErr(err error) error {
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

// tickDuration converts ticks to a Duration, saturating.
func tickDuration(t uint64, scale uint32) time.Duration {
	s, r := t/uint64(scale), t%uint64(scale)
	if s > uint64(time.Duration(1<<62)/time.Second) {
		return time.Duration(1<<63 - 1)
	}
	return time.Duration(s)*time.Second + time.Duration(r*uint64(time.Second)/uint64(scale))
}
