package playback

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/testutil/tools"
	"github.com/outpost-gw/outpost/recorder"
	"github.com/outpost-gw/outpost/recorder/index"
	"github.com/outpost-gw/outpost/recorder/segment"
	"github.com/outpost-gw/outpost/recorder/synth"
)

var t0 = time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC)

// run runs a command that must succeed without printing to stderr.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil || errb.Len() > 0 {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

// rec describes what to record: sessions of synthetic 64x48 video (and
// silent audio if audio is set), each [from, to) after t0.
type rec struct {
	fps, gop  int
	seg, part time.Duration
	audio     recorder.Codec
	sessions  [][2]time.Duration
	sizes     [][2]int // per session; default 64x48
}

// record writes the sessions with segment.Writer under root, camera
// "cam-1", and returns the index entries of the segments.
func record(t testing.TB, root string, o rec) []index.Recording {
	t.Helper()
	var recs []index.Recording
	w, err := segment.New(segment.Config{Dir: root, Camera: "cam-1", SegmentDuration: o.seg, PartDuration: o.part,
		OnSegment: func(info segment.SegmentInfo) {
			rel, err := filepath.Rel(root, info.Path)
			if err != nil {
				t.Error(err)
			}
			recs = append(recs, index.Recording{Camera: info.Camera, File: rel, Start: info.Start, Duration: info.Duration, Bytes: info.Bytes})
		}})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range o.sessions {
		size := [2]int{64, 48}
		if i < len(o.sizes) {
			size = o.sizes[i]
		}
		v, err := synth.New(synth.Options{Width: size[0], Height: size[1], FPS: o.fps, GOP: o.gop, Start: t0.Add(s[0])})
		if err != nil {
			t.Fatal(err)
		}
		srcs := []interface{ Next() recorder.Sample }{v}
		tracks := []recorder.Track{v.Track()}
		if o.audio != "" {
			a, err := synth.NewAudio(synth.AudioOptions{Codec: o.audio, Track: 1, Start: t0.Add(s[0])})
			if err != nil {
				t.Fatal(err)
			}
			srcs, tracks = append(srcs, a), append(tracks, a.Track())
		}
		if err := w.Start(tracks); err != nil {
			t.Fatal(err)
		}
		feed(t, w, s[1]-s[0], srcs...)
		w.End(errors.New("session over"))
	}
	return recs
}

// feed writes the sources' samples to w in DTS order until each reaches
// until.
func feed(t testing.TB, w recorder.Sink, until time.Duration, srcs ...interface{ Next() recorder.Sample }) {
	heads := make([]recorder.Sample, len(srcs))
	for i, s := range srcs {
		heads[i] = s.Next()
	}
	for {
		i := -1
		for j, h := range heads {
			if h.DTS < until && (i < 0 || h.DTS < heads[i].DTS) {
				i = j
			}
		}
		if i < 0 {
			return
		}
		if err := w.Write(heads[i]); err != nil {
			t.Fatal(err)
		}
		heads[i] = srcs[i].Next()
	}
}

// probed is what ffprobe and ffmpeg say about an output file.
type probed struct {
	duration time.Duration
	codecs   []string
	firstKey string    // flags of the first video packet, type of the first frame: "K_,I"
	dts      []float64 // of the video packets, seconds
}

// probe validates a file (ffprobe -show_streams -show_format, then a full
// decode with ffmpeg -xerror) and describes it.
func probe(t testing.TB, file string) probed {
	t.Helper()
	var out struct {
		Streams []struct {
			CodecName string `json:"codec_name"`
		} `json:"streams"`
		Format struct {
			Duration string `json:"duration"`
		} `json:"format"`
	}
	if err := json.Unmarshal([]byte(run(t, "ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", file)), &out); err != nil {
		t.Fatal(err)
	}
	run(t, "ffmpeg", "-v", "error", "-xerror", "-i", file, "-f", "null", "-")
	var p probed
	for _, s := range out.Streams {
		p.codecs = append(p.codecs, s.CodecName)
	}
	secs, err := strconv.ParseFloat(out.Format.Duration, 64)
	if err != nil {
		t.Fatalf("duration %q", out.Format.Duration)
	}
	p.duration = time.Duration(secs * float64(time.Second))
	v := []string{"-v", "error", "-select_streams", "v:0", "-read_intervals", "%+#1", "-of", "csv=p=0"}
	p.firstKey = run(t, "ffprobe", append(v, "-show_entries", "packet=flags", file)...) + "," +
		run(t, "ffprobe", append(v, "-show_entries", "frame=pict_type", file)...)
	for _, l := range strings.Fields(run(t, "ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=dts_time", "-of", "csv=p=0", file)) {
		f, err := strconv.ParseFloat(strings.TrimSuffix(l, ","), 64)
		if err != nil {
			t.Fatalf("dts %q", l)
		}
		p.dts = append(p.dts, f)
	}
	return p
}

