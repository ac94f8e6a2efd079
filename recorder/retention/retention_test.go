package retention

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/hardware"
	"github.com/outpost-gw/outpost/internal/store"
	"github.com/outpost-gw/outpost/recorder/index"
)

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

// env is a recordings root with a real index over a store. Its index
// wrapper records the order of removals and can be made to fail them.
type env struct {
	t       *testing.T
	root    string
	ix      *index.Index
	removed []string
	failRm  error
}

func (e *env) Oldest(n int) ([]index.Recording, error) { return e.ix.Oldest(n) }

func (e *env) Remove(camera string, start time.Time) error {
	if e.failRm != nil {
		return e.failRm
	}
	e.removed = append(e.removed, label(camera, start))
	return e.ix.Remove(camera, start)
}

func label(camera string, start time.Time) string {
	return fmt.Sprintf("%s@%v", camera, start.Sub(t0).Minutes())
}

func newEnv(t *testing.T) *env {
	st, err := store.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &env{t: t, root: t.TempDir(), ix: index.New(st)}
}

// rec returns a one-minute recording of camera starting min minutes after
// t0, filed as the segment writer does.
func rec(camera string, min float64, size int64) index.Recording {
	start := t0.Add(time.Duration(min * float64(time.Minute)))
	file := filepath.Join(camera, start.Format("2006-01-02"), start.Format("20060102T150405.000Z")+".mp4")
	return index.Recording{Camera: camera, File: file, Start: start, Duration: time.Minute, Bytes: size}
}

// add indexes r and, unless noFile, writes its file.
func (e *env) add(r index.Recording, noFile bool) {
	e.t.Helper()
	if !noFile {
		p := filepath.Join(e.root, r.File)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			e.t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, r.Bytes), 0o644); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := e.ix.Add(r); err != nil {
		e.t.Fatal(err)
	}
}

// left lists the indexed recordings, oldest first.
func (e *env) left() []string {
	e.t.Helper()
	all, err := e.ix.Oldest(math.MaxInt)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, r := range all {
		out = append(out, label(r.Camera, r.Start))
	}
	return out
}

// disk reports a volume of capacity bytes holding exactly the files under
// root, so that removals show up as free space.
func (e *env) disk(capacity uint64) func(string) (hardware.DiskUsage, error) {
	return func(path string) (hardware.DiskUsage, error) {
		if path != e.root {
			return hardware.DiskUsage{}, fmt.Errorf("disk asked about %q", path)
		}
		var used uint64
		err := filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			fi, err := d.Info()
			used += uint64(fi.Size())
			return err
		})
		free := capacity - min(used, capacity)
		return hardware.DiskUsage{TotalBytes: capacity, FreeBytes: free, AvailBytes: free}, err
	}
}

