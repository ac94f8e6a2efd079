package synth

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/outpost-gw/outpost/internal/testutil/tools"
	"github.com/outpost-gw/outpost/recorder"
)

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil || errb.Len() > 0 {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

func TestH264Decodes(t *testing.T) {
	tools.Need(t, "ffmpeg", "ffprobe")
	for _, tc := range []struct {
		name string
		o    Options
		n    int
	}{
		{"320x240", Options{Width: 320, Height: 240, FPS: 25, GOP: 10}, 25},
		{"cropped 100x50", Options{Width: 100, Height: 50, FPS: 10, GOP: 4}, 13},
		{"reorder", Options{Width: 64, Height: 48, FPS: 30, GOP: 7, Reorder: true}, 30},
		{"one-frame GOP", Options{Width: 32, Height: 32, GOP: 1}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := New(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			var raw []byte
			var lastDTS time.Duration = -1
			seenPTS := map[time.Duration]bool{}
			for i := range tc.n {
				s := src.Next()
				if s.DTS <= lastDTS || s.PTS < s.DTS || seenPTS[s.PTS] {
					t.Fatalf("sample %d: dts %v (last %v) pts %v", i, s.DTS, lastDTS, s.PTS)
				}
				lastDTS, seenPTS[s.PTS] = s.DTS, true
				if s.Key != (i%tc.o.GOP == 0) || s.Key != h264.IsRandomAccess(s.AU) {
					t.Fatalf("sample %d: key %v", i, s.Key)
				}
				b, _ := h264.AnnexB(s.AU).Marshal()
				raw = append(raw, b...)
			}
			var sps h264.SPS
			if err := sps.Unmarshal(src.Track().SPS); err != nil {
				t.Fatal(err)
			}
			if sps.Width() != tc.o.Width || sps.Height() != tc.o.Height {
				t.Fatalf("SPS says %dx%d", sps.Width(), sps.Height())
			}
			f := filepath.Join(t.TempDir(), "s.h264")
			if err := os.WriteFile(f, raw, 0o600); err != nil {
				t.Fatal(err)
			}
			run(t, "ffmpeg", "-v", "error", "-xerror", "-f", "h264", "-i", f, "-f", "null", "-")
			got := run(t, "ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
				"-show_entries", "stream=nb_read_frames,width,height", "-of", "csv=p=0", f)
			want := strconv.Itoa(tc.o.Width) + "," + strconv.Itoa(tc.o.Height) + "," + strconv.Itoa(tc.n)
			if got != want {
				t.Fatalf("ffprobe: %q, want %q", got, want)
			}
		})
	}
}

func TestAudio(t *testing.T) {
	for _, tc := range []AudioOptions{
		{Codec: recorder.AAC, SampleRate: 44100, Channels: 2, FramesPerSample: 3},
		{Codec: recorder.Opus},
		{Codec: recorder.G711, MULaw: true},
	} {
		a, err := NewAudio(tc)
		if err != nil {
			t.Fatal(err)
		}
		s0, s1 := a.Next(), a.Next()
		if len(s0.AU) != max(tc.FramesPerSample, 1) || !s0.Key || s1.DTS <= s0.DTS || a.Track().Codec != tc.Codec {
			t.Fatalf("%s: %+v %+v", tc.Codec, s0, s1)
		}
	}
	if _, err := NewAudio(AudioOptions{Codec: recorder.H264}); err == nil {
		t.Fatal("video codec accepted")
	}
}

// TestSilentAACDecodes wraps the silent frames in ADTS and decodes them.
func TestSilentAACDecodes(t *testing.T) {
	tools.Need(t, "ffmpeg", "ffprobe")
	for _, ch := range []int{1, 2} {
		a, err := NewAudio(AudioOptions{Codec: recorder.AAC, Channels: ch})
		if err != nil {
			t.Fatal(err)
		}
		var conf mpeg4audio.AudioSpecificConfig
		if err := conf.Unmarshal(a.Track().AACConfig); err != nil {
			t.Fatal(err)
		}
		var pkts mpeg4audio.ADTSPackets
		for range 50 {
			for _, fr := range a.Next().AU {
				pkts = append(pkts, &mpeg4audio.ADTSPacket{Type: conf.Type, SampleRate: conf.SampleRate, ChannelCount: conf.ChannelCount, AU: fr})
			}
		}
		raw, err := pkts.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), "s.aac")
		if err := os.WriteFile(f, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, "ffmpeg", "-v", "error", "-xerror", "-f", "aac", "-i", f, "-f", "null", "-")
		got := run(t, "ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames,channels", "-of", "csv=p=0", f)
		if want := strconv.Itoa(ch) + ",50"; got != want {
			t.Fatalf("ffprobe: %q, want %q", got, want)
		}
	}
}

func TestOptions(t *testing.T) {
	for _, o := range []Options{{Width: 15, Height: 16}, {Width: 17, Height: 16}, {FPS: -1}, {GOP: -2}} {
		if _, err := New(o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}
