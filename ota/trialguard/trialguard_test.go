package trialguard

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fakeTimer fires when the test says so.
type fakeTimer struct {
	d       time.Duration
	f       func()
	stopped bool
}

func (t *fakeTimer) Stop() bool { was := !t.stopped; t.stopped = true; return was }

type rig struct {
	mu      sync.Mutex
	trial   bool
	reboots int
	timers  []*fakeTimer
	dir     string
}

func (r *rig) guard() *Guard {
	return &Guard{
		Dir:    r.dir,
		Trial:  func() (bool, error) { return r.trial, nil },
		Reboot: func(context.Context) error { r.mu.Lock(); r.reboots++; r.mu.Unlock(); return nil },
		AfterFunc: func(d time.Duration, f func()) interface{ Stop() bool } {
			t := &fakeTimer{d: d, f: f}
			r.timers = append(r.timers, t)
			return t
		},
	}
}

func (r *rig) fire() {
	t := r.timers[len(r.timers)-1]
	if !t.stopped {
		t.f()
	}
}

// TestCrashLoopRollsBack: a trial version whose daemon keeps stopping
// before its gate gets MaxStarts starts, and the next start reboots (back
// to the old slot). The next normal boot clears the count.
func TestCrashLoopRollsBack(t *testing.T) {
	r := &rig{dir: t.TempDir(), trial: true}
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		if err := r.guard().Start(ctx); err != nil {
			t.Fatal(err)
		}
		if r.reboots != 0 {
			t.Fatalf("start %d rebooted", i)
		}
	}
	r.guard().Start(ctx)
	if r.reboots != 1 {
		t.Fatalf("fourth start: %d reboots, want 1", r.reboots)
	}
	r.trial = false // the old slot boots
	if err := r.guard().Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(r.dir, File)); !os.IsNotExist(err) {
		t.Errorf("count kept after a normal boot: %v", err)
	}
	r.trial = true // the next update's trial starts from zero
	r.guard().Start(ctx)
	if r.reboots != 1 {
		t.Error("a new trial inherited the old count")
	}
}

// TestHangRollsBack: a trial version that runs but never reaches a gate
// outcome is rebooted at the deadline; Extend moves it later.
func TestHangRollsBack(t *testing.T) {
	r := &rig{dir: t.TempDir(), trial: true}
	g := r.guard()
	g.Start(context.Background())
	if len(r.timers) != 1 || r.timers[0].d != 15*time.Minute {
		t.Fatalf("timers %+v", r.timers)
	}
	g.Extend(70 * time.Minute) // a 1 h health window
	if len(r.timers) != 2 || !r.timers[0].stopped || r.timers[1].d != 70*time.Minute {
		t.Fatalf("after Extend: %+v", r.timers)
	}
	g.Extend(time.Minute) // never earlier
	if len(r.timers) != 2 {
		t.Fatal("Extend shortened the deadline")
	}
	r.fire()
	if r.reboots != 1 {
		t.Fatalf("deadline passed: %d reboots", r.reboots)
	}
}

// TestDoneDisarms: once the gate decided, the deadline does nothing, and
// later restarts of the daemon in the same boot are not counted.
func TestDoneDisarms(t *testing.T) {
	r := &rig{dir: t.TempDir(), trial: true}
	g := r.guard()
	g.Start(context.Background())
	g.Done()
	r.fire()
	for i := 0; i < 5; i++ {
		r.guard().Start(context.Background())
	}
	if r.reboots != 0 {
		t.Fatalf("%d reboots after the gate committed", r.reboots)
	}
}

// TestNotTrial: outside a trial boot the guard does nothing.
func TestNotTrial(t *testing.T) {
	r := &rig{dir: t.TempDir()}
	for i := 0; i < 5; i++ {
		if err := r.guard().Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if r.reboots != 0 || len(r.timers) != 0 {
		t.Fatalf("reboots %d timers %d", r.reboots, len(r.timers))
	}
}

// TestTornCount: an unreadable count file counts from zero, not forever.
func TestTornCount(t *testing.T) {
	r := &rig{dir: t.TempDir(), trial: true}
	os.WriteFile(filepath.Join(r.dir, File), []byte(`{"sta`), 0o600)
	for i := 0; i < 4; i++ {
		r.guard().Start(context.Background())
	}
	if r.reboots != 1 {
		t.Fatalf("reboots %d, want 1", r.reboots)
	}
}
