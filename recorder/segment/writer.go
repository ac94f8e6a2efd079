// Package segment writes one camera's stream to crash-safe fragmented MP4
// segment files, and repairs them after a power cut.
//
// A segment is one file, Dir/<camera>/<YYYY-MM-DD>/<start>.mp4, where start
// is the UTC wall clock of its first sample (20261122T103000.123Z). It holds
// the init segment (ftyp, moov) followed by parts (moof+mdat) of about
// PartDuration each; every part is appended in one write and fsync'd, and
// the directory is fsync'd when the file is created, so a power cut loses at
// most the part being written. Repair cuts a torn tail off at start-up.
// Segments start on a video key frame and are cut at the first key frame
// after SegmentDuration, when the parameter sets change, and at End.
package segment

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/g711"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"

	"github.com/outpost-gw/outpost/internal/atomicfile"
	"github.com/outpost-gw/outpost/recorder"
)

// Errors of the Writer.
var (
	ErrConfig     = errors.New("segment: invalid config")
	ErrNoTracks   = errors.New("segment: no recordable track")
	ErrNotStarted = errors.New("segment: Write before Start")
)

const (
	// maxGap is the largest DTS step within a track that is taken as
	// continuous; a larger jump (or any step back) ends the segment.
	maxGap = 10 * time.Second
	// maxPartBytes flushes a part early, bounding memory and loss.
	maxPartBytes = 16 << 20
	// maxDrift is how far a segment's start computed from the previous
	// segment of the session may be from the wall clock before the wall
	// clock is taken instead (a camera clock running fast or slow).
	maxDrift = time.Second
	// stampLayout names a segment file after its start; dayLayout its folder.
	stampLayout = "20060102T150405.000Z"
	dayLayout   = "2006-01-02"
)

var cameraRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// ValidCamera reports whether id is a camera ID the writer accepts (and
// so a safe folder name): ^[a-z0-9][a-z0-9_-]{0,63}$.
func ValidCamera(id string) bool { return cameraRE.MatchString(id) }

// Config configures a Writer.
type Config struct {
	// Dir is the recordings root: the camera's segments go to
	// Dir/<Camera>/<YYYY-MM-DD>/. Created if missing.
	Dir string
	// Camera names the camera's folder; ^[a-z0-9][a-z0-9_-]{0,63}$.
	Camera string
	// SegmentDuration is the target length of a segment (default 60 s); the
	// cut happens at the first key frame after it.
	SegmentDuration time.Duration
	// PartDuration is how much media is buffered before it is appended and
	// fsync'd (default 1 s): the most a power cut loses.
	PartDuration time.Duration
	// Now stamps samples whose Received is zero (default time.Now).
	Now func() time.Time
	// Logger gets segment opens/closes (debug), dropped tracks and
	// discontinuities (warn). Default: discard.
	Logger *slog.Logger
	// OnSegment, if set, is called (with the Writer's lock held; do not
	// call back into the Writer) when a segment file is closed.
	OnSegment func(SegmentInfo)
}

// SegmentInfo describes a closed or recovered segment file, for the index.
type SegmentInfo struct {
	Camera   string
	Path     string
	Start    time.Time     // wall clock of the first sample, UTC, ms precision
	Duration time.Duration // of the longest track
	Bytes    int64         // file size
	Parts    int
	// Codecs of the tracks in file order. G711 is stored as 16-bit LPCM
	// ("ipcm") and reported as G711.
	Codecs []recorder.Codec
	// Trimmed is what Repair cut off a torn tail (0 from the Writer).
	Trimmed int64
}

// Stats are a Writer's counters since New.
type Stats struct {
	Segments, Parts, Bytes int64
	// Dropped counts samples not recorded: before the first key frame,
	// out-of-range timestamps, unusable payloads.
	Dropped int64
	// SyncTotal and SyncMax measure the fsync of each part.
	SyncTotal, SyncMax time.Duration
}

// Writer records one camera; it implements recorder.Sink. Its methods may
// be called from several goroutines. Writes (and fsyncs) happen inside
// Write, so a slow disk slows the caller down.
type Writer struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	tracks []*track // by recorder track index; nil: not recorded
	kept   []*track // in file order
	lead   *track   // cuts segments and parts: the first video track
	seg    *openSegment
	stats  Stats
	noSync bool // benchmarks only
}

var _ recorder.Sink = (*Writer)(nil)

