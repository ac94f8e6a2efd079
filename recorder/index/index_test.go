package index

import (
	"log/slog"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/store"
)

func TestIndex(t *testing.T) {
	st, err := store.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ix := New(st)
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	rec := func(cam string, startMin, durMin int) Recording {
		return Recording{Camera: cam, File: cam + "/x.mp4", Start: t0.Add(time.Duration(startMin) * time.Minute), Duration: time.Duration(durMin) * time.Minute}
	}
	for _, r := range []Recording{rec("door", 0, 1), rec("door", 1, 1), rec("door", 5, 1), rec("yard", 2, 1)} {
		if err := ix.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := ix.Add(rec("../etc", 0, 1)); err == nil {
		t.Error("camera id with a path accepted")
	}
	for _, tc := range []struct {
		from, to int
		want     int
	}{
		{0, 10, 3}, {0, 1, 1}, {1, 2, 1}, {0, 2, 2}, {2, 5, 0}, {2, 6, 1}, {-10, 0, 0}, {5, 100, 1},
	} {
		got, err := ix.List("door", t0.Add(time.Duration(tc.from)*time.Minute), t0.Add(time.Duration(tc.to)*time.Minute))
		if err != nil || len(got) != tc.want {
			t.Errorf("List [%d,%d) = %d recordings, %v; want %d", tc.from, tc.to, len(got), err, tc.want)
		}
	}
	all, _ := ix.List("door", t0, t0.Add(time.Hour))
	spans := Spans(all, time.Second)
	if len(spans) != 2 || spans[0].End != t0.Add(2*time.Minute) || spans[1].Start != t0.Add(5*time.Minute) {
		t.Errorf("spans %+v", spans)
	}
	old, _ := ix.Oldest(2)
	if len(old) != 2 || old[0].Start != t0 || old[1].Start != t0.Add(time.Minute) {
		t.Errorf("oldest %+v", old)
	}
	ix.Remove("door", t0)
	old, _ = ix.Oldest(1)
	if old[0].Start != t0.Add(time.Minute) {
		t.Errorf("after remove: %+v", old)
	}
	cams, _ := ix.Cameras()
	if len(cams) != 2 {
		t.Errorf("cameras %v", cams)
	}
}
