package hold

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/store"
	"github.com/outpost-gw/outpost/recorder/index"
	"github.com/outpost-gw/outpost/recorder/retention"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func openStore(t *testing.T, dir string) *store.Store {
	t.Helper()
	st, err := store.Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestHoldsAndRetention: segments under a hold survive a retention pass
// that deletes everything else; once the hold is released, or has expired,
// the next pass deletes them. Holds survive a restart.
func TestHoldsAndRetention(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "recordings")
	st := openStore(t, dir)
	ix := index.New(st)
	t0 := now.Add(-48 * time.Hour) // two days old: the age rule wants all of them gone
	var segs []index.Recording
	for _, cam := range []string{"door", "yard"} {
		for i := range 6 {
			start := t0.Add(time.Duration(i) * time.Minute)
			rel := filepath.Join(cam, start.Format("2006-01-02"), fmt.Sprintf("%s.mp4", start.Format("150405")))
			if err := os.MkdirAll(filepath.Join(root, filepath.Dir(rel)), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, rel), []byte("segment"), 0o600); err != nil {
				t.Fatal(err)
			}
			r := index.Recording{Camera: cam, File: rel, Start: start, Duration: time.Minute, Bytes: 7}
			if err := ix.Add(r); err != nil {
				t.Fatal(err)
			}
			segs = append(segs, r)
		}
	}
	clk := &clock{t: now}
	set, err := Open(st, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	// door minutes 1..2 until tomorrow, door minute 4 for an hour, yard minute 0.5..1.5.
	for _, h := range []Hold{
		{ID: "case-1", Camera: "door", Start: t0.Add(time.Minute + time.Second), End: t0.Add(2*time.Minute + time.Second), Until: now.Add(24 * time.Hour)},
		{ID: "case-2", Camera: "door", Start: t0.Add(4 * time.Minute), End: t0.Add(5 * time.Minute), Until: now.Add(time.Hour)},
		{ID: "case-3", Camera: "yard", Start: t0.Add(30 * time.Second), End: t0.Add(90 * time.Second), Until: now.Add(24 * time.Hour)},
	} {
		if _, err := set.Put(h); err != nil {
			t.Fatal(err)
		}
	}
	c := &retention.Cleaner{Root: root, Index: ix, MaxAge: 24 * time.Hour, Now: clk.now, Held: set.Held}
	kept := func() []string {
		t.Helper()
		all, err := ix.Oldest(100)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range all {
			if _, err := os.Stat(filepath.Join(root, r.File)); err != nil {
				t.Errorf("%s: entry kept, file gone", r.File)
			}
			out = append(out, fmt.Sprintf("%s+%d", r.Camera, int(r.Start.Sub(t0)/time.Minute)))
		}
		slices.Sort(out)
		return out
	}
	pass := func(want ...string) {
		t.Helper()
		if _, err := c.Pass(); err != nil {
			t.Fatal(err)
		}
		if got := kept(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("kept %v, want %v", got, want)
		}
	}
	// case-1 overlaps door+1 and door+2, case-2 door+4 exactly, case-3 yard+0 and yard+1.
	pass("door+1", "door+2", "door+4", "yard+0", "yard+1")

	// A restart: the holds come back from the store.
	set, err = Open(st, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	c.Held = set.Held
	if len(set.List()) != 3 {
		t.Fatalf("holds after reopening: %+v", set.List())
	}
	if _, err := set.Release("case-3"); err != nil {
		t.Fatal(err)
	}
	if _, err := set.Release("case-3"); !errors.Is(err, ErrUnknown) {
		t.Errorf("second release: %v", err)
	}
	pass("door+1", "door+2", "door+4")

	// case-2 expires: its segment goes at the next pass, even before Expire
	// has dropped it.
	clk.add(time.Hour)
	if next := set.Next(); !next.Equal(now.Add(time.Hour)) {
		t.Errorf("next expiry %v", next)
	}
	pass("door+1", "door+2")
	gone, err := set.Expire()
	if err != nil || len(gone) != 1 || gone[0].ID != "case-2" {
		t.Errorf("expired %+v, %v", gone, err)
	}
	set, _ = Open(st, clk.now)
	if l := set.List(); len(l) != 1 || l[0].ID != "case-1" {
		t.Errorf("holds in the store after expiry: %+v", l)
	}
}

func TestSetFull(t *testing.T) {
	st := openStore(t, t.TempDir())
	set, err := Open(st, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	h := Hold{Camera: "door", Start: now.Add(-time.Hour), End: now, Until: now.Add(time.Hour)}
	for i := range MaxHolds {
		h.ID = fmt.Sprint("h", i)
		if _, err := set.Put(h); err != nil {
			t.Fatal(err)
		}
	}
	h.ID = "one-more"
	if _, err := set.Put(h); !errors.Is(err, ErrFull) {
		t.Errorf("hold %d: %v, want ErrFull", MaxHolds+1, err)
	}
	h.ID = "h0"
	h.Until = now.Add(2 * time.Hour)
	if replaced, err := set.Put(h); err != nil || !replaced {
		t.Errorf("extending a hold when full: %v, %v", replaced, err)
	}
}