func (e *env) cleaner() *Cleaner {
	return &Cleaner{
		Root:  e.root,
		Index: e,
		Now:   func() time.Time { return t0.Add(10 * time.Minute) },
		Log:   slog.New(slog.NewTextHandler(e.t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
}

func TestPass(t *testing.T) {
	six := func(e *env) { // 100 bytes each, door and yard interleaved
		for i := range 6 {
			e.add(rec([]string{"door", "yard"}[i%2], float64(i), 100), false)
		}
	}
	outside := filepath.Join(t.TempDir(), "victim.mp4")
	for _, tc := range []struct {
		name        string
		setup       func(*env)
		config      func(*Cleaner, *env)
		wantRemoved []string // in order
		want        Result
	}{{
		name:  "nothing to do",
		setup: six,
		config: func(c *Cleaner, e *env) {
			c.MaxAge, c.BudgetBytes, c.MinFreeBytes, c.Disk = time.Hour, 600, 100, e.disk(10000)
		},
		want: Result{Bytes: 600},
	}, {
		name:  "age: ended more than MaxAge ago",
		setup: six,
		// now = t0+10m; ends at t0+1m..6m; t0+3m is exactly 7m old and stays.
		config:      func(c *Cleaner, e *env) { c.MaxAge = 7 * time.Minute },
		wantRemoved: []string{"door@0", "yard@1"},
		want:        Result{Deleted: 2, DeletedBytes: 200, Age: 2, Bytes: 400},
	}, {
		name:  "budget shared with OtherBytes",
		setup: six,
		config: func(c *Cleaner, e *env) {
			c.BudgetBytes, c.OtherBytes = 500, func() int64 { return 200 }
		},
		wantRemoved: []string{"door@0", "yard@1", "door@2"},
		want:        Result{Deleted: 3, DeletedBytes: 300, Budget: 3, Bytes: 300},
	}, {
		name:  "min free: space shows up as files go",
		setup: six,
		// 1000 - 600 = 400 available; 650 needs three removals.
		config:      func(c *Cleaner, e *env) { c.MinFreeBytes, c.Disk = 650, e.disk(1000) },
		wantRemoved: []string{"door@0", "yard@1", "door@2"},
		want:        Result{Deleted: 3, DeletedBytes: 300, Free: 3, Bytes: 300},
	}, {
		name:  "age first, then budget",
		setup: six,
		config: func(c *Cleaner, e *env) {
			c.MaxAge, c.BudgetBytes = 8*time.Minute, 300
		},
		wantRemoved: []string{"door@0", "yard@1", "door@2"},
		want:        Result{Deleted: 3, DeletedBytes: 300, Age: 1, Budget: 2, Bytes: 300},
	}, {
		name:  "held segments survive, the pass goes past them",
		setup: six,
		config: func(c *Cleaner, e *env) {
			c.BudgetBytes = 300
			c.Held = func(camera string, start, end time.Time) bool {
				if end.Sub(start) != time.Minute {
					t.Errorf("Held(%s, %v, %v): wrong end", camera, start, end)
				}
				return start.Equal(t0) || start.Equal(t0.Add(2*time.Minute))
			}
		},
		wantRemoved: []string{"yard@1", "yard@3", "door@4"},
		want:        Result{Deleted: 3, DeletedBytes: 300, Budget: 3, Held: 2, Bytes: 300},
	}, {
		name: "everything held",
		setup: func(e *env) {
			for i := range 200 { // more than a batch
				e.add(rec("door", float64(i)/100, 10), false)
			}
		},
		config: func(c *Cleaner, e *env) {
			c.BudgetBytes = 1
			c.Held = func(string, time.Time, time.Time) bool { return true }
		},
		want: Result{Held: 200, Bytes: 2000},
	}, {
		name: "missing file: entry dropped",
		setup: func(e *env) {
			e.add(rec("door", 0, 100), true)
			e.add(rec("door", 1, 100), false)
			e.add(rec("door", 9, 100), false)
		},
		config:      func(c *Cleaner, e *env) { c.MaxAge = 5 * time.Minute },
		wantRemoved: []string{"door@0", "door@1"},
		want:        Result{Deleted: 2, DeletedBytes: 200, Missing: 1, Age: 2, Bytes: 100},
	}, {
		name: "unsafe paths are never deleted",
		setup: func(e *env) {
			if err := os.WriteFile(outside, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			rel, _ := filepath.Rel(e.root, outside)
			if err := os.Mkdir(filepath.Join(e.root, "door"), 0o755); err != nil {
				t.Fatal(err)
			}
			bad := []string{"../x.mp4", rel, outside, "door/2026-11-22/a.txt", "door/2026-11-22/a",
				"door/../yard/a.mp4", "door//a.mp4", "./door/a.mp4", "yard/a.mp4", "door", "door/a\\b.mp4",
				"door/link.mp4", "door/evil/victim.mp4", "door/dir.mp4"}
			for i, f := range bad {
				r := rec("door", float64(i)/100, 1)
				r.File = f
				e.add(r, true)
			}
			if err := os.Symlink(outside, filepath.Join(e.root, "door/link.mp4")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Dir(outside), filepath.Join(e.root, "door/evil")); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(filepath.Join(e.root, "door/dir.mp4"), 0o755); err != nil {
				t.Fatal(err)
			}
			e.add(rec("door", 1, 100), false)
		},
		config:      func(c *Cleaner, e *env) { c.MaxAge = time.Minute },
		wantRemoved: []string{"door@1"},
		want:        Result{Deleted: 1, DeletedBytes: 100, Age: 1, Refused: 14, Bytes: 14},
	}, {
		name: "cameras interleaved: strictly oldest first",
		setup: func(e *env) {
			for i, cam := range []string{"a", "b", "c"} {
				for j := range 50 {
					e.add(rec(cam, float64(j)*0.3+float64(i)*0.1, 10), false)
				}
			}
		},
		config:      func(c *Cleaner, e *env) { c.BudgetBytes = 10 },
		wantRemoved: nil, // filled in below
		want:        Result{Deleted: 149, DeletedBytes: 1490, Budget: 149, Bytes: 10},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tc.setup(e)
			want := tc.wantRemoved
			if want == nil && tc.want.Deleted > 0 {
				want = e.left()[:tc.want.Deleted]
			}
			c := e.cleaner()
			tc.config(c, e)
			res, err := c.Pass()
			if tc.want.Failed == 0 && err != nil {
				t.Fatal(err)
			}
			if res != tc.want {
				t.Errorf("result\n%+v, want\n%+v", res, tc.want)
			}
			if !slices.Equal(e.removed, want) {
				t.Errorf("removed %v, want %v", e.removed, want)
			}
			for _, l := range e.removed {
				if slices.Contains(e.left(), l) {
					t.Errorf("%s removed but still indexed", l)
				}
			}
			if _, err := os.Stat(outside); tc.want.Refused > 0 && err != nil {
				t.Errorf("file outside root: %v", err)
			}
			if c.Last() != res {
				t.Errorf("Last() = %+v", c.Last())
			}
			// A second pass has nothing left to do.
			e.removed = nil
			if res2, _ := c.Pass(); res2.Deleted != 0 || len(e.removed) != 0 {
				t.Errorf("second pass deleted %v", e.removed)
			}
		})
	}
}

func TestFilesGo(t *testing.T) {
	e := newEnv(t)
	old, today, today2 := rec("door", -24*60, 100), rec("yard", 0, 100), rec("door", 1, 100)
	for _, r := range []index.Recording{old, today, today2} {
		e.add(r, false)
	}
	c := e.cleaner()
	c.BudgetBytes = 100
	if _, err := c.Pass(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		gone bool
	}{
		{old.File, true}, {filepath.Dir(old.File), true}, // the day is over: its directory goes
		{today.File, true}, {filepath.Dir(today.File), false}, // today's may get more
		{today2.File, false},
	} {
		if _, err := os.Stat(filepath.Join(e.root, tc.path)); errors.Is(err, fs.ErrNotExist) != tc.gone {
			t.Errorf("%s: stat %v, want gone %v", tc.path, err, tc.gone)
		}
	}
}

// A crash (here: a failing index) between the file's removal and the
// entry's leaves the entry; the next pass drops it.
func TestIndexFailsAfterFileRemoval(t *testing.T) {
	e := newEnv(t)
	r := rec("door", 0, 100)
	e.add(r, false)
	e.add(rec("door", 5, 100), false)
	c := e.cleaner()
	c.MaxAge = 5 * time.Minute
	e.failRm = errors.New("store broken")
	if _, err := c.Pass(); !errors.Is(err, e.failRm) {
		t.Fatalf("pass: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.root, r.File)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("file not removed first: %v", err)
	}
	e.failRm = nil
	res, err := c.Pass()
	if err != nil || res.Deleted != 1 || res.Missing != 1 || res.Bytes != 100 {
		t.Errorf("next pass %+v, %v", res, err)
	}
	if got := e.left(); !slices.Equal(got, []string{"door@5"}) {
		t.Errorf("left %v", got)
	}
}

// fakeIndex serves fixed recordings; its Oldest can run a hook first.
type fakeIndex struct {
	recs   []index.Recording
	oldest func(n int)
}

func (f *fakeIndex) Oldest(n int) ([]index.Recording, error) {
	if f.oldest != nil {
		f.oldest(n)
	}
	return f.recs[:min(n, len(f.recs))], nil
}

func (f *fakeIndex) Remove(string, time.Time) error { return errors.New("unexpected Remove") }

func TestRunningTotal(t *testing.T) {
	a, b, late := rec("door", 0, 100), rec("door", 1, 20), rec("door", 2, 3)
	ix := &fakeIndex{recs: []index.Recording{a, b}}
	c := &Cleaner{Root: t.TempDir(), Index: ix}
	c.Added(late) // before the seed: the seed will count it, if indexed
	// While the seed reads, b (already in what it reads) and late (not)
	// are added.
	ix.oldest = func(n int) {
		if n == math.MaxInt {
			c.Added(b)
			c.Added(late)
		}
	}
	res, err := c.Pass()
	if err != nil || res.Bytes != 123 {
		t.Fatalf("seeded %+v, %v; want 123 bytes", res, err)
	}
	ix.oldest = nil
	c.Added(rec("door", 3, 1000))
	if res, _ := c.Pass(); res.Bytes != 1123 {
		t.Errorf("after Added: %d bytes", res.Bytes)
	}
	c.Resync()
	if res, _ := c.Pass(); res.Bytes != 120 {
		t.Errorf("after Resync: %d bytes", res.Bytes)
	}
}

func TestRunKick(t *testing.T) {
	e := newEnv(t)
	e.add(rec("door", 0, 100), false)
	c := e.cleaner()
	c.MaxAge, c.Interval = 5*time.Minute, time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	wait := func(want []string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if slices.Equal(e.left(), want) {
				return
			}
		}
		t.Fatalf("left %v, want %v", e.left(), want)
	}
	wait(nil) // the first pass runs at once
	e.add(rec("door", 1, 100), false)
	e.add(rec("door", 6, 100), false)
	c.Kick()
	c.Kick() // coalesces, never blocks
	wait([]string{"door@6"})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestConfig(t *testing.T) {
	for _, c := range []*Cleaner{
		{Index: &fakeIndex{}},
		{Root: t.TempDir()},
		{Root: t.TempDir(), Index: &fakeIndex{}, MinFreeBytes: 1},
	} {
		if _, err := c.Pass(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: Pass: %v", c, err)
		}
		if err := c.Run(context.Background()); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: Run: %v", c, err)
		}
	}
	// A failing Disk disables the free rule for the pass; the others run.
	e := newEnv(t)
	e.add(rec("door", 0, 100), false)
	c := e.cleaner()
	c.MaxAge, c.MinFreeBytes = time.Minute, 1
	c.Disk = func(string) (hardware.DiskUsage, error) { return hardware.DiskUsage{}, hardware.ErrNotSupported }
	if res, err := c.Pass(); !errors.Is(err, hardware.ErrNotSupported) || res.Age != 1 {
		t.Errorf("pass %+v, %v", res, err)
	}
}

// Files that cannot be removed are passed over, up to maxFailures a pass.
func TestFailures(t *testing.T) {
	for _, n := range []int{3, maxFailures + 1} {
		e := newEnv(t)
		for i := range n {
			r := rec("door", float64(i)/100, 1)
			r.File = "door/" + strings.Repeat("x", 300) + strconv.Itoa(i) + ".mp4" // ENAMETOOLONG
			e.add(r, true)
		}
		e.add(rec("door", 1, 100), false)
		c := e.cleaner()
		c.MaxAge = time.Minute
		res, err := c.Pass()
		if err == nil || res.Failed != min(n, maxFailures) {
			t.Errorf("%d failing: %+v, %v", n, res, err)
		}
		if wantDeleted := n < maxFailures; (res.Deleted == 1) != wantDeleted {
			t.Errorf("%d failing: deleted %d", n, res.Deleted)
		}
	}
}
