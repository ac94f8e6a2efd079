package segment

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/testutil/tools"
	"github.com/outpost-gw/outpost/recorder"
	"github.com/outpost-gw/outpost/recorder/synth"
)

var t0 = time.Date(2026, 11, 22, 10, 30, 0, 123e6, time.UTC)

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

// decode fully decodes a file with ffmpeg -xerror and returns, per stream,
// "codec:frames" as ffprobe -count_frames counts them.
func decode(t testing.TB, file string) []string {
	t.Helper()
	run(t, "ffmpeg", "-v", "error", "-xerror", "-i", file, "-f", "null", "-")
	out := run(t, "ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=codec_name,nb_read_frames", "-of", "csv=p=0", file)
	return strings.Fields(strings.ReplaceAll(out, ",", ":"))
}

type source interface{ Next() recorder.Sample }

// feed writes the sources' samples to w in DTS order until every source
// has reached until, and returns how many samples each source gave.
func feed(t testing.TB, w recorder.Sink, until time.Duration, srcs ...source) []int {
	t.Helper()
	heads := make([]recorder.Sample, len(srcs))
	counts := make([]int, len(srcs))
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
			return counts
		}
		if err := w.Write(heads[i]); err != nil {
			t.Fatal(err)
		}
		counts[i]++
		heads[i] = srcs[i].Next()
	}
}

