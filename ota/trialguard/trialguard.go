// Package trialguard makes a trial-booted version that never reaches its
// health gate roll back anyway. The installer's gate (ota/install) can only
// fail a version whose daemon runs long enough to judge it; one that
// crashes at start, or hangs, would otherwise stay on the trial slot until
// someone cuts the power. gokrazy's testboot is one-shot, so any reboot
// during a trial returns to the old slot: the guard only has to reboot.
//
// outpostd's main calls Start before anything else can fail. During a trial
// boot it counts the daemon's starts in a small file in /perm; past
// MaxStarts it reboots at once, and each start arms a deadline after which
// it reboots unless Done was called (the gate committed or rolled back).
// Outside a trial boot it clears the count and does nothing.
package trialguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/outpost-gw/outpost/internal/atomicfile"
)

// File is the count's name in the data directory.
const File = "ota-trial.json"

// Guard is configured by its exported fields.
type Guard struct {
	Dir string // data directory (/perm/outpost)
	// Trial reports whether this boot is a trial boot.
	Trial func() (bool, error)
	// Reboot restarts the machine (the trial slot is then left).
	Reboot func(ctx context.Context) error
	// MaxStarts is how many daemon starts a trial boot gets (default 3).
	MaxStarts int
	// Deadline bounds each start's wait for Done (default 15 min: longer
	// than the health window plus the boot and the link coming up).
	Deadline time.Duration
	Log      *slog.Logger
	// AfterFunc is time.AfterFunc (a seam for tests).
	AfterFunc func(time.Duration, func()) interface{ Stop() bool }

	mu    sync.Mutex
	ctx   context.Context
	timer interface{ Stop() bool }
	done  bool
}

type count struct {
	Starts int `json:"starts"`
	// Done: the gate decided during this trial boot; later restarts of
	// the daemon in the same boot are left alone.
	Done bool `json:"done,omitempty"`
}

func (g *Guard) path() string { return filepath.Join(g.Dir, File) }

func (g *Guard) log() *slog.Logger {
	if g.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return g.Log
}

// Start records this start and arms the guard. It returns an error only
// when it cannot tell whether this is a trial boot or cannot keep count;
// the daemon should go on regardless.
func (g *Guard) Start(ctx context.Context) error {
	if g.MaxStarts <= 0 {
		g.MaxStarts = 3
	}
	if g.Deadline <= 0 {
		g.Deadline = 15 * time.Minute
	}
	if g.AfterFunc == nil {
		g.AfterFunc = func(d time.Duration, f func()) interface{ Stop() bool } { return time.AfterFunc(d, f) }
	}
	trial, err := g.Trial()
	if err != nil {
		return fmt.Errorf("trialguard: %w", err)
	}
	if !trial {
		if err := os.Remove(g.path()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("trialguard: %w", err)
		}
		return nil
	}
	c, err := g.load()
	if err != nil {
		// A torn count file is no reason to stay on an unproven slot:
		// count from here.
		g.log().Warn("trialguard: unreadable count, starting over", "err", err)
		c = count{}
	}
	if c.Done {
		return nil
	}
	c.Starts++
	if err := g.save(c); err != nil {
		g.log().Warn("trialguard: cannot record the start", "err", err)
	}
	if c.Starts > g.MaxStarts {
		g.log().Error("trialguard: the trial version keeps stopping before its health gate; rebooting into the old slot", "starts", c.Starts)
		return g.Reboot(ctx)
	}
	g.log().Info("trialguard: trial boot", "start", c.Starts, "of", g.MaxStarts, "deadline", g.Deadline)
	g.mu.Lock()
	g.ctx = context.WithoutCancel(ctx)
	g.timer = g.AfterFunc(g.Deadline, g.expire)
	g.mu.Unlock()
	return nil
}

// Extend moves the deadline to d from now if that is later: the daemon
// calls it once it knows its configured health window.
func (g *Guard) Extend(d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.timer == nil || g.done || d <= g.Deadline {
		return
	}
	if g.timer.Stop() {
		g.Deadline = d
		g.timer = g.AfterFunc(d, g.expire)
	}
}

func (g *Guard) expire() {
	g.mu.Lock()
	done := g.done
	g.mu.Unlock()
	if done {
		return
	}
	g.log().Error("trialguard: no health-gate outcome within the deadline; rebooting into the old slot", "deadline", g.Deadline)
	if err := g.Reboot(g.ctx); err != nil {
		g.log().Error("trialguard: reboot", "err", err)
	}
}

// Done disarms the guard for the rest of this boot: the health gate
// committed the trial or rolled it back (and reboots by itself).
func (g *Guard) Done() {
	g.mu.Lock()
	if g.done {
		g.mu.Unlock()
		return
	}
	g.done = true
	if g.timer != nil {
		g.timer.Stop()
	}
	g.mu.Unlock()
	if trial, err := g.Trial(); err == nil && trial {
		if err := g.save(count{Done: true}); err != nil {
			g.log().Warn("trialguard: cannot record the outcome", "err", err)
		}
	}
}

func (g *Guard) load() (count, error) {
	var c count
	b, err := os.ReadFile(g.path())
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	return c, json.Unmarshal(b, &c)
}

func (g *Guard) save(c count) error {
	if err := os.MkdirAll(g.Dir, 0o700); err != nil {
		return err
	}
	b, _ := json.Marshal(c)
	return atomicfile.WriteFile(g.path(), b, 0o600)
}
