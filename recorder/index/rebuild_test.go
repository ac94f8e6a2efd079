package index

import (
	"log/slog"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/store"
)

// TestRebuild: the index comes to agree with the files: entries without a
// file go (unless kept), files without an entry come in, changed ones are
// replaced, and a file with a bad camera is reported, the rest applied.
func TestRebuild(t *testing.T) {
	st, err := store.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ix := New(st)
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	rec := func(cam string, startMin int, file string) Recording {
		return Recording{Camera: cam, File: file, Start: t0.Add(time.Duration(startMin) * time.Minute), Duration: time.Minute, Bytes: 100}
	}
	for _, r := range []Recording{
		rec("door", 0, "door/a.mp4"),    // file gone: dropped
		rec("door", 1, "door/b.mp4"),    // still there
		rec("door", 2, "door/c.mp4"),    // repaired shorter: updated
		rec("door", 3, "door/d.mp4"),    // not scanned, but keep says it may be there
		rec("yard", 0, "yard/e.mp4"),    // camera gone entirely
		rec("gate", 0, "../../etc.mp4"), // never a file under the root, even if kept
	} {
		if err := ix.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	shorter := rec("door", 2, "door/c.mp4")
	shorter.Duration, shorter.Bytes = 30*time.Second, 50
	files := []Recording{rec("door", 1, "door/b.mp4"), shorter, rec("door", 4, "door/f.mp4"), rec("porch", 0, "porch/g.mp4"),
		rec("../x", 0, "x/h.mp4")}
	keep := func(r Recording) bool { return r.File == "door/d.mp4" || r.Camera == "gate" }
	res, err := ix.Rebuild(files, keep)
	if err == nil {
		t.Error("a file with a bad camera id was not reported")
	}
	if res.Added != 2 || res.Updated != 1 || res.Kept != 1 || len(res.Dropped) != 3 {
		t.Errorf("rebuild: %+v", res)
	}
	all, _ := ix.Oldest(100)
	got := map[string]time.Duration{}
	for _, r := range all {
		got[r.File] = r.Duration
	}
	want := map[string]time.Duration{"door/b.mp4": time.Minute, "door/c.mp4": 30 * time.Second, "door/d.mp4": time.Minute,
		"door/f.mp4": time.Minute, "porch/g.mp4": time.Minute}
	if len(got) != len(want) {
		t.Errorf("index after rebuild: %v, want %v", got, want)
	}
	for f, d := range want {
		if got[f] != d {
			t.Errorf("%s: %v, want %v", f, got[f], d)
		}
	}
	cams, _ := ix.Cameras()
	if len(cams) != 2 {
		t.Errorf("cameras after rebuild %v, want door and porch", cams)
	}
	// Again with the same files: nothing to do.
	res, err = ix.Rebuild(files[:4], nil)
	if err != nil || res.Added != 0 || res.Updated != 0 || len(res.Dropped) != 1 || res.Dropped[0].File != "door/d.mp4" {
		t.Errorf("second rebuild without keep: %+v, %v", res, err)
	}
}