func newWriter(t testing.TB, cfg Config, infos *[]SegmentInfo) *Writer {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.Camera == "" {
		cfg.Camera = "cam-1"
	}
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	if infos != nil {
		cfg.OnSegment = func(i SegmentInfo) { *infos = append(*infos, i) }
	}
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func mustSynth(t testing.TB, o synth.Options) *synth.Source {
	t.Helper()
	o.Start = t0
	s, err := synth.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustAudio(t testing.TB, o synth.AudioOptions) *synth.Audio {
	t.Helper()
	o.Start = t0
	a, err := synth.NewAudio(o)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestSegments checks cuts on key frames, naming, the OnSegment info, and
// that every file decodes with exactly the frames written into it.
func TestSegments(t *testing.T) {
	tools.Need(t, "ffmpeg", "ffprobe")
	for _, tc := range []struct {
		name           string
		fps, gop       int
		reorder        bool
		seg, part      time.Duration
		total          time.Duration
		wantPerSegment []int // frames
	}{
		{"gop 1s seg 2s", 25, 25, false, 2 * time.Second, 500 * time.Millisecond, 7 * time.Second, []int{50, 50, 50, 25}},
		{"gop 1.6s seg 2s", 25, 40, false, 2 * time.Second, time.Second, 7 * time.Second, []int{80, 80, 15}},
		{"gop longer than seg", 10, 30, false, time.Second, 300 * time.Millisecond, 7 * time.Second, []int{30, 30, 10}},
		{"every frame key", 10, 1, false, time.Second, 250 * time.Millisecond, 2500 * time.Millisecond, []int{10, 10, 5}},
		{"B-frame-like reorder", 30, 30, true, 2 * time.Second, 500 * time.Millisecond, 5 * time.Second, []int{60, 60, 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var infos []SegmentInfo
			dir := t.TempDir()
			w := newWriter(t, Config{Dir: dir, SegmentDuration: tc.seg, PartDuration: tc.part}, &infos)
			v := mustSynth(t, synth.Options{Width: 96, Height: 64, FPS: tc.fps, GOP: tc.gop, Reorder: tc.reorder})
			if err := w.Start([]recorder.Track{v.Track()}); err != nil {
				t.Fatal(err)
			}
			n := feed(t, w, tc.total, v)[0]
			w.End(errors.New("test over"))

			if len(infos) != len(tc.wantPerSegment) {
				t.Fatalf("%d segments, want %d: %+v", len(infos), len(tc.wantPerSegment), infos)
			}
			at := func(frames int) time.Duration { return time.Duration(frames) * time.Second / time.Duration(tc.fps) }
			sum := 0
			for i, info := range infos {
				start := t0.Add(at(sum)).Truncate(time.Millisecond)
				wantPath := filepath.Join(dir, "cam-1", "2026-11-22", start.Format(stampLayout)+".mp4")
				if info.Path != wantPath || !info.Start.Equal(start) || info.Camera != "cam-1" {
					t.Errorf("segment %d: %s %v, want %s", i, info.Path, info.Start, wantPath)
				}
				if d := at(sum+tc.wantPerSegment[i]) - at(sum); (info.Duration - d).Abs() > time.Microsecond {
					t.Errorf("segment %d: duration %v, want %v", i, info.Duration, d)
				}
				fi, err := os.Stat(info.Path)
				if err != nil || fi.Size() != info.Bytes || !slices.Equal(info.Codecs, []recorder.Codec{recorder.H264}) {
					t.Fatalf("segment %d: %+v, stat %v", i, info, err)
				}
				if wantParts := int((at(tc.wantPerSegment[i]) + tc.part - 1) / tc.part); info.Parts < wantParts-1 || info.Parts > wantParts+1 {
					t.Errorf("segment %d: %d parts, want about %d", i, info.Parts, wantParts)
				}
				if got, want := decode(t, info.Path), []string{"h264:" + strconv.Itoa(tc.wantPerSegment[i])}; !slices.Equal(got, want) {
					t.Errorf("segment %d: %v, want %v", i, got, want)
				}
				r, err := Repair(info.Path)
				r.Trimmed = -1
				if err != nil || r.Bytes != info.Bytes || r.Duration != info.Duration || r.Parts != info.Parts || r.Camera != "cam-1" || !r.Start.Equal(info.Start) {
					t.Errorf("segment %d: repair of an intact file: %+v, %v; writer said %+v", i, r, err, info)
				}
				sum += tc.wantPerSegment[i]
			}
			if sum != n {
				t.Errorf("%d frames in segments, %d written", sum, n)
			}
			if st := w.Stats(); st.Segments != int64(len(infos)) || st.Dropped != 0 || st.Parts == 0 {
				t.Errorf("stats %+v", st)
			}
			scanned, err := Scan(dir)
			if err != nil || len(scanned) != len(infos) {
				t.Fatalf("scan: %d, %v", len(scanned), err)
			}
			for i := range scanned {
				if scanned[i].Path != infos[i].Path || scanned[i].Duration != infos[i].Duration {
					t.Errorf("scan %d: %+v, want %+v", i, scanned[i], infos[i])
				}
			}
		})
	}
}

// TestAudioTracks records video with each audio codec alongside.
func TestAudioTracks(t *testing.T) {
	tools.Need(t, "ffmpeg", "ffprobe")
	for _, tc := range []struct {
		o         synth.AudioOptions
		codec     string
		perSecond int // audio frames per second as ffmpeg counts them
	}{
		{synth.AudioOptions{Codec: recorder.AAC, SampleRate: 48000, Channels: 2}, "aac", 0},
		{synth.AudioOptions{Codec: recorder.AAC, SampleRate: 16000, FramesPerSample: 3}, "aac", 0},
		{synth.AudioOptions{Codec: recorder.Opus}, "opus", 50},
		{synth.AudioOptions{Codec: recorder.G711, MULaw: true}, "pcm_s16be", 50},
		{synth.AudioOptions{Codec: recorder.G711, Channels: 2}, "pcm_s16be", 50},
	} {
		t.Run(fmt.Sprintf("%s-%dch", tc.o.Codec, max(tc.o.Channels, 1)), func(t *testing.T) {
			var infos []SegmentInfo
			w := newWriter(t, Config{SegmentDuration: 2 * time.Second, PartDuration: 500 * time.Millisecond}, &infos)
			v := mustSynth(t, synth.Options{Width: 64, Height: 48, FPS: 25, GOP: 25})
			tc.o.Track = 1
			a := mustAudio(t, tc.o)
			if err := w.Start([]recorder.Track{v.Track(), a.Track()}); err != nil {
				t.Fatal(err)
			}
			feed(t, w, 3*time.Second, v, a)
			w.End(nil)
			if len(infos) != 2 {
				t.Fatalf("%d segments", len(infos))
			}
			for _, info := range infos {
				if !slices.Equal(info.Codecs, []recorder.Codec{recorder.H264, tc.o.Codec}) {
					t.Errorf("codecs %v", info.Codecs)
				}
				got := decode(t, info.Path)
				if len(got) != 2 || !strings.HasPrefix(got[1], tc.codec+":") {
					t.Fatalf("%s: streams %v", info.Path, got)
				}
				frames, _ := strconv.Atoi(strings.TrimPrefix(got[1], tc.codec+":"))
				secs := info.Duration.Seconds()
				want := float64(tc.perSecond) * secs
				if tc.perSecond == 0 {
					want = float64(tc.o.SampleRate) / 1024 * secs
				}
				if float64(frames) < want-3 || float64(frames) > want+3 {
					t.Errorf("%s: %d audio frames in %v, want about %.0f", info.Path, frames, info.Duration, want)
				}
			}
		})
	}
}

// TestFFmpegBFrames records real encoder output with B-frames (libx264,
// libx265): decode order differs from display order and PTS-DTS varies.
// The recorded packets must keep the encoder's timestamps.
func TestFFmpegBFrames(t *testing.T) {
	tools.Need(t, "ffmpeg", "ffprobe")
	for _, tc := range []struct {
		codec    recorder.Codec
		args     []string
		bsf      string
		vcl      func(nalu []byte) bool
		probeKey string
	}{
		{recorder.H264, []string{"-c:v", "libx264", "-bf", "2", "-g", "25", "-x264-params", "aud=1:log=-1"}, "h264_mp4toannexb",
			func(n []byte) bool { return n[0]&0x1F >= 1 && n[0]&0x1F <= 5 }, "h264"},
		{recorder.H265, []string{"-c:v", "libx265", "-bf", "2", "-g", "25", "-x265-params", "aud=1:open-gop=0:log-level=none"}, "hevc_mp4toannexb",
			func(n []byte) bool { return (n[0]>>1)&0x3F < 32 }, "hevc"},
	} {
		t.Run(string(tc.codec), func(t *testing.T) {
			if !strings.Contains(run(t, "ffmpeg", "-hide_banner", "-encoders"), strings.TrimPrefix(tc.args[1], "-")) {
				t.Skip(tc.args[1], " not available")
			}
			samples, track := encode(t, tc.args, tc.bsf, tc.vcl)
			track.Codec = tc.codec
			var infos []SegmentInfo
			w := newWriter(t, Config{SegmentDuration: 2 * time.Second, PartDuration: 500 * time.Millisecond}, &infos)
			if err := w.Start([]recorder.Track{track}); err != nil {
				t.Fatal(err)
			}
			for _, s := range samples {
				if err := w.Write(s); err != nil {
					t.Fatal(err)
				}
			}
			w.End(nil)
			if len(infos) != 3 {
				t.Fatalf("%d segments", len(infos))
			}
			var pts []string
			total := 0
			for _, info := range infos {
				got := decode(t, info.Path)
				if len(got) != 1 || !strings.HasPrefix(got[0], tc.probeKey+":") {
					t.Fatalf("streams %v", got)
				}
				n, _ := strconv.Atoi(strings.TrimPrefix(got[0], tc.probeKey+":"))
				total += n
				off := info.Start.Sub(t0) // the segment's DTS origin
				for _, p := range strings.Fields(run(t, "ffprobe", "-v", "error", "-show_entries", "packet=pts_time", "-of", "csv=p=0", info.Path)) {
					f, _ := strconv.ParseFloat(p, 64)
					pts = append(pts, (off + time.Duration(f*1e9)).Round(time.Millisecond).String())
				}
			}
			var want []string
			for _, s := range samples {
				want = append(want, (s.PTS - samples[0].DTS).Round(time.Millisecond).String())
			}
			if total != len(samples) || !slices.Equal(pts, want) {
				t.Fatalf("%d frames of %d; pts\n%v\nwant\n%v", total, len(samples), pts, want)
			}
		})
	}
}

// encode makes 5 s of 160x120 video with ffmpeg and returns it as samples
// with the encoder's timestamps, in decode order.
func encode(t *testing.T, args []string, bsf string, isVCL func([]byte) bool) ([]recorder.Sample, recorder.Track) {
	dir := t.TempDir()
	mp4, raw := filepath.Join(dir, "in.mp4"), filepath.Join(dir, "in.es")
	enc := append([]string{"-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-t", "5", "-pix_fmt", "yuv420p"}, args...)
	if out, err := exec.Command("ffmpeg", append(enc, mp4)...).CombinedOutput(); err != nil {
		t.Fatalf("encode: %v\n%s", err, out)
	}
	run(t, "ffmpeg", "-v", "error", "-i", mp4, "-c", "copy", "-bsf:v", bsf, "-f", strings.TrimSuffix(bsf, "_mp4toannexb"), raw)
	tb := strings.Split(run(t, "ffprobe", "-v", "error", "-show_entries", "stream=time_base", "-of", "csv=p=0", mp4), "/")
	num, _ := strconv.ParseInt(tb[0], 10, 64)
	den, _ := strconv.ParseInt(tb[1], 10, 64)
	conv := func(s string) time.Duration {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("timestamp %q", s)
		}
		return time.Duration(v * num * int64(time.Second) / den)
	}
	var samples []recorder.Sample
	for _, l := range strings.Fields(run(t, "ffprobe", "-v", "error", "-show_entries", "packet=pts,dts,flags", "-of", "csv=p=0", mp4)) {
		f := strings.Split(l, ",")
		s := recorder.Sample{PTS: conv(f[0]), DTS: conv(f[1]), Key: strings.HasPrefix(f[2], "K")}
		samples = append(samples, s)
	}
	data, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	// Split the Annex-B stream into NAL units, and into access units: each
	// has one VCL NAL unit (one slice per frame), and the non-VCL units
	// before it (the encoder's AUD, the SPS/PPS the filter inserts).
	var aus [][][]byte
	var cur [][]byte
	for _, n := range bytes.Split(data, []byte{0, 0, 1}) {
		if n = bytes.TrimRight(n, "\x00"); len(n) > 0 {
			cur = append(cur, n)
			if isVCL(n) {
				aus, cur = append(aus, cur), nil
			}
		}
	}
	if len(aus) != len(samples) {
		t.Fatalf("%d access units, %d packets", len(aus), len(samples))
	}
	var track recorder.Track
	for i := range samples {
		samples[i].AU = aus[i]
		samples[i].Received = t0.Add(samples[i].DTS - samples[0].DTS)
		if samples[i].Key && track.SPS == nil {
			for _, n := range aus[i] {
				switch {
				case n[0]&0x1F == 7 && !strings.HasPrefix(bsf, "hevc"):
					track.SPS = n
				case n[0]&0x1F == 8 && !strings.HasPrefix(bsf, "hevc"):
					track.PPS = n
				case strings.HasPrefix(bsf, "hevc") && (n[0]>>1)&0x3F == 32:
					track.VPS = n
				case strings.HasPrefix(bsf, "hevc") && (n[0]>>1)&0x3F == 33:
					track.SPS = n
				case strings.HasPrefix(bsf, "hevc") && (n[0]>>1)&0x3F == 34:
					track.PPS = n
				}
			}
		}
	}
	track.ClockRate = 90000
	return samples, track
}