// TestWrite plays ranges of real recordings back and checks each output
// with ffprobe and a full ffmpeg decode: it starts on a key frame at or
// before the start, covers the range (with any gap in it), and its video
// timestamps step by one frame except across a gap.
func TestWrite(t *testing.T) {
	tools.Need(t, "ffmpeg", "ffprobe")
	for _, tc := range []struct {
		name       string
		rec        rec
		from, dur  time.Duration
		wantOrigin time.Duration // stream time 0, after t0
		wantGap    time.Duration // the one jump in the video DTS, if any
		codecs     string
	}{
		{name: "within one segment", rec: rec{fps: 25, gop: 25, seg: time.Minute, part: time.Second, sessions: [][2]time.Duration{{0, 10 * time.Second}}},
			from: 2300 * time.Millisecond, dur: 4 * time.Second, wantOrigin: 2 * time.Second, codecs: "h264"},
		{name: "no key part before start: segment start", rec: rec{fps: 25, gop: 25, seg: time.Minute, part: 500 * time.Millisecond, sessions: [][2]time.Duration{{0, 6 * time.Second}}},
			from: 2300 * time.Millisecond, dur: 2 * time.Second, wantOrigin: 0, codecs: "h264"},
		{name: "across segments", rec: rec{fps: 25, gop: 25, seg: 2 * time.Second, part: time.Second, sessions: [][2]time.Duration{{0, 10 * time.Second}}},
			from: 1500 * time.Millisecond, dur: 6 * time.Second, wantOrigin: time.Second, codecs: "h264"},
		{name: "across segments with AAC", rec: rec{fps: 25, gop: 50, seg: 2 * time.Second, part: time.Second, audio: recorder.AAC, sessions: [][2]time.Duration{{0, 10 * time.Second}}},
			from: 3 * time.Second, dur: 5 * time.Second, wantOrigin: 2 * time.Second, codecs: "h264,aac"},
		{name: "across segments with Opus", rec: rec{fps: 30, gop: 30, seg: 3 * time.Second, part: time.Second, audio: recorder.Opus, sessions: [][2]time.Duration{{0, 9 * time.Second}}},
			from: 2 * time.Second, dur: 5 * time.Second, wantOrigin: 2 * time.Second, codecs: "h264,opus"},
		{name: "across a gap", rec: rec{fps: 25, gop: 25, seg: 3 * time.Second, part: time.Second, sessions: [][2]time.Duration{{0, 6 * time.Second}, {11 * time.Second, 17 * time.Second}}},
			from: 4 * time.Second, dur: 10 * time.Second, wantOrigin: 4 * time.Second, wantGap: 5 * time.Second, codecs: "h264"},
		{name: "starting in a gap", rec: rec{fps: 25, gop: 25, seg: 3 * time.Second, part: time.Second, audio: recorder.AAC, sessions: [][2]time.Duration{{0, 3 * time.Second}, {8 * time.Second, 12 * time.Second}}},
			from: 5 * time.Second, dur: 5 * time.Second, wantOrigin: 8 * time.Second, codecs: "h264,aac"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			recs := record(t, root, tc.rec)
			out := filepath.Join(t.TempDir(), "out.mp4")
			f, err := os.Create(out)
			if err != nil {
				t.Fatal(err)
			}
			var origin time.Time
			start := t0.Add(tc.from)
			err = write(context.Background(), f, root, recs, start, tc.dur, func(o time.Time) { origin = o })
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			// Time 0 is the earliest sample of the first part: audio may
			// start a frame before the video's key frame.
			if got := origin.Sub(t0); got > tc.wantOrigin || got < tc.wantOrigin-30*time.Millisecond {
				t.Errorf("stream starts at %v, want %v", got, tc.wantOrigin)
			}
			p := probe(t, out)
			if strings.Join(p.codecs, ",") != tc.codecs || !strings.HasPrefix(p.firstKey, "K") || !strings.HasSuffix(p.firstKey, ",I") {
				t.Errorf("streams %v, first video packet and frame %q", p.codecs, p.firstKey)
			}
			// The end: the last part starting before start+dur ends within a
			// part (and a frame or an audio frame) after it.
			end := origin.Add(p.duration)
			if slack := end.Sub(start.Add(tc.dur)); slack < 0 || slack > tc.rec.part+50*time.Millisecond {
				t.Errorf("stream ends at %v, %v after the range", end.Sub(t0), slack)
			}
			frame := time.Second / time.Duration(tc.rec.fps)
			gaps := 0
			for i := 1; i < len(p.dts); i++ {
				step := time.Duration((p.dts[i] - p.dts[i-1]) * float64(time.Second))
				want := frame
				if tc.wantGap > 0 && step > time.Second {
					want += tc.wantGap
					gaps++
				}
				if (step - want).Abs() > 2*time.Millisecond {
					t.Fatalf("video dts step %v at packet %d (%.3f s), want %v", step, i, p.dts[i], want)
				}
			}
			if gaps != min(int(tc.wantGap), 1) {
				t.Errorf("%d gaps", gaps)
			}
			if first := time.Duration(p.dts[0] * float64(time.Second)); first != t0.Add(tc.wantOrigin).Sub(origin).Round(time.Millisecond) {
				t.Errorf("first video dts %v, stream starts at %v", first, origin.Sub(t0))
			}
		})
	}
}