// New validates cfg and returns a Writer.
func New(cfg Config) (*Writer, error) {
	if !cameraRE.MatchString(cfg.Camera) {
		return nil, fmt.Errorf("%w: camera id %q", ErrConfig, cfg.Camera)
	}
	if cfg.Dir == "" || cfg.SegmentDuration < 0 || cfg.PartDuration < 0 {
		return nil, fmt.Errorf("%w: dir %q, durations %v/%v", ErrConfig, cfg.Dir, cfg.SegmentDuration, cfg.PartDuration)
	}
	if cfg.SegmentDuration == 0 {
		cfg.SegmentDuration = time.Minute
	}
	if cfg.PartDuration == 0 {
		cfg.PartDuration = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Writer{cfg: cfg, log: log.With("camera", cfg.Camera)}, nil
}

// unit is one media sample on its way into a part.
type unit struct {
	dts, pts time.Duration
	key      bool
	payload  []byte
	received time.Time
	params   *[3][]byte // video: new parameter sets that take effect here
}

type track struct {
	src       recorder.Track
	id        int // fMP4 track ID
	timescale uint32
	frameLen  uint32    // audio: samples per frame when it cannot be read from the frame
	params    [3][]byte // video: VPS, SPS, PPS

	lastDTS time.Duration // of the last Write, for discontinuity checks
	seen    bool

	// In the open segment: the sample waiting for its successor (which
	// gives its duration), where it starts on the segment's timeline in
	// ticks, the previous duration, and the samples of the current part.
	pending *unit
	next    int64
	lastDur uint32
	flushed int64 // end of the samples durably written
	base    uint64
	samples []*fmp4.Sample
	// Video: the segment's reordering delay (PTS − DTS of its first key
	// frame), the latest presentation time appended and that of the
	// samples durably written, all in ticks on the segment's timeline.
	delay, maxPTS, flushedPTS int64
}

type openSegment struct {
	start     time.Time // of the file name and index: ms precision
	exact     time.Time // start before truncation
	startDTS  time.Duration
	init      []byte
	path      string
	f         *os.File
	size      int64 // bytes durably written
	parts     int
	partStart time.Duration
	partUnits int
	partBytes int
}

// Start begins a session with its tracks; a segment still open from the
// previous session is closed. H264/H265 are recorded, AAC, Opus and G711
// (as LPCM) too; other tracks are skipped with a warning.
func (w *Writer) Start(tracks []recorder.Track) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.endLocked(errors.New("new session"))
	w.tracks, w.kept, w.lead = make([]*track, len(tracks)), nil, nil
	for i, rt := range tracks {
		t, err := newTrack(rt)
		if err != nil {
			w.log.Warn("segment: track not recorded", "track", i, "codec", rt.Codec, "err", err)
			continue
		}
		t.id = len(w.kept) + 1
		w.tracks[i], w.kept = t, append(w.kept, t)
		if w.lead == nil && rt.Codec.IsVideo() {
			w.lead = t
		}
	}
	if len(w.kept) == 0 {
		w.tracks = nil
		return ErrNoTracks
	}
	if w.lead == nil {
		w.lead = w.kept[0]
	}
	return nil
}

func newTrack(rt recorder.Track) (*track, error) {
	t := &track{src: rt}
	switch rt.Codec {
	case recorder.H264, recorder.H265:
		t.timescale = 90000
		t.params = [3][]byte{rt.VPS, rt.SPS, rt.PPS}
	case recorder.AAC:
		var c mpeg4audio.AudioSpecificConfig
		if err := c.Unmarshal(rt.AACConfig); err != nil {
			return nil, fmt.Errorf("AAC config: %w", err)
		}
		t.timescale, t.frameLen = uint32(c.SampleRate), mpeg4audio.SamplesPerAccessUnit
		if c.FrameLengthFlag {
			t.frameLen = 960
		}
	case recorder.Opus:
		t.timescale, t.frameLen = 48000, 960
	case recorder.G711:
		if rt.ClockRate <= 0 {
			return nil, fmt.Errorf("G711 clock rate %d", rt.ClockRate)
		}
		t.timescale = uint32(rt.ClockRate)
	default:
		return nil, fmt.Errorf("codec %q not supported", rt.Codec)
	}
	if t.timescale == 0 || t.timescale > 1<<20 {
		return nil, fmt.Errorf("time scale %d", t.timescale)
	}
	return t, nil
}

func (t *track) channels() int { return max(t.src.Channels, 1) }

