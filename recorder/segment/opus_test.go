package segment

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"

	"github.com/outpost-gw/outpost/internal/testutil/tools"
	"github.com/outpost-gw/outpost/recorder"
)

// TestOpusMultiFramePackets: Opus packets carry one to several frames
// (TOC codes 0-3, frame sizes 2.5 to 60 ms), and a sample may carry
// several packets. Each packet becomes one fMP4 sample lasting what its
// TOC says, the last one of the segment included, so the track lasts
// exactly what was written.
func TestOpusMultiFramePackets(t *testing.T) {
	tools.Need(t, "ffprobe")
	const silk60, celt20, celt10, celt2_5 = 3 << 3, 31 << 3, 30 << 3, 28 << 3 // TOC configs
	packets := []struct {
		data []byte
		ms   float64
	}{
		{[]byte{celt20 | 3, 3, 0xAA, 0xBB, 0xCC}, 60},            // code 3: three 20 ms frames, CBR
		{[]byte{celt10 | 1, 0xAA, 0xBB}, 20},                     // code 1: two 10 ms frames
		{[]byte{celt2_5 | 3, 4, 1, 2, 3, 4}, 10},                 // code 3: four 2.5 ms frames
		{[]byte{celt20 | 2, 1, 0xAA, 0xBB}, 40},                  // code 2: two 20 ms frames, sizes differ
		{[]byte{silk60, 0xAA}, 60},                               // code 0: one 60 ms frame
		{[]byte{celt20 | 3 | 0x04, 2 | 0x80, 0, 0xAA, 0xBB}, 40}, // stereo flag, code 3 with padding: two frames
	}
	var infos []SegmentInfo
	w := newWriter(t, Config{SegmentDuration: time.Hour, PartDuration: 500 * time.Millisecond}, &infos)
	if err := w.Start([]recorder.Track{{Codec: recorder.Opus, ClockRate: 48000, Channels: 1}}); err != nil {
		t.Fatal(err)
	}
	var want []int // sample durations at 48 kHz
	var at time.Duration
	for round := range 20 {
		// Even rounds: one packet per sample; odd rounds: all in one sample.
		if round%2 == 0 {
			for _, p := range packets {
				if err := w.Write(recorder.Sample{DTS: at, PTS: at, Key: true, AU: [][]byte{p.data}, Received: t0.Add(at)}); err != nil {
					t.Fatal(err)
				}
				d := time.Duration(p.ms * float64(time.Millisecond))
				at += d
				want = append(want, int(p.ms*48))
			}
			continue
		}
		var au [][]byte
		start := at
		for _, p := range packets {
			au = append(au, p.data)
			at += time.Duration(p.ms * float64(time.Millisecond))
			want = append(want, int(p.ms*48))
		}
		if err := w.Write(recorder.Sample{DTS: start, PTS: start, Key: true, AU: au, Received: t0.Add(start)}); err != nil {
			t.Fatal(err)
		}
	}
	w.End(nil)
	if len(infos) != 1 {
		t.Fatalf("%d segments", len(infos))
	}
	if infos[0].Duration != at {
		t.Errorf("segment lasts %v, %v written", infos[0].Duration, at)
	}
	b, err := os.ReadFile(infos[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	var parts fmp4.Parts
	if err := parts.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, p := range parts {
		for _, tr := range p.Tracks {
			for _, s := range tr.Samples {
				got = append(got, int(s.Duration))
			}
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("sample durations\n%v\nwant\n%v", got, want)
	}
	// ffprobe reads it as Opus lasting as long.
	out := run(t, "ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=codec_name,duration", "-of", "csv=p=0", infos[0].Path)
	if want := fmt.Sprintf("opus,%.6f", at.Seconds()); out != want {
		t.Errorf("ffprobe: %s, want %s", out, want)
	}
}
