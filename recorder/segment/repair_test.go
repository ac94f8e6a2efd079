package segment

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"

	"github.com/outpost-gw/outpost/internal/testutil/tools"
	"github.com/outpost-gw/outpost/recorder"
	"github.com/outpost-gw/outpost/recorder/synth"
)

type box struct {
	typ      string
	off, end int64
}

// topBoxes lists a file's top-level boxes.
func topBoxes(t testing.TB, data []byte) []box {
	var bs []box
	for off := int64(0); off < int64(len(data)); {
		h, err := readHeader(bytes.NewReader(data), off, int64(len(data)))
		if err != nil {
			t.Fatalf("box at %d: %v", off, err)
		}
		bs = append(bs, box{h.typ, h.off, h.end()})
		off = h.end()
	}
	return bs
}

// videoSamples counts the video samples in each part of a segment.
func videoSamples(t testing.TB, data []byte, moovEnd int64) []int {
	var parts fmp4.Parts
	if err := parts.Unmarshal(data[moovEnd:]); err != nil {
		t.Fatal(err)
	}
	var n []int
	for _, p := range parts {
		c := 0
		for _, pt := range p.Tracks {
			if pt.ID == 1 {
				c += len(pt.Samples)
			}
		}
		n = append(n, c)
	}
	return n
}

// TestCrash cuts a segment at many byte offsets, as a power cut would, and
// checks that Repair keeps exactly the complete parts, which decode.
func TestCrash(t *testing.T) {
	tools.Need(t, "ffmpeg", "ffprobe")
	var infos []SegmentInfo
	w := newWriter(t, Config{SegmentDuration: time.Minute, PartDuration: 500 * time.Millisecond}, &infos)
	v := mustSynth(t, synth.Options{Width: 96, Height: 64, FPS: 25, GOP: 25})
	a := mustAudio(t, synth.AudioOptions{Codec: recorder.AAC, Track: 1})
	if err := w.Start([]recorder.Track{v.Track(), a.Track()}); err != nil {
		t.Fatal(err)
	}
	feed(t, w, 3*time.Second, v, a)

	// The file as a power cut now would leave it: the writer has not
	// ended the segment, the parts written so far are durable.
	paths, _ := filepath.Glob(filepath.Join(w.cfg.Dir, "cam-1", "*", "*.mp4"))
	if len(paths) != 1 || len(infos) != 0 {
		t.Fatalf("files %v, closed %d", paths, len(infos))
	}
	open, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	w.End(nil)
	full, err := os.ReadFile(paths[0])
	if err != nil || !bytes.HasPrefix(full, open) {
		t.Fatalf("the open file is not a prefix of the closed one (%v)", err)
	}

	boxes := topBoxes(t, full)
	if boxes[0].typ != "ftyp" || boxes[1].typ != "moov" || len(boxes)%2 != 0 {
		t.Fatalf("layout %v", boxes)
	}
	perPart := videoSamples(t, full, boxes[1].end)
	nParts := len(perPart)
	if nParts != infos[0].Parts || nParts < 6 {
		t.Fatalf("%d parts, info says %d", nParts, infos[0].Parts)
	}
	framesUpTo := func(k int) (n int) {
		for _, c := range perPart[:k] {
			n += c
		}
		return n
	}
	partEnd := func(k int) int64 { // end of the first k parts
		if k == 0 {
			return boxes[1].end
		}
		return boxes[2*k+1].end
	}

	type cut struct {
		name string
		data []byte
		keep int // complete parts expected after repair; -1: unrecoverable
	}
	cuts := []cut{
		{"empty", nil, -1},
		{"mid ftyp", full[:10], -1},
		{"mid moov", full[:boxes[1].off+100], -1},
		{"after moov", full[:boxes[1].end], -1},
		{"open file", open, len(topBoxes(t, open))/2 - 1},
		{"whole", full, nParts},
		{"whole plus zeros", append(bytes.Clone(full), make([]byte, 4096)...), nParts},
		{"whole plus garbage", append(bytes.Clone(full), "\x00\x00\x00\x10moof\xff\xff"...), nParts},
	}
	for _, k := range []int{1, nParts / 2, nParts} {
		moof, mdat := boxes[2*k], boxes[2*k+1]
		prev := k - 1
		if prev == 0 { // the first part is torn: nothing to keep
			prev = -1
		}
		cuts = append(cuts,
			cut{fmt.Sprintf("part %d mid moof header", k), full[:moof.off+5], prev},
			cut{fmt.Sprintf("part %d mid moof", k), full[:(moof.off+moof.end)/2], prev},
			cut{fmt.Sprintf("part %d mid mdat header", k), full[:mdat.off+6], prev},
			cut{fmt.Sprintf("part %d mid mdat", k), full[:(mdat.off+mdat.end)/2], prev},
			cut{fmt.Sprintf("part %d last byte missing", k), full[:mdat.end-1], prev},
			cut{fmt.Sprintf("part %d complete", k), full[:mdat.end], k},
		)
	}
	corrupt := bytes.Clone(full[:partEnd(2)])
	copy(corrupt[boxes[4].off+8:], "\x00\x00\x00\x08junk") // part 2's moof loses its mfhd/traf structure
	cuts = append(cuts, cut{"part 2 moof corrupt", corrupt, 1})

	dir := t.TempDir()
	for i, c := range cuts {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, "cam-1", "2026-11-22", t0.Add(time.Duration(i)*time.Second).Format(stampLayout)+".mp4")
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, c.data, 0o644); err != nil {
				t.Fatal(err)
			}
			info, err := Repair(p)
			if c.keep < 0 {
				if !errors.Is(err, ErrUnrecoverable) {
					t.Fatalf("got %+v, %v; want unrecoverable", info, err)
				}
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("unrecoverable file not removed: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(p)
			if want := full[:partEnd(c.keep)]; !bytes.Equal(got, want) {
				t.Fatalf("repaired to %d bytes, want the first %d parts: %d bytes", len(got), c.keep, len(want))
			}
			if info.Parts != c.keep || info.Bytes != int64(len(got)) || info.Trimmed != int64(len(c.data)-len(got)) ||
				info.Camera != "cam-1" || !info.Start.Equal(t0.Add(time.Duration(i)*time.Second)) {
				t.Fatalf("info %+v", info)
			}
			if c.keep == nParts && info.Duration != infos[0].Duration {
				t.Fatalf("duration %v, writer said %v", info.Duration, infos[0].Duration)
			}
			if c.keep == 1 || c.keep == nParts/2 || c.name == "open file" { // ffmpeg is slow; decode a sample
				streams := decode(t, p)
				if len(streams) != 2 || streams[0] != "h264:"+strconv.Itoa(framesUpTo(c.keep)) || !strings.HasPrefix(streams[1], "aac:") {
					t.Fatalf("decoded %v, want %d video frames", streams, framesUpTo(c.keep))
				}
			}
		})
	}
}