func (t *track) codec() (fmp4.Codec, error) {
	switch t.src.Codec {
	case recorder.H264:
		if t.params[1] == nil || t.params[2] == nil {
			return nil, errors.New("H264 SPS/PPS not known yet")
		}
		return &fmp4.CodecH264{SPS: t.params[1], PPS: t.params[2]}, nil
	case recorder.H265:
		if t.params[0] == nil || t.params[1] == nil || t.params[2] == nil {
			return nil, errors.New("H265 VPS/SPS/PPS not known yet")
		}
		return &fmp4.CodecH265{VPS: t.params[0], SPS: t.params[1], PPS: t.params[2]}, nil
	case recorder.AAC:
		var c mpeg4audio.AudioSpecificConfig
		if err := c.Unmarshal(t.src.AACConfig); err != nil {
			return nil, err
		}
		return &fmp4.CodecMPEG4Audio{Config: c}, nil
	case recorder.Opus:
		return &fmp4.CodecOpus{ChannelCount: t.channels()}, nil
	default: // G711
		return &fmp4.CodecLPCM{BitDepth: 16, SampleRate: int(t.timescale), ChannelCount: t.channels()}, nil
	}
}

// Write records a sample; it keeps no reference to s.AU. Samples before
// the first key frame of the lead track are dropped; a DTS that steps back
// or jumps more than 10 s ends the segment, and recording resumes at the
// next key frame. An error means the segment ended early (its durable
// parts are kept); the Writer carries on with the next key frame.
func (w *Writer) Write(s recorder.Sample) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.tracks == nil {
		return ErrNotStarted
	}
	if s.Track < 0 || s.Track >= len(w.tracks) {
		return fmt.Errorf("segment: sample of track %d, session has %d", s.Track, len(w.tracks))
	}
	t := w.tracks[s.Track]
	if t == nil {
		return nil
	}
	if t.seen && (s.DTS < t.lastDTS || s.DTS-t.lastDTS > maxGap) {
		w.log.Warn("segment: timestamp discontinuity", "track", s.Track, "from", t.lastDTS, "to", s.DTS)
		w.endLocked(errors.New("timestamp discontinuity"))
	}
	t.lastDTS, t.seen = s.DTS, true
	if s.Received.IsZero() {
		s.Received = w.cfg.Now()
	}
	if t.src.Codec.IsVideo() {
		payload, err := h264.AVCC(s.AU).Marshal()
		if err != nil || len(s.AU) == 0 {
			w.stats.Dropped++
			return nil
		}
		u := &unit{dts: s.DTS, pts: s.PTS, key: s.Key, payload: payload, received: s.Received}
		if s.Key {
			u.params = t.newParams(s.AU)
		}
		return w.push(t, u)
	}
	var off int64 // samples into the AU
	for _, fr := range s.AU {
		if len(fr) == 0 {
			continue
		}
		n := int64(t.frameLen)
		switch t.src.Codec {
		case recorder.G711:
			n = int64(len(fr) / t.channels())
			fr = g711LPCM(fr, t.src.MULaw)
		case recorder.Opus:
			if d := opus.PacketDuration2(fr); d > 0 {
				n = d
			}
			fallthrough
		default:
			fr = bytes.Clone(fr) // kept until the part is written
		}
		dts := s.DTS + time.Duration(off*int64(time.Second)/int64(t.timescale))
		if err := w.push(t, &unit{dts: dts, pts: dts, key: true, payload: fr, received: s.Received}); err != nil {
			return err
		}
		off += n
	}
	return nil
}

func g711LPCM(fr []byte, mulaw bool) []byte {
	if mulaw {
		var m g711.Mulaw
		m.Unmarshal(fr)
		return m
	}
	var a g711.Alaw
	a.Unmarshal(fr)
	return a
}

// newParams returns the parameter sets in a key frame's AU when they differ
// from the track's, else nil.
func (t *track) newParams(au [][]byte) *[3][]byte {
	p, changed := t.params, false
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		i := -1
		if t.src.Codec == recorder.H264 {
			switch n[0] & 0x1F {
			case 7:
				i = 1
			case 8:
				i = 2
			}
		} else if typ := (n[0] >> 1) & 0x3F; typ >= 32 && typ <= 34 {
			i = int(typ - 32) // VPS, SPS, PPS
		}
		if i >= 0 && !bytes.Equal(p[i], n) {
			p[i], changed = bytes.Clone(n), true
		}
	}
	if !changed {
		return nil
	}
	return &p
}

