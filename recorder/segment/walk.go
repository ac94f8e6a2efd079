package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/outpost-gw/outpost/recorder"
)

// ErrUnrecoverable reports a segment file without a complete ftyp+moov or
// without a single complete part: nothing in it can be played.
var ErrUnrecoverable = errors.New("segment: unrecoverable")

// Bounds on what the walker reads into memory; our own boxes are far
// smaller (moov < 2 KB, moof < 10 KB for a second of 60 fps video).
const (
	maxFtyp    = 4 << 10
	maxMoov    = 1 << 20
	maxMoof    = 4 << 20
	maxTracks  = 16
	maxSamples = 1 << 20 // per trun
)

// errStop ends a walk at a box that is incomplete or malformed.
var errStop = errors.New("segment: truncated or malformed box")

type walkTrack struct {
	id        uint32
	timescale uint32
	codec     recorder.Codec
	defDur    uint32 // trex defaults
	defSize   uint32
	end       uint64 // largest tfdt+durations seen, in ticks
}

type walkResult struct {
	tracks []*walkTrack
	good   int64 // end of the last complete part (or of moov)
	parts  int
}

func (r *walkResult) duration() time.Duration {
	var d time.Duration
	for _, t := range r.tracks {
		d = max(d, tickDuration(t.end, t.timescale))
	}
	return d
}

func (r *walkResult) codecs() []recorder.Codec {
	var c []recorder.Codec
	for _, t := range r.tracks {
		c = append(c, t.codec)
	}
	return c
}

type boxHeader struct {
	typ       string
	off, size int64 // size includes the header
	hdr       int64
}

func (b boxHeader) end() int64 { return b.off + b.size }

// readHeader reads the box header at off; errStop if it is cut short, runs
// past limit, or is invalid (size 0 "to end of file" is not accepted).
func readHeader(r io.ReaderAt, off, limit int64) (boxHeader, error) {
	var b [16]byte
	if limit-off < 8 {
		return boxHeader{}, errStop
	}
	n, err := r.ReadAt(b[:min(16, limit-off)], off)
	if n < 8 {
		if err != nil && !errors.Is(err, io.EOF) {
			return boxHeader{}, err
		}
		return boxHeader{}, errStop
	}
	h := boxHeader{typ: string(b[4:8]), off: off, size: int64(binary.BigEndian.Uint32(b[:4])), hdr: 8}
	if h.size == 1 {
		if n < 16 {
			return boxHeader{}, errStop
		}
		s := binary.BigEndian.Uint64(b[8:16])
		if s > 1<<62 {
			return boxHeader{}, errStop
		}
		h.size, h.hdr = int64(s), 16
	}
	if h.size < h.hdr || h.size > limit-off {
		return boxHeader{}, errStop
	}
	return h, nil
}

// BoxHeader is an ISO-BMFF box header as ReadBoxHeader reads it.
type BoxHeader struct {
	Type           string
	Off, Size, Hdr int64 // Size includes the Hdr bytes of the header
}

// ErrBoxCut is ReadBoxHeader's answer for a box that is cut short, runs
// past the limit or is invalid: the usable content ends before it.
var ErrBoxCut = errStop

// ReadBoxHeader reads the box header at off, within limit (the one reader
// of box headers, for this package and for playback).
func ReadBoxHeader(r io.ReaderAt, off, limit int64) (BoxHeader, error) {
	h, err := readHeader(r, off, limit)
	return BoxHeader{Type: h.typ, Off: h.off, Size: h.size, Hdr: h.hdr}, err
}

// readBox reads a whole box of at most maxSize bytes.
func readBox(r io.ReaderAt, h boxHeader, maxSize int64) ([]byte, error) {
	if h.size > maxSize {
		return nil, errStop
	}
	buf := make([]byte, h.size)
	if _, err := r.ReadAt(buf, h.off); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errStop
		}
		return nil, err
	}
	return buf, nil
}

// children iterates over the boxes inside buf[start:].
func children(buf []byte, start int, fn func(typ string, body []byte) error) error {
	for off := start; off < len(buf); {
		if len(buf)-off < 8 {
			return errStop
		}
		size := int(binary.BigEndian.Uint32(buf[off:]))
		if size < 8 || size > len(buf)-off {
			return errStop
		}
		if err := fn(string(buf[off+4:off+8]), buf[off+8:off+size]); err != nil {
			return err
		}
		off += size
	}
	return nil
}

