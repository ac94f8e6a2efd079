// Package retention deletes recorded segments so that the box keeps within
// its storage limits: a maximum age, a byte budget shared with the rest of
// the box (the cloud-link outbox), and a minimum of free space on the
// volume. Segments go strictly oldest first across all cameras; segments on
// hold (being exported, or held by the fleet: recorder/hold) are passed
// over, never deleted.
//
// A deletion removes the file, fsyncs its directory, then drops the index
// entry. A crash in between leaves an entry without a file, which the next
// pass drops. Paths come from the index and are re-checked and opened
// through an os.Root, so nothing outside the recordings root is ever
// removed.
package retention

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/outpost-gw/outpost/hardware"
	"github.com/outpost-gw/outpost/internal/atomicfile"
	"github.com/outpost-gw/outpost/recorder/index"
)

// DefaultInterval is the time between passes when Cleaner.Interval is not
// set.
const DefaultInterval = time.Minute

const (
	// batch is how many candidates a pass reads from the index at a time,
	// beyond those it has already decided to keep.
	batch = 64
	// maxFailures ends a pass once this many files could not be removed: on
	// a read-only or failing volume one error per segment helps no one.
	maxFailures = 8
)

var (
	// ErrConfig reports a Cleaner without Root or Index, or with
	// MinFreeBytes but no Disk.
	ErrConfig = errors.New("retention: bad config")
	// ErrUnsafePath reports an index entry whose File is not a clean,
	// relative camera/…/name.mp4 path to a regular file under Root. Such
	// entries are logged and left alone.
	ErrUnsafePath = errors.New("retention: unsafe path")
)

// Index is what the cleaner needs of the segment index (*index.Index).
type Index interface {
	// Oldest returns up to n recordings over all cameras, oldest first.
	Oldest(n int) ([]index.Recording, error)
	// Remove drops one recording's entry; removing an absent one is not an
	// error.
	Remove(camera string, start time.Time) error
}

// Cleaner enforces the retention rules on the recordings under Root. Set
// the fields before the first Pass or Run and leave them alone after; Pass,
// Run, Kick, Added, Resync and Last are safe for concurrent use.
//
// The recordings' total size is a running count: seeded once from the
// index (one Oldest over everything, so memory in proportion to the number
// of segments, once), then kept by the cleaner's own deletions and by Added,
// which the recorder calls for every new index entry. Segments still being
// written are not in the index and so not counted; BudgetBytes should leave
// room for one open segment per camera.
type Cleaner struct {
	// Root is the recordings root that index File paths are relative to.
	Root  string
	Index Index
	// Disk reports the volume holding Root (hardware.Sensors.Disk); needed
	// only with MinFreeBytes.
	Disk func(path string) (hardware.DiskUsage, error)
	// MaxAge deletes segments that ended more than MaxAge ago; 0 = no limit.
	MaxAge time.Duration
	// BudgetBytes bounds the recordings' bytes plus OtherBytes(); 0 = no
	// limit. If OtherBytes alone exceeds it, every segment not on hold
	// goes, so give the outbox a budget of its own well below this one.
	BudgetBytes int64
	// OtherBytes is the size of whatever else draws on the budget (the
	// outbox's Stats().TotalBytes); read once per pass. nil = 0.
	OtherBytes func() int64
	// MinFreeBytes is the least the volume should have available to
	// unprivileged writers (DiskUsage.AvailBytes); 0 = no limit.
	MinFreeBytes int64
	// Held reports a segment that must not be deleted now (exported, on
	// hold). It is asked only about segments a rule would delete, and must
	// be quick. nil = nothing held.
	Held func(camera string, start, end time.Time) bool
	// Interval is the time between Run's passes; 0 = DefaultInterval.
	Interval time.Duration
	// Now is the clock for the age rule; nil = time.Now.
	Now func() time.Time
	// Log gets each deletion (debug), each pass that deleted (info),
	// missing files (warn), and refused or failed deletions (error).
	// nil = discard.
	Log *slog.Logger

	passMu   sync.Mutex // one pass at a time
	kickOnce sync.Once
	kick     chan struct{}

	mu      sync.Mutex // guards the fields below
	total   int64      // bytes of the indexed recordings
	known   bool       // total is seeded and current
	gen     int        // bumped by Resync
	seeding bool
	pending []index.Recording // Added while seeding
	last    Result
}

