package ingest

import (
	"errors"
	"testing"
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