// walk reads a segment file of the given size: ftyp, moov, then moof+mdat
// pairs, stopping at the first incomplete or malformed box. I/O errors are
// returned as such; a file whose header is not intact gives
// ErrUnrecoverable. It reads at most a few MB at once, whatever the input.
func walk(r io.ReaderAt, size int64) (*walkResult, error) {
	ftyp, err := readHeader(r, 0, size)
	if err != nil || ftyp.typ != "ftyp" || ftyp.size > maxFtyp {
		return nil, headerErr(err, "no ftyp")
	}
	moovH, err := readHeader(r, ftyp.end(), size)
	if err != nil || moovH.typ != "moov" || moovH.hdr != 8 {
		return nil, headerErr(err, "no complete moov")
	}
	moov, err := readBox(r, moovH, maxMoov)
	if err != nil {
		return nil, headerErr(err, "moov too large")
	}
	res := &walkResult{good: moovH.end()}
	if err := parseMoov(moov, res); err != nil {
		return nil, fmt.Errorf("%w: moov: %w", ErrUnrecoverable, err)
	}
	for off := res.good; off < size; {
		h, err := readHeader(r, off, size)
		if err != nil {
			return res, ioErr(err)
		}
		switch h.typ {
		case "moof":
			m, err := readHeader(r, h.end(), size)
			if err != nil || m.typ != "mdat" || h.hdr != 8 {
				return res, ioErr(err)
			}
			moof, err := readBox(r, h, maxMoof)
			if err != nil {
				return res, ioErr(err)
			}
			ends, err := parseMoof(moof, h.off, m.off+m.hdr, m.end(), res)
			if err != nil {
				return res, nil
			}
			for t, e := range ends {
				t.end = max(t.end, e)
			}
			res.parts++
			off = m.end()
		case "free", "skip", "sidx", "styp", "prft", "emsg", "mfra", "udta":
			off = h.end()
		default:
			return res, nil
		}
		res.good = off
	}
	return res, nil
}

func headerErr(err error, what string) error {
	if err != nil && !errors.Is(err, errStop) {
		return err
	}
	return fmt.Errorf("%w: %s", ErrUnrecoverable, what)
}

// ioErr keeps real I/O errors and turns a stop into the end of the walk.
func ioErr(err error) error {
	if err == nil || errors.Is(err, errStop) {
		return nil
	}
	return err
}

func parseMoov(moov []byte, res *walkResult) error {
	var mvex bool
	err := children(moov, 8, func(typ string, body []byte) error {
		switch typ {
		case "trak":
			if len(res.tracks) >= maxTracks {
				return errors.New("too many tracks")
			}
			t, err := parseTrak(body)
			if err != nil {
				return err
			}
			for _, o := range res.tracks {
				if o.id == t.id {
					return fmt.Errorf("track %d twice", t.id)
				}
			}
			res.tracks = append(res.tracks, t)
		case "mvex":
			mvex = true
			return children(body, 0, func(typ string, b []byte) error {
				if typ != "trex" {
					return nil
				}
				if len(b) < 24 {
					return errStop
				}
				for _, t := range res.tracks {
					if t.id == binary.BigEndian.Uint32(b[4:]) {
						t.defDur, t.defSize = binary.BigEndian.Uint32(b[12:]), binary.BigEndian.Uint32(b[16:])
					}
				}
				return nil
			})
		}
		return nil
	})
	switch {
	case err != nil:
		return err
	case len(res.tracks) == 0:
		return errors.New("no tracks")
	case !mvex:
		return errors.New("not fragmented (no mvex)")
	}
	return nil
}

func parseTrak(trak []byte) (*walkTrack, error) {
	t := &walkTrack{}
	var walkIn func(b []byte) error
	walkIn = func(b []byte) error {
		return children(b, 0, func(typ string, body []byte) error {
			switch typ {
			case "mdia", "minf", "stbl":
				return walkIn(body)
			case "tkhd":
				off := 12 // version 0: flags, creation and modification times
				if len(body) > 0 && body[0] == 1 {
					off = 20
				}
				if len(body) < off+4 {
					return errStop
				}
				t.id = binary.BigEndian.Uint32(body[off:])
			case "mdhd":
				off := 12
				if len(body) > 0 && body[0] == 1 {
					off = 20
				}
				if len(body) < off+4 {
					return errStop
				}
				t.timescale = binary.BigEndian.Uint32(body[off:])
			case "stsd":
				if len(body) < 16 {
					return errStop
				}
				t.codec = codecOf(string(body[12:16]))
			}
			return nil
		})
	}
	if err := walkIn(trak); err != nil {
		return nil, err
	}
	if t.id == 0 || t.timescale == 0 || t.codec == "" {
		return nil, fmt.Errorf("track %d: timescale %d, codec %q", t.id, t.timescale, t.codec)
	}
	return t, nil
}