// TestStopAtNewInit: a segment with other codec parameters (the camera
// came back at another resolution) ends the stream at its boundary; asked
// from there, the stream has the new init.
func TestStopAtNewInit(t *testing.T) {
	tools.Need(t, "ffmpeg", "ffprobe")
	root := t.TempDir()
	recs := record(t, root, rec{fps: 25, gop: 25, seg: 2 * time.Second, part: time.Second,
		sessions: [][2]time.Duration{{0, 4 * time.Second}, {4 * time.Second, 8 * time.Second}}, sizes: [][2]int{{64, 48}, {32, 32}}})
	for _, tc := range []struct {
		from, dur, wantEnd time.Duration
		size               string
	}{{time.Second, 6 * time.Second, 4 * time.Second, "64x48"}, {5 * time.Second, 2 * time.Second, 7 * time.Second, "32x32"}} {
		out := filepath.Join(t.TempDir(), "out.mp4")
		f, err := os.Create(out)
		if err != nil {
			t.Fatal(err)
		}
		var origin time.Time
		err = write(context.Background(), f, root, recs, t0.Add(tc.from), tc.dur, func(o time.Time) { origin = o })
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		p := probe(t, out)
		size := run(t, "ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "csv=s=x:p=0", out)
		if end := origin.Add(p.duration).Sub(t0); (end-tc.wantEnd).Abs() > 50*time.Millisecond || size != tc.size {
			t.Errorf("from %v: %s up to %v, want %s up to %v", tc.from, size, end, tc.size, tc.wantEnd)
		}
	}
}

// TestPaths: index entries that point outside the camera's directory are
// refused before anything is opened or written; a symlink out of the root
// fails to open.
func TestPaths(t *testing.T) {
	root := t.TempDir()
	outside := filepath.Join(t.TempDir(), "secret.mp4")
	if err := os.WriteFile(outside, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "cam-1", "2026-11-22"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "cam-1", "2026-11-22", "link.mp4")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../..", filepath.Join(root, "cam-1", "up")); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(outside)
	for _, tc := range []struct {
		file    string
		refused bool // by the path check, before any open
	}{
		{"../../etc/passwd", true},
		{"cam-1/../../etc/passwd.mp4", true},
		{"/etc/passwd", true},
		{outside, true},
		{"cam-2/2026-11-22/x.mp4", true},
		{"cam-1/2026-11-22/x.txt", true},
		{"cam-1//2026-11-22/x.mp4", true},
		{"cam-1\\..\\x.mp4", true},
		{"cam-1/2026-11-22/link.mp4", false},
		{"cam-1/up/" + filepath.Base(filepath.Dir(outside)) + "/secret.mp4", false},
	} {
		t.Run(tc.file, func(t *testing.T) {
			var out bytes.Buffer
			recs := []index.Recording{{Camera: "cam-1", File: tc.file, Start: t0, Duration: time.Minute}}
			err := Write(context.Background(), &out, root, recs, t0, time.Second)
			if err == nil || errors.Is(err, ErrPath) != tc.refused || errors.Is(err, ErrNoRecording) || out.Len() > 0 {
				t.Fatalf("error %v (path refused: %v), %d bytes out", err, errors.Is(err, ErrPath), out.Len())
			}
		})
	}
	after, _ := os.Stat(outside)
	if b, _ := os.ReadFile(outside); string(b) != "secret" || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("file outside the root touched")
	}
}

// TestEdgeCases: a segment removed since it was listed is a gap (and
// alone, nothing recorded); a zero duration and a canceled context fail.
func TestEdgeCases(t *testing.T) {
	root := t.TempDir()
	recs := record(t, root, rec{fps: 10, gop: 10, seg: time.Second, part: time.Second, sessions: [][2]time.Duration{{0, 3 * time.Second}}})
	if len(recs) != 3 {
		t.Fatalf("%d segments", len(recs))
	}
	if err := os.Remove(filepath.Join(root, recs[1].File)); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Write(context.Background(), &out, root, recs[1:2], t0.Add(time.Second), time.Second); !errors.Is(err, ErrNoRecording) || out.Len() > 0 {
		t.Fatalf("only a missing file: %v, %d bytes", err, out.Len())
	}
	if err := Write(context.Background(), &out, root, recs, t0, 3*time.Second); err != nil || out.Len() == 0 {
		t.Fatalf("%v, %d bytes", err, out.Len())
	}
	if err := Write(context.Background(), io.Discard, root, recs, t0, 0); err == nil {
		t.Fatal("zero duration accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Write(ctx, io.Discard, root, recs, t0, 3*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
}