func (w *Writer) push(t *track, u *unit) error {
	if u.params != nil && t != w.lead {
		t.params = *u.params // a second video track: used from the next segment on
	}
	seg := w.seg
	if seg != nil && t == w.lead && u.key && (u.params != nil || u.dts-seg.startDTS >= w.cfg.SegmentDuration) {
		prev := *seg
		carry, err := w.closeSegment(&u.dts)
		if err := w.openSegment(t, u); err != nil {
			return err
		}
		// The same session goes on: the new segment starts where the old
		// one ended, not at the (jittery) receive time of its key frame,
		// unless the camera's clock has drifted away from ours.
		if at := prev.exact.Add(u.dts - prev.startDTS); (at.Sub(u.received)).Abs() <= maxDrift {
			w.seg.exact, w.seg.start = at.UTC(), at.UTC().Truncate(time.Millisecond)
		}
		for ct, cu := range carry {
			ct.pending, ct.next = cu, recorder.Ticks(cu.dts-u.dts, int(ct.timescale))
		}
		return err
	}
	if seg == nil {
		if t != w.lead || !u.key {
			w.stats.Dropped++
			return nil
		}
		return w.openSegment(t, u)
	}
	rel := u.dts - seg.startDTS
	if rel < 0 || (t != w.lead && rel > w.lead.lastDTS-seg.startDTS+maxGap) {
		w.stats.Dropped++
		return nil
	}
	if t.pending == nil { // the track's first sample in this segment
		if t.src.Codec.IsVideo() && !u.key {
			w.stats.Dropped++
			return nil
		}
		t.pending, t.next = u, recorder.Ticks(rel, int(t.timescale))
		return nil
	}
	w.appendPending(t, recorder.Ticks(rel, int(t.timescale)))
	t.pending = u
	limit := w.cfg.PartDuration
	if t != w.lead {
		limit *= 3 // the lead track has stalled
	}
	if u.dts-seg.partStart >= limit || seg.partBytes >= maxPartBytes {
		if err := w.flushPart(); err != nil {
			w.abort(err)
			return err
		}
	}
	return nil
}

// appendPending moves t's pending sample into the part, ending at tick end.
func (w *Writer) appendPending(t *track, end int64) {
	p := t.pending
	t.pending = nil
	dur := min(max(end-t.next, 1), 1<<31)
	if len(t.samples) == 0 {
		t.base = uint64(t.next)
	}
	off := int32(recorder.Ticks(p.pts-p.dts, int(t.timescale)))
	t.samples = append(t.samples, &fmp4.Sample{
		Duration:        uint32(dur),
		PTSOffset:       off,
		IsNonSyncSample: !p.key,
		Payload:         p.payload,
	})
	t.maxPTS = max(t.maxPTS, t.next+int64(off))
	t.next += dur
	t.lastDur = uint32(dur)
	if w.seg.partUnits == 0 {
		w.seg.partStart = p.dts
	}
	w.seg.partUnits++
	w.seg.partBytes += len(p.payload)
}

func (w *Writer) openSegment(t *track, u *unit) error {
	if u.params != nil {
		t.params = *u.params
	}
	init := fmp4.Init{}
	for _, kt := range w.kept {
		c, err := kt.codec()
		if err != nil {
			w.stats.Dropped++
			return fmt.Errorf("segment: track %d: %w", kt.id, err)
		}
		init.Tracks = append(init.Tracks, &fmp4.InitTrack{ID: kt.id, TimeScale: kt.timescale, Codec: c})
	}
	var buf seekablebuffer.Buffer
	if err := init.Marshal(&buf); err != nil {
		w.stats.Dropped++
		return fmt.Errorf("segment: init: %w", err)
	}
	w.seg = &openSegment{start: u.received.UTC().Truncate(time.Millisecond), exact: u.received.UTC(), startDTS: u.dts, init: buf.Bytes()}
	for _, kt := range w.kept {
		kt.pending, kt.samples, kt.lastDur, kt.next, kt.flushed = nil, nil, 0, 0, 0
		kt.delay, kt.maxPTS, kt.flushedPTS = 0, 0, 0
	}
	t.pending, t.next = u, 0
	if t.src.Codec.IsVideo() {
		t.delay = recorder.Ticks(u.pts-u.dts, int(t.timescale))
	}
	return nil
}