func TestDiscontinuity(t *testing.T) {
	for _, tc := range []struct {
		name  string
		shift time.Duration // DTS of the second session relative to the first's end
	}{
		{"dts back to zero", -3 * time.Second},
		{"dts jumps 20 s", 20 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var infos []SegmentInfo
			w := newWriter(t, Config{SegmentDuration: time.Minute}, &infos)
			v := mustSynth(t, synth.Options{Width: 32, Height: 32, FPS: 25, GOP: 25})
			if err := w.Start([]recorder.Track{v.Track()}); err != nil {
				t.Fatal(err)
			}
			feed(t, w, 3*time.Second, v)
			v2, err := synth.New(synth.Options{Width: 32, Height: 32, FPS: 25, GOP: 25, Start: t0.Add(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 75 {
				s := v2.Next()
				s.DTS += 3*time.Second + tc.shift
				s.PTS += 3*time.Second + tc.shift
				if i >= 10 { // joins mid-GOP: 15 P frames before the next IDR
					if err := w.Write(s); err != nil {
						t.Fatal(err)
					}
				}
			}
			w.End(nil)
			if len(infos) != 2 || infos[0].Duration != 3*time.Second || infos[1].Duration != 2*time.Second ||
				!infos[1].Start.Equal(t0.Add(time.Hour+time.Second)) {
				t.Fatalf("%+v", infos)
			}
			if st := w.Stats(); st.Dropped != 15 {
				t.Fatalf("dropped %d", st.Dropped)
			}
		})
	}
}

// TestParamsChange: a key frame with a new SPS starts a new segment, and
// parameter sets missing from the Track are taken from the stream.
func TestParamsChange(t *testing.T) {
	tools.Need(t, "ffmpeg", "ffprobe")
	var infos []SegmentInfo
	w := newWriter(t, Config{SegmentDuration: time.Minute}, &infos)
	if err := w.Start([]recorder.Track{{Codec: recorder.H264, ClockRate: 90000}}); err != nil {
		t.Fatal(err)
	}
	a := mustSynth(t, synth.Options{Width: 64, Height: 48, FPS: 25, GOP: 25})
	b := mustSynth(t, synth.Options{Width: 48, Height: 32, FPS: 25, GOP: 25})
	feed(t, w, time.Second, a)
	for range 25 {
		s := b.Next()
		s.DTS += time.Second
		s.PTS += time.Second
		if err := w.Write(s); err != nil {
			t.Fatal(err)
		}
	}
	w.End(nil)
	if len(infos) != 2 {
		t.Fatalf("%d segments", len(infos))
	}
	for i, want := range []string{"64,48,25", "48,32,25"} {
		got := run(t, "ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=width,height,nb_read_frames", "-of", "csv=p=0", infos[i].Path)
		if got != want {
			t.Errorf("segment %d: %s, want %s", i, got, want)
		}
	}
}

func TestConfigAndMisuse(t *testing.T) {
	for _, c := range []string{"", "Cam", "../x", "a/b", "-a", "a b", "a.b", strings.Repeat("a", 65)} {
		if _, err := New(Config{Dir: t.TempDir(), Camera: c}); !errors.Is(err, ErrConfig) {
			t.Errorf("camera %q: %v", c, err)
		}
	}
	if _, err := New(Config{Camera: "x"}); !errors.Is(err, ErrConfig) {
		t.Error("empty dir accepted")
	}
	w := newWriter(t, Config{}, nil)
	if err := w.Write(recorder.Sample{}); !errors.Is(err, ErrNotStarted) {
		t.Errorf("write before start: %v", err)
	}
	if err := w.Start([]recorder.Track{{Codec: "MJPEG"}}); !errors.Is(err, ErrNoTracks) {
		t.Errorf("start without usable tracks: %v", err)
	}
	v := mustSynth(t, synth.Options{Width: 32, Height: 32})
	if err := w.Start([]recorder.Track{{Codec: "MJPEG"}, v.Track()}); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(recorder.Sample{Track: 0, AU: [][]byte{{1}}}); err != nil {
		t.Errorf("sample of a skipped track: %v", err)
	}
	if err := w.Write(recorder.Sample{Track: 5}); err == nil {
		t.Error("sample of track 5 accepted")
	}

	// Two sessions starting in the same millisecond get distinct files.
	var infos []SegmentInfo
	w = newWriter(t, Config{}, &infos)
	for range 2 {
		v := mustSynth(t, synth.Options{Width: 32, Height: 32})
		if err := w.Start([]recorder.Track{v.Track()}); err != nil {
			t.Fatal(err)
		}
		feed(t, w, time.Second, v)
		w.End(nil)
	}
	if len(infos) != 2 || infos[1].Start.Sub(infos[0].Start) != time.Millisecond {
		t.Fatalf("%+v", infos)
	}

	// A directory that cannot be created: Write fails, nothing panics, and
	// the writer keeps trying at the next key frame.
	w = newWriter(t, Config{Dir: "/dev/null/rec", PartDuration: 100 * time.Millisecond}, nil)
	v = mustSynth(t, synth.Options{Width: 32, Height: 32, GOP: 5})
	if err := w.Start([]recorder.Track{v.Track()}); err != nil {
		t.Fatal(err)
	}
	failures := 0
	for range 50 {
		if err := w.Write(v.Next()); err != nil {
			failures++
		}
	}
	if failures < 2 {
		t.Fatalf("%d failures", failures)
	}
	w.End(nil)
}