// Result reports one pass.
type Result struct {
	// Deleted counts the entries dropped from the index, DeletedBytes their
	// sizes per the index. Missing is how many of them had no file left
	// (a crash between file and entry removal, or a hand-deleted file).
	Deleted      int
	DeletedBytes int64
	Missing      int
	// Age, Budget and Free split Deleted by the rule that deleted each
	// segment; when several bit, the first in that order counts.
	Age, Budget, Free int
	// Held counts segments a rule wanted gone that Held kept.
	Held int
	// Refused counts entries with an unsafe path; Failed, files that
	// could not be removed. Both stay in the index.
	Refused, Failed int
	// Bytes is the recordings' total after the pass, as the cleaner counts
	// it.
	Bytes int64
}

func (c *Cleaner) log() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Log
}

func (c *Cleaner) now() time.Time {
	if c.Now == nil {
		return time.Now()
	}
	return c.Now()
}

func (c *Cleaner) kickCh() chan struct{} {
	c.kickOnce.Do(func() { c.kick = make(chan struct{}, 1) })
	return c.kick
}

// Kick asks Run for a pass now, e.g. after a hold is released or when
// storage runs low between passes. It never blocks; kicks coalesce.
func (c *Cleaner) Kick() {
	select {
	case c.kickCh() <- struct{}{}:
	default:
	}
}

// Added counts a new index entry's bytes into the running total. The
// recorder calls it after each successful index Add of a new segment (not
// for a replaced entry). Calls during the seeding count are matched against
// what the seed read, so nothing is counted twice.
func (c *Cleaner) Added(r index.Recording) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.seeding:
		c.pending = append(c.pending, r)
	case c.known:
		c.total += r.Bytes
	}
}

// Resync makes the next pass count the recordings anew from the index:
// call it after the index changed behind the cleaner's back (Rebuild,
// deletions through other paths).
func (c *Cleaner) Resync() {
	c.mu.Lock()
	c.known = false
	c.gen++
	c.mu.Unlock()
}

