package ingest

import (
	"errors"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"

	"github.com/outpost-gw/outpost/recorder"
	"github.com/outpost-gw/outpost/recorder/synth"
)

// TestReorderDTS: DTS from PTS alone for streams with B-frames: strictly
// increasing, never after the PTS, one frame apart from the first frame
// on (so the DTS timeline is as long as the presentation), and an error
// when the stream reorders deeper than declared.
func TestReorderDTS(t *testing.T) {
	const step = 3600 // 25 fps
	// Decode order of IBBP with two B-frames: I0 P3 B1 B2 P6 B4 B5 …, in frames.
	order := []int64{0, 3, 1, 2, 6, 4, 5, 9, 7, 8, 10, 13, 11, 12}
	for _, tc := range []struct {
		name  string
		r     int
		order []int64
		bad   int // index of the first error, -1 for none
	}{
		{"two B-frames", 2, order, -1},
		{"one B-frame enough for IBBP", 1, order, -1},
		{"pyramid deeper than declared", 1, []int64{0, 4, 2, 1, 3}, 3},
		{"no reordering", 0, []int64{0, 1, 2, 3, 4}, -1},
		{"B-frame where none are declared", 0, []int64{0, 2, 1}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &reorderDTS{r: tc.r, step: step}
			const base = 1_000_000
			var prev int64
			for i, f := range tc.order {
				pts := base + f*step
				dts, err := g.Extract(nil, pts)
				if i == tc.bad {
					if !errors.Is(err, errReorder) {
						t.Fatalf("frame %d: err %v, want errReorder", i, err)
					}
					return
				}
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				want := base + int64(i-tc.r)*step
				if tc.r == 0 {
					want = pts
				}
				if tc.bad < 0 && dts != want {
					t.Errorf("frame %d (PTS %d): DTS %d, want %d", i, pts, dts, want)
				}
				if dts > pts || (i > 0 && dts <= prev) {
					t.Errorf("frame %d: DTS %d, PTS %d, previous DTS %d", i, dts, pts, prev)
				}
				prev = dts
			}
			if tc.bad >= 0 {
				t.Fatalf("no error at frame %d", tc.bad)
			}
		})
	}
}

// TestH264DepackReorder: a stream with reordered frames whose SPS says
// so (synth's Reorder: one reorder frame, 25 fps) gets DTS one frame
// apart from the first IDR on, one frame before its PTS; the same frames
// under an SPS that declares none fail once and then go to mediacommon's
// extractor for the rest of the session.
func TestH264DepackReorder(t *testing.T) {
	enc := &rtph264.Encoder{PayloadType: 96, PacketizationMode: 1}
	if err := enc.Init(); err != nil {
		t.Fatal(err)
	}
	reo, err := synth.New(synth.Options{Width: 64, Height: 48, FPS: 25, GOP: 10, Reorder: true})
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := synth.New(synth.Options{Width: 64, Height: 48, FPS: 25, GOP: 10})
	var samples []recorder.Sample
	for range 40 {
		samples = append(samples, reo.Next())
	}
	run := func(sps, pps []byte) ([]*unit, []error, *h264Depack) {
		d, err := newH264Depack(1, sps, pps)
		if err != nil {
			t.Fatal(err)
		}
		var units []*unit
		var errs []error
		for _, s := range samples {
			var au [][]byte
			for _, n := range s.AU {
				if typ := n[0] & 0x1F; typ != 7 && typ != 8 {
					au = append(au, n)
				}
			}
			pkts, err := enc.Encode(au)
			if err != nil {
				t.Fatal(err)
			}
			pts := int64(s.PTS * 90000 / time.Second)
			for _, p := range pkts {
				p.Timestamp = uint32(pts)
				u, err := d.push(p, pts)
				if err != nil {
					errs = append(errs, err)
				}
				if u != nil {
					units = append(units, u)
				}
			}
		}
		return units, errs, d
	}
	tr := reo.Track()
	units, errs, _ := run(tr.SPS, tr.PPS)
	if len(errs) > 0 || len(units) != len(samples) {
		t.Fatalf("%d units of %d, errors %v", len(units), len(samples), errs)
	}
	for i, u := range units {
		if want := units[0].pts - 3600 + int64(i)*3600; u.dts != want || u.dts > u.pts {
			t.Errorf("unit %d: DTS %d PTS %d, want DTS %d", i, u.dts, u.pts, want)
		}
	}
	tr = plain.Track()
	_, errs, d := run(tr.SPS, tr.PPS)
	if len(errs) == 0 || !errors.Is(errs[0], errReorder) {
		t.Fatalf("errors %v, want errReorder first", errs)
	}
	for _, err := range errs[1:] { // mediacommon's own complaints
		if errors.Is(err, errReorder) {
			t.Errorf("reorderDTS used again after it failed: %v", err)
		}
	}
	if !d.noReorder {
		t.Error("noReorder not set")
	}
}
