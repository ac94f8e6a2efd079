package daemon

import (
	"errors"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/recorder"
	"github.com/outpost-gw/outpost/recorder/segment"
	"github.com/outpost-gw/outpost/recorder/synth"
)

// writeSegments records total of a small synthetic camera from start into
// segments of segDur under root, as the daemon's writer would, and returns
// them in order.
func writeSegments(t *testing.T, root, camera string, start time.Time, total, segDur time.Duration) []segment.SegmentInfo {
	t.Helper()
	var out []segment.SegmentInfo
	w, err := segment.New(segment.Config{Dir: root, Camera: camera, SegmentDuration: segDur, PartDuration: 250 * time.Millisecond,
		OnSegment: func(info segment.SegmentInfo) { out = append(out, info) }})
	if err != nil {
		t.Fatal(err)
	}
	src, err := synth.New(synth.Options{Width: 64, Height: 48, FPS: 10, GOP: 5, Start: start})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start([]recorder.Track{src.Track()}); err != nil {
		t.Fatal(err)
	}
	for {
		s := src.Next()
		if s.DTS >= total {
			break
		}
		if err := w.Write(s); err != nil {
			t.Fatal(err)
		}
	}
	w.End(errors.New("done"))
	return out
}