// closeSegment writes what is pending and closes the segment. With cut set
// (a key frame of the lead track at that DTS), the lead's last sample ends
// there and other tracks' pending samples at or after it are returned, to
// start the next segment; otherwise last durations are estimated.
func (w *Writer) closeSegment(cut *time.Duration) (map[*track]*unit, error) {
	seg := w.seg
	var carry map[*track]*unit
	for _, t := range w.kept {
		if t.pending == nil {
			continue
		}
		switch {
		case cut != nil && t == w.lead:
			w.appendPending(t, recorder.Ticks(*cut-seg.startDTS, int(t.timescale)))
		case cut != nil && t.pending.dts >= *cut:
			if carry == nil {
				carry = map[*track]*unit{}
			}
			carry[t], t.pending = t.pending, nil
		default:
			w.appendPending(t, t.next+t.estimate())
			if cut == nil {
				w.trimOrphans(t)
			}
		}
	}
	if err := w.flushPart(); err != nil {
		w.abort(err)
		return carry, err
	}
	w.finish()
	return carry, nil
}

// trimOrphans drops the last unwritten samples of a video track that
// cannot be shown in order: a session that ends between a P frame and
// the B-frames shown before it (never received) would otherwise leave a
// hole of those frames in the presentation. A prefix of the samples in
// decode order is complete when its presentation ends where its decode
// timeline ends, plus the reordering delay.
func (w *Writer) trimOrphans(t *track) {
	if t.delay <= 0 || len(t.samples) == 0 {
		return
	}
	dts, maxPTS, keep := int64(t.base), t.flushedPTS, -1
	for i, s := range t.samples {
		maxPTS = max(maxPTS, dts+int64(s.PTSOffset))
		dts += int64(s.Duration)
		if maxPTS+int64(s.Duration) <= dts+t.delay+int64(s.Duration)/2 {
			keep = i
		}
	}
	if keep < 0 || keep == len(t.samples)-1 {
		return
	}
	cut := t.samples[keep+1:]
	for _, s := range cut {
		t.next -= int64(s.Duration)
		w.seg.partBytes -= len(s.Payload)
	}
	t.samples = t.samples[:keep+1]
	w.seg.partUnits -= len(cut)
	w.stats.Dropped += int64(len(cut))
	w.log.Debug("segment: dropped frames whose reordered predecessors never came", "frames", len(cut))
}

// estimate guesses the duration of a track's last sample in ticks.
func (t *track) estimate() int64 {
	switch {
	case t.src.Codec == recorder.Opus:
		if d := opus.PacketDuration2(t.pending.payload); d > 0 {
			return d
		}
	case t.src.Codec == recorder.G711:
		return int64(len(t.pending.payload) / 2 / t.channels())
	case t.frameLen > 0:
		return int64(t.frameLen)
	case t.lastDur > 0:
		return int64(t.lastDur)
	}
	return int64(t.timescale) / 25
}

// partBufs hold marshalled parts between Marshal and the file's Write,
// shared by all writers: a box with many cameras keeps a few part-sized
// buffers, not one each (grown to twice a key-frame part). A free list,
// not a sync.Pool: a pool is emptied at every GC and its buffers made
// again, which cost 8 % more CPU at 32 cameras.
var partBufs = make(chan *seekablebuffer.Buffer, 4)

func getPartBuf() *seekablebuffer.Buffer {
	select {
	case b := <-partBufs:
		return b
	default:
		return new(seekablebuffer.Buffer)
	}
}

func putPartBuf(b *seekablebuffer.Buffer) {
	select {
	case partBufs <- b:
	default:
	}
}

// flushPart appends the buffered samples as one part and fsyncs the file,
// creating it (and fsyncing its directory) on the first part.
func (w *Writer) flushPart() error {
	seg := w.seg
	if seg.partUnits == 0 {
		return nil
	}
	part := fmp4.Part{SequenceNumber: uint32(seg.parts + 1)}
	for _, t := range w.kept {
		if len(t.samples) > 0 {
			part.Tracks = append(part.Tracks, &fmp4.PartTrack{ID: t.id, BaseTime: t.base, Samples: t.samples})
			t.samples = nil
		}
	}
	first := seg.f == nil
	if first {
		if err := w.create(seg); err != nil {
			return err
		}
	}
	buf := getPartBuf()
	buf.Reset()
	buf.Grow(len(seg.init) + seg.partBytes + 16*seg.partUnits + 4096) // no doubling past the part's size
	seg.partUnits, seg.partBytes = 0, 0
	if first {
		buf.Write(seg.init)
	}
	if err := part.Marshal(buf); err != nil {
		putPartBuf(buf)
		return fmt.Errorf("segment: marshal part: %w", err)
	}
	_, err := seg.f.Write(buf.Bytes())
	n := int64(buf.Len())
	putPartBuf(buf) // before the fsync: only marshalling and writing hold one
	if err != nil {
		return fmt.Errorf("segment: write %s: %w", seg.path, err)
	}
	if !w.noSync {
		t0 := time.Now()
		if err := seg.f.Sync(); err != nil {
			return fmt.Errorf("segment: fsync %s: %w", seg.path, err)
		}
		d := time.Since(t0)
		w.stats.SyncTotal += d
		w.stats.SyncMax = max(w.stats.SyncMax, d)
	}
	for _, t := range w.kept {
		t.flushed, t.flushedPTS = t.next, t.maxPTS
	}
	seg.size += n
	seg.parts++
	w.stats.Parts++
	w.stats.Bytes += n
	return nil
}