// Last returns the result of the latest pass, for telemetry.
func (c *Cleaner) Last() Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// Run makes a pass at once, then every Interval and on Kick, until ctx is
// done; it returns nil then. Failed passes are logged and retried on the
// next tick.
func (c *Cleaner) Run(ctx context.Context) error {
	if err := c.check(); err != nil {
		return err
	}
	t := time.NewTicker(cmp.Or(max(c.Interval, 0), DefaultInterval))
	defer t.Stop()
	for {
		if _, err := c.pass(ctx); err != nil && ctx.Err() == nil {
			c.log().Error("retention: pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-c.kickCh():
		}
	}
}

// Pass deletes segments, oldest first over all cameras, for as long as a
// rule bites: the segment ended more than MaxAge ago, the recordings plus
// OtherBytes exceed BudgetBytes, or the volume has less than MinFreeBytes
// available. Held, unsafe and unremovable segments are passed over. An
// error from the index ends the pass; one from Disk only disables the free
// rule for this pass and is returned at its end.
func (c *Cleaner) Pass() (Result, error) { return c.pass(context.Background()) }

func (c *Cleaner) check() error {
	if c.Root == "" || c.Index == nil || (c.MinFreeBytes > 0 && c.Disk == nil) {
		return fmt.Errorf("%w: need Root, Index, and Disk for MinFreeBytes", ErrConfig)
	}
	return nil
}

func (c *Cleaner) pass(ctx context.Context) (Result, error) {
	if err := c.check(); err != nil {
		return Result{}, err
	}
	c.passMu.Lock()
	defer c.passMu.Unlock()
	if err := c.seed(); err != nil {
		return Result{}, err
	}
	root, err := os.OpenRoot(c.Root)
	if err != nil {
		return Result{}, fmt.Errorf("retention: %w", err)
	}
	defer root.Close()
	s := &sweep{c: c, root: root, log: c.log(), now: c.now()}
	if c.OtherBytes != nil {
		s.other = c.OtherBytes()
	}
	var diskErr error
	if c.MinFreeBytes > 0 {
		if s.avail0, diskErr = c.avail(); diskErr == nil {
			s.low = s.avail0 < c.MinFreeBytes
		}
	}
	err = s.run(ctx)
	s.res.Bytes = c.bytes()
	err = cmp.Or(err, diskErr, s.failErr)
	c.mu.Lock()
	c.last = s.res
	c.mu.Unlock()
	if r := s.res; r.Deleted > 0 || r.Refused > 0 || r.Failed > 0 {
		s.log.Info("retention: pass", "deleted", r.Deleted, "deleted_bytes", r.DeletedBytes,
			"missing", r.Missing, "age", r.Age, "budget", r.Budget, "free", r.Free,
			"held", r.Held, "refused", r.Refused, "failed", r.Failed, "bytes", r.Bytes)
	}
	return s.res, err
}

// seed counts the indexed recordings unless the running total is current.
func (c *Cleaner) seed() error {
	c.mu.Lock()
	if c.known {
		c.mu.Unlock()
		return nil
	}
	gen := c.gen
	c.seeding, c.pending = true, nil
	c.mu.Unlock()

	all, err := c.Index.Oldest(math.MaxInt)

	c.mu.Lock()
	defer c.mu.Unlock()
	pending := c.pending
	c.seeding, c.pending = false, nil
	if err != nil {
		return fmt.Errorf("retention: counting recordings: %w", err)
	}
	late := make(map[key]int64, len(pending))
	for _, r := range pending {
		late[keyOf(r)] = r.Bytes
	}
	var sum int64
	for _, r := range all {
		sum += r.Bytes
		delete(late, keyOf(r))
	}
	for _, b := range late {
		sum += b
	}
	c.total, c.known = sum, gen == c.gen
	return nil
}

func (c *Cleaner) bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

func (c *Cleaner) avail() (int64, error) {
	du, err := c.Disk(c.Root)
	if err != nil {
		return 0, fmt.Errorf("retention: disk usage: %w", err)
	}
	return int64(min(du.AvailBytes, math.MaxInt64)), nil
}

type key struct {
	camera string
	ns     int64
}

func keyOf(r index.Recording) key { return key{r.Camera, r.Start.UnixNano()} }

// sweep is the state of one pass.
type sweep struct {
	c       *Cleaner
	root    *os.Root
	log     *slog.Logger
	now     time.Time
	other   int64
	avail0  int64 // available bytes at the start of the pass
	freed   int64 // bytes of the files removed so far
	low     bool  // the free rule bites
	res     Result
	failErr error // the first failed removal
}

func (s *sweep) run(ctx context.Context) error {
	kept := make(map[key]bool) // passed over: still in the index
	for {
		recs, err := s.c.Index.Oldest(len(kept) + batch)
		if err != nil {
			return fmt.Errorf("retention: %w", err)
		}
		fresh := 0
		for _, r := range recs {
			if kept[keyOf(r)] {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			fresh++
			why := s.reason(r)
			if why == nil {
				return nil
			}
			done, err := s.delete(r)
			if err != nil {
				return err
			}
			if !done {
				kept[keyOf(r)] = true
				if s.res.Failed >= maxFailures {
					return fmt.Errorf("retention: %d files could not be removed, giving up: %w", s.res.Failed, s.failErr)
				}
				continue
			}
			*why++
			s.log.Debug("retention: deleted", "camera", r.Camera, "start", r.Start, "file", r.File, "bytes", r.Bytes)
		}
		if fresh == 0 {
			return nil
		}
	}
}

// reason returns the Result counter of the first rule that wants r gone,
// or nil.
func (s *sweep) reason(r index.Recording) *int {
	c := s.c
	switch {
	case c.MaxAge > 0 && s.now.Sub(r.End()) > c.MaxAge:
		return &s.res.Age
	case c.BudgetBytes > 0 && c.bytes()+s.other > c.BudgetBytes:
		return &s.res.Budget
	case s.low:
		return &s.res.Free
	}
	return nil
}

// delete removes r's file and then its entry. It reports false for a
// segment passed over (held, refused, failed); an error only when the
// index fails.
func (s *sweep) delete(r index.Recording) (bool, error) {
	c := s.c
	if c.Held != nil && c.Held(r.Camera, r.Start, r.End()) {
		s.res.Held++
		s.log.Debug("retention: held", "camera", r.Camera, "start", r.Start)
		return false, nil
	}
	missing, err := s.removeFile(r)
	switch {
	case errors.Is(err, ErrUnsafePath):
		s.res.Refused++
		s.log.Error("retention: refusing to delete", "camera", r.Camera, "start", r.Start, "err", err)
		return false, nil
	case err != nil:
		s.res.Failed++
		s.failErr = cmp.Or(s.failErr, err)
		s.log.Error("retention: cannot delete", "camera", r.Camera, "start", r.Start, "err", err)
		return false, nil
	case missing:
		s.res.Missing++
		s.log.Warn("retention: file already gone, dropping entry", "camera", r.Camera, "start", r.Start, "file", r.File)
	}
	if err := c.Index.Remove(r.Camera, r.Start); err != nil {
		return false, fmt.Errorf("retention: %s at %s: file removed, entry kept: %w", r.Camera, r.Start, err)
	}
	c.mu.Lock()
	c.total = max(0, c.total-r.Bytes)
	c.mu.Unlock()
	s.res.Deleted++
	s.res.DeletedBytes += r.Bytes
	if s.low && !missing {
		// Freed blocks may show late (lazy release, a reader still holding
		// the file open); trust the index's size when statfs lags behind.
		s.freed += r.Bytes
		avail := s.avail0 + s.freed
		if a, err := c.avail(); err == nil {
			avail = max(avail, a)
		}
		s.low = avail < c.MinFreeBytes
	}
	return true, nil
}

// removeFile removes r's file and makes the removal durable. missing
// reports a file that was already gone.
func (s *sweep) removeFile(r index.Recording) (missing bool, err error) {
	p := r.File
	camera, _, _ := strings.Cut(p, "/")
	if r.Camera == "" || camera != r.Camera || camera == p || !filepath.IsLocal(p) ||
		filepath.Clean(p) != p || filepath.Ext(p) != ".mp4" || strings.ContainsAny(p, "\\\x00") {
		return false, fmt.Errorf("%w: %q of camera %q", ErrUnsafePath, p, r.Camera)
	}
	// os.Root would refuse a symlink out of Root anyway; checking each
	// element tells such an entry (refused) from a failing disk.
	for i := range len(p) + 1 {
		if i < len(p) && p[i] != '/' {
			continue
		}
		fi, err := s.root.Lstat(p[:i])
		if errors.Is(err, fs.ErrNotExist) {
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("retention: %w", err)
		}
		want, ok := "directory", fi.IsDir()
		if i == len(p) {
			want, ok = "regular file", fi.Mode().IsRegular()
		}
		if !ok {
			return false, fmt.Errorf("%w: %q: %s is not a %s", ErrUnsafePath, p, p[:i], want)
		}
	}
	if err := s.root.Remove(p); errors.Is(err, fs.ErrNotExist) {
		return true, nil
	} else if err != nil {
		return false, fmt.Errorf("retention: %w", err)
	}
	dir := filepath.Dir(p)
	if err := atomicfile.SyncDir(filepath.Join(s.c.Root, dir)); err != nil {
		s.log.Warn("retention: removal may not survive a power cut", "file", p, "err", err)
	}
	// The writer files segments under camera/<UTC day of start>/; once
	// that day has been over for an hour no new file lands there, and an
	// empty day directory can go (Remove fails on a non-empty one).
	dayEnd := r.Start.UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	if dir != camera && s.now.Sub(dayEnd) > time.Hour {
		_ = s.root.Remove(dir)
	}
	return false, nil
}