// codecOf maps a sample entry type to the recorder's codec names; "ipcm"
// is how the Writer stores G711.
func codecOf(fourcc string) recorder.Codec {
	switch fourcc {
	case "avc1", "avc3":
		return recorder.H264
	case "hvc1", "hev1":
		return recorder.H265
	case "mp4a":
		return recorder.AAC
	case "Opus":
		return recorder.Opus
	case "ipcm":
		return recorder.G711
	}
	return recorder.Codec(fourcc)
}

// parseMoof checks a moof against the mdat payload [dataStart, dataEnd) that
// follows it and returns each track's end time: tfdt plus sample durations.
func parseMoof(moof []byte, moofOff, dataStart, dataEnd int64, res *walkResult) (map[*walkTrack]uint64, error) {
	ends := map[*walkTrack]uint64{}
	err := children(moof, 8, func(typ string, traf []byte) error {
		if typ != "traf" {
			return nil
		}
		var (
			t              *walkTrack
			dts            uint64
			hasTime        bool
			base           = moofOff
			defDur, defSiz uint32
			cursor         = int64(-1)
		)
		return children(traf, 0, func(typ string, b []byte) error {
			switch typ {
			case "tfhd":
				if len(b) < 8 {
					return errStop
				}
				flags := binary.BigEndian.Uint32(b) & 0xFFFFFF
				id := binary.BigEndian.Uint32(b[4:])
				for _, wt := range res.tracks {
					if wt.id == id {
						t = wt
					}
				}
				if t == nil {
					return fmt.Errorf("unknown track %d", id)
				}
				defDur, defSiz = t.defDur, t.defSize
				p := 8
				for _, f := range []struct {
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
						v := binary.BigEndian.Uint64(b[p:])
						if v > 1<<62 {
							return errStop
						}
						base = int64(v)
					case 0x08:
						defDur = binary.BigEndian.Uint32(b[p:])
					case 0x10:
						defSiz = binary.BigEndian.Uint32(b[p:])
					}
					p += f.n
				}
			case "tfdt":
				if len(b) < 8 {
					return errStop
				}
				dts, hasTime = uint64(binary.BigEndian.Uint32(b[4:])), true
				if b[0] == 1 {
					if len(b) < 12 {
						return errStop
					}
					dts = binary.BigEndian.Uint64(b[4:])
				}
			case "trun":
				if t == nil {
					return errors.New("trun before tfhd")
				}
				if !hasTime {
					dts, hasTime = t.end, true
				}
				if len(b) < 8 {
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
				if flags&0x04 != 0 {
					p += 4
				}
				per := 0
				for _, bit := range []uint32{0x100, 0x200, 0x400, 0x800} {
					if flags&bit != 0 {
						per += 4
					}
				}
				if count > maxSamples || int64(len(b)-p) < count*int64(per) || p > len(b) {
					return errStop
				}
				var dur, size uint64
				if flags&0x100 == 0 {
					dur = uint64(count) * uint64(defDur)
				}
				if flags&0x200 == 0 {
					size = uint64(count) * uint64(defSiz)
				}
				for range count {
					if flags&0x100 != 0 {
						dur += uint64(binary.BigEndian.Uint32(b[p:]))
						p += 4
					}
					if flags&0x200 != 0 {
						size += uint64(binary.BigEndian.Uint32(b[p:]))
						p += 4
					}
					if flags&0x400 != 0 {
						p += 4
					}
					if flags&0x800 != 0 {
						p += 4
					}
				}
				if cursor < dataStart || cursor > dataEnd || size > uint64(dataEnd-cursor) || dts > 1<<62 {
					return errStop
				}
				cursor += int64(size)
				dts += dur
				ends[t] = max(ends[t], dts)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return ends, nil
}
