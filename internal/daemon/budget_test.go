package daemon

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/store"
	"github.com/outpost-gw/outpost/recorder/democam"
	"github.com/outpost-gw/outpost/recorder/index"
)

// TestBudgetRetentionKeepsNewest: with recorder.budget_mb smaller than what
// the camera records in a few seconds, the oldest segments go while
// recording continues, oldest first across cameras (an hour-old camera's
// segments before any of today's), and what is kept is the newest stretch
// without a hole: nothing recorded after the oldest kept segment is lost,
// files and index agree, and the total stays within the budget.
func TestBudgetRetentionKeepsNewest(t *testing.T) {
	cam, err := democam.Start(democam.Options{FPS: 10, GOP: 5}) // 320×240 I_PCM key frames: ~250 kB/s
	if err != nil {
		t.Fatal(err)
	}
	defer cam.Close()
	data := filepath.Join(t.TempDir(), "d")
	root := filepath.Join(data, "recordings")
	old := writeSegments(t, root, "yard", time.Now().Add(-time.Hour), 3*time.Second, time.Second)
	cfg := testConfig()
	cfg.Recorder.Cameras = []config.Camera{{ID: "door", URL: cam.URL}, {ID: "yard", URL: "rtsp://127.0.0.1:1/none"}}
	cfg.Recorder.SegmentDuration = config.Duration(time.Second)
	cfg.Recorder.PartDuration = config.Duration(250 * time.Millisecond)
	cfg.Recorder.BudgetMB = 1
	began := time.Now()
	r := start(t, Options{Config: cfg, DataDir: data})
	time.Sleep(8 * time.Second)
	r.stop(t)
	stopped := time.Now()

	st, err := store.Open(data, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ix := index.New(st)
	if yard, _ := ix.List("yard", began.Add(-2*time.Hour), stopped); len(yard) != 0 {
		t.Errorf("%d of the %d oldest segments (another camera) kept while newer ones went", len(yard), len(old))
	}
	for _, s := range old {
		if _, err := os.Stat(s.Path); err == nil {
			t.Errorf("oldest segment %s still on disk", s.Path)
		}
	}
	door, err := ix.List("door", began.Add(-time.Minute), stopped.Add(time.Minute))
	if err != nil || len(door) < 2 {
		t.Fatalf("door: %d segments kept, %v", len(door), err)
	}
	var total, largest int64
	for _, rec := range door {
		total += rec.Bytes
		largest = max(largest, rec.Bytes)
		if _, err := os.Stat(filepath.Join(root, rec.File)); err != nil {
			t.Errorf("indexed segment without its file: %v", err)
		}
	}
	files, _ := filepath.Glob(filepath.Join(root, "door", "*", "*.mp4"))
	if len(files) != len(door) {
		t.Errorf("%d door files on disk, %d in the index", len(files), len(door))
	}
	if budget := cfg.Recorder.BudgetMB << 20; total > budget+largest { // the last segment closed on the way out
		t.Errorf("%d bytes kept, budget %d", total, budget)
	}
	if first := door[0].Start; first.Sub(began) < 2*time.Second {
		t.Errorf("the oldest kept segment starts %v after start-up: the budget never bit (%d segments, %d bytes)", first.Sub(began), len(door), total)
	}
	if spans := index.Spans(door, 2*cfg.Recorder.PartDuration.D()); len(spans) != 1 {
		t.Errorf("kept recordings have holes: spans %+v", spans)
	}
	if last := door[len(door)-1].End(); stopped.Sub(last) > 1500*time.Millisecond {
		t.Errorf("newest kept segment ends %v before the stop", stopped.Sub(last))
	}
	t.Logf("kept %d segments, %d bytes, from %v after start-up", len(door), total, door[0].Start.Sub(began).Round(time.Millisecond))
}
