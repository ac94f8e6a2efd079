package ingest

import (
	"errors"
	"fmt"
	"slices"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

// dtsSource gives the DTS of an access unit (mediacommon's extractors and
// reorderDTS).
type dtsSource interface {
	Extract(au [][]byte, pts int64) (int64, error)
}

// reorderDTS derives H264 DTS from PTS alone, for streams whose SPS says
// how many frames are reordered (VUI bitstream restriction; Baseline has
// none) and, when some are, the frame rate (VUI timing): the n-th frame in
// decode order gets the n-th smallest PTS of the stream, so every DTS is
// at or before its PTS and the DTS timeline is exactly as long as the
// presentation. The first r frames, which have no such PTS yet, get DTS
// one frame apart before the first key frame's PTS.
//
// mediacommon's extractor, used for other streams, starts with DTS = PTS
// at the first IDR and then squeezes the reordering delay in with 1-tick
// steps: the first segment of every session came out a delay short, its
// first samples one tick long.
type reorderDTS struct {
	r     int
	step  int64   // one frame, in 90 kHz ticks
	n     int     // frames seen
	first int64   // PTS of the first frame (an IDR: shown first)
	top   []int64 // the r+1 largest PTS seen, ascending
	prev  int64
}

// newReorderDTS returns nil when the SPS does not say enough.
func newReorderDTS(sps []byte) *reorderDTS {
	var s h264.SPS
	if s.Unmarshal(sps) != nil {
		return nil
	}
	r := -1
	if s.VUI != nil && s.VUI.BitstreamRestriction != nil {
		r = int(s.VUI.BitstreamRestriction.MaxNumReorderFrames)
	} else if s.ProfileIdc == 66 { // Baseline: no B-frames
		r = 0
	}
	if r < 0 || r > 16 {
		return nil
	}
	g := &reorderDTS{r: r}
	if r > 0 {
		ti := (*h264.SPS_TimingInfo)(nil)
		if s.VUI != nil {
			ti = s.VUI.TimingInfo
		}
		if ti == nil || ti.NumUnitsInTick == 0 || ti.TimeScale == 0 {
			return nil
		}
		g.step = int64(90000) * 2 * int64(ti.NumUnitsInTick) / int64(ti.TimeScale)
		if g.step <= 0 || g.step > 90000*10 {
			return nil
		}
	}
	return g
}

var errReorder = errors.New("frames reordered deeper than the SPS says")

// Extract implements dtsSource; au is not looked at.
func (g *reorderDTS) Extract(_ [][]byte, pts int64) (int64, error) {
	if g.r == 0 {
		if g.n > 0 && pts < g.prev { // an equal one is dropped downstream, like any repeated DTS
			return 0, fmt.Errorf("%w (none): PTS %d after %d", errReorder, pts, g.prev)
		}
		g.n++
		g.prev = pts
		return pts, nil
	}
	if g.n == 0 {
		g.first = pts
	}
	i, _ := slices.BinarySearch(g.top, pts)
	g.top = slices.Insert(g.top, i, pts)
	if len(g.top) > g.r+1 {
		g.top = g.top[1:]
	}
	var dts int64
	if g.n < g.r {
		dts = g.first - int64(g.r-g.n)*g.step
	} else {
		dts = g.top[0] // the (r+1)-th largest PTS so far
	}
	if dts > pts || (g.n > 0 && dts < g.prev) {
		return 0, fmt.Errorf("%w (%d): PTS %d gives DTS %d after %d", errReorder, g.r, pts, dts, g.prev)
	}
	g.n++
	g.prev = dts
	return dts, nil
}
