package segment

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/testutil/tools"
	"github.com/outpost-gw/outpost/recorder"
)

// TestBFramesSessionEnd: a session of H264 with B-frames that ends right
// after a P frame, before the B-frames shown ahead of it arrive. The
// last segment is cut back to frames that play in order (no hole in the
// presentation), and segments of one session abut exactly although the
// key frames' receive times jitter.
func TestBFramesSessionEnd(t *testing.T) {
	tools.Need(t, "ffmpeg", "ffprobe")
	samples, track := encode(t, []string{"-c:v", "libx264", "-preset", "superfast", "-bf", "2", "-g", "25", "-x264-params", "log=-1:b-adapt=0"}, "h264_mp4toannexb",
		func(n []byte) bool { return n[0]&0x1F >= 1 && n[0]&0x1F <= 5 })
	track.Codec = recorder.H264
	delay := samples[0].PTS - samples[0].DTS
	if delay <= 0 {
		t.Fatalf("first frame PTS−DTS %v: no reordering", delay)
	}
	end := -1 // a P frame whose B-frames come after it
	for i := 100; i < len(samples); i++ {
		if !samples[i].Key && samples[i].PTS-samples[i].DTS > delay {
			end = i
			break
		}
	}
	if end < 0 {
		t.Fatal("no P frame ahead of B-frames")
	}
	var infos []SegmentInfo
	w := newWriter(t, Config{SegmentDuration: 2 * time.Second, PartDuration: 500 * time.Millisecond}, &infos)
	if err := w.Start([]recorder.Track{track}); err != nil {
		t.Fatal(err)
	}
	for i, s := range samples[:end+1] {
		s.Received = s.Received.Add(time.Duration(i*7919%37) * time.Millisecond) // 0..36 ms late
		if err := w.Write(s); err != nil {
			t.Fatal(err)
		}
	}
	w.End(nil)
	if len(infos) < 2 {
		t.Fatalf("%d segments", len(infos))
	}
	for i := 1; i < len(infos); i++ {
		if got, want := infos[i].Start, infos[i-1].Start.Add(infos[i-1].Duration); got.Sub(want).Abs() > time.Millisecond {
			t.Errorf("segment %d starts at %v, the previous one ends at %v", i, got.Format("15:04:05.000"), want.Format("15:04:05.000"))
		}
	}
	last := infos[len(infos)-1].Path
	decode(t, last)
	var pts []float64
	for _, p := range strings.Fields(run(t, "ffprobe", "-v", "error", "-show_entries", "packet=pts_time", "-of", "csv=p=0", last)) {
		f, _ := strconv.ParseFloat(p, 64)
		pts = append(pts, f)
	}
	slices.Sort(pts)
	for i := 1; i < len(pts); i++ {
		if d := pts[i] - pts[i-1]; math.Abs(d-0.04) > 0.005 {
			t.Errorf("last segment: presentation %.3f → %.3f, a hole", pts[i-1], pts[i])
		}
	}
	if st := w.Stats(); st.Dropped == 0 {
		t.Errorf("no frame dropped at the end")
	}
}
