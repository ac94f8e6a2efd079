package daemon

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/store"
	"github.com/outpost-gw/outpost/recorder/index"
)

// TestStartupReconcilesIndex: at start-up the index comes to agree with the
// files: an entry whose file was deleted by hand goes, as does one left by a
// crash between a file's removal and its entry's; a segment closed without
// its entry (the daemon died) comes in.
func TestStartupReconcilesIndex(t *testing.T) {
	data := filepath.Join(t.TempDir(), "d")
	root := filepath.Join(data, "recordings")
	t0 := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	segs := writeSegments(t, root, "door", t0, 4*time.Second, time.Second)
	if len(segs) != 4 {
		t.Fatalf("%d segments written, want 4", len(segs))
	}
	st, err := store.Open(data, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ix := index.New(st)
	for _, s := range segs[:3] { // segs[3]: the daemon died before its entry
		rel, _ := filepath.Rel(root, s.Path)
		if err := ix.Add(index.Recording{Camera: "door", File: rel, Start: s.Start, Duration: s.Duration, Bytes: s.Bytes}); err != nil {
			t.Fatal(err)
		}
	}
	ghost := index.Recording{Camera: "door", File: "door/" + t0.Format("2006-01-02") + "/gone.mp4",
		Start: t0.Add(-time.Minute), Duration: time.Second, Bytes: 1000}
	if err := ix.Add(ghost); err != nil { // a crash between file and entry removal
		t.Fatal(err)
	}
	st.Close()
	if err := os.Remove(segs[1].Path); err != nil { // deleted by hand
		t.Fatal(err)
	}

	cfg := testConfig()
	cfg.Recorder.Cameras = []config.Camera{{ID: "door", URL: "rtsp://127.0.0.1:1/none"}}
	r := start(t, Options{Config: cfg, DataDir: data})
	defer r.stop(t)
	recs, err := r.d.rec.ix.List("door", t0.Add(-time.Hour), t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var got []time.Time
	for _, rec := range recs {
		got = append(got, rec.Start)
	}
	want := []time.Time{segs[0].Start, segs[2].Start, segs[3].Start}
	if len(got) != len(want) {
		t.Fatalf("index after start-up: %v, want %v", got, want)
	}
	for i := range want {
		if !got[i].Equal(want[i]) {
			t.Errorf("entry %d starts %v, want %v", i, got[i], want[i])
		}
	}
}