// create opens the segment's file, never overwriting one: on a name clash
// the start moves on by a millisecond.
func (w *Writer) create(seg *openSegment) error {
	for range 1000 {
		day := filepath.Join(w.cfg.Dir, w.cfg.Camera, seg.start.Format(dayLayout))
		if err := mkdirSync(day); err != nil {
			return err
		}
		seg.path = filepath.Join(day, seg.start.Format(stampLayout)+".mp4")
		f, err := os.OpenFile(seg.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			seg.start = seg.start.Add(time.Millisecond)
			continue
		}
		if err != nil {
			return fmt.Errorf("segment: %w", err)
		}
		if err := atomicfile.SyncDir(day); err != nil {
			f.Close()
			return fmt.Errorf("segment: %w", err)
		}
		seg.f = f
		w.log.Debug("segment: opened", "path", seg.path)
		return nil
	}
	return fmt.Errorf("segment: no free name near %s", seg.path)
}

// mkdirSync creates dir and missing parents, fsyncing each parent that got
// a new entry so the path survives a power cut.
func mkdirSync(dir string) error {
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirSync(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("segment: %w", err)
	}
	return atomicfile.SyncDir(parent)
}

// finish closes the segment's file and reports it.
func (w *Writer) finish() {
	seg := w.seg
	w.seg = nil
	for _, t := range w.kept {
		t.pending, t.samples = nil, nil
	}
	if seg.f == nil {
		return
	}
	if err := seg.f.Close(); err != nil {
		w.log.Error("segment: close", "path", seg.path, "err", err)
	}
	info := SegmentInfo{Camera: w.cfg.Camera, Path: seg.path, Start: seg.start, Bytes: seg.size, Parts: seg.parts}
	for _, t := range w.kept {
		info.Codecs = append(info.Codecs, t.src.Codec)
		info.Duration = max(info.Duration, tickDuration(uint64(t.flushed), t.timescale))
	}
	w.stats.Segments++
	w.log.Debug("segment: closed", "path", seg.path, "duration", info.Duration, "bytes", info.Bytes)
	if w.cfg.OnSegment != nil {
		w.cfg.OnSegment(info)
	}
}

// abort handles a failed write: the file is cut back to its last durable
// part (or removed if it has none) and the segment ends there.
func (w *Writer) abort(err error) {
	seg := w.seg
	w.log.Error("segment: write failed, segment ends", "path", seg.path, "err", err)
	if seg.f != nil {
		if seg.parts == 0 {
			seg.f.Close()
			os.Remove(seg.path)
			seg.f = nil
		} else if terr := seg.f.Truncate(seg.size); terr == nil {
			seg.f.Sync()
		}
	}
	for _, t := range w.kept {
		t.pending, t.samples = nil, nil
	}
	w.finish()
}

// End closes the open segment; the next one starts at the next key frame,
// leaving a gap in the recording.
func (w *Writer) End(reason error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.endLocked(reason)
}

func (w *Writer) endLocked(reason error) {
	for _, t := range w.kept {
		t.seen = false
	}
	if w.seg == nil {
		return
	}
	w.log.Info("segment: session ended", "reason", reason)
	w.closeSegment(nil)
}

// Stats returns the Writer's counters.
func (w *Writer) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}

// tickDuration converts ticks to a Duration, saturating instead of
// overflowing.
func tickDuration(t uint64, scale uint32) time.Duration {
	if scale == 0 {
		return 0
	}
	s, r := t/uint64(scale), t%uint64(scale)
	if s > uint64(time.Duration(1<<62)/time.Second) {
		return time.Duration(1<<63 - 1)
	}
	return time.Duration(s)*time.Second + time.Duration(r*uint64(time.Second)/uint64(scale))
}
