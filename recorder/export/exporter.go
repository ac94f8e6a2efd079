package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/outpost-gw/outpost/internal/store"
	"github.com/outpost-gw/outpost/recorder/index"
	"github.com/outpost-gw/outpost/recorder/playback"
)

// Job is one export under way, as kept in the store until it ends.
type Job struct {
	ID       string        `json:"id"`
	Kind     string        `json:"kind"` // the command: export, clip, snapshot
	Camera   string        `json:"camera"`
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration"`
	URL      string        `json:"url"` // signed: never logged whole
	Created  time.Time     `json:"created"`
	// Recs are the segments the clip is made of, fixed when the job is
	// queued so that every attempt (and a restart) makes the same bytes.
	Recs []index.Recording `json:"recs"`
	// Size and SHA256 are measured before the first byte is sent; 0 until.
	Size   int64  `json:"size,omitempty"`
	SHA256 []byte `json:"sha256,omitempty"`
}

// KindSnapshot is the Job.Kind of a snapshot: it has a lane of its own.
const KindSnapshot = "snapshot"

// Phases of an export's progress.
const (
	PhaseQueued    = "queued"
	PhaseUploading = "uploading"
	PhaseDone      = "done"
	PhaseFailed    = "failed"
	PhaseCancelled = "cancelled"
)

// Event is one progress report.
type Event struct {
	Job     Job
	Phase   string
	Percent int   // uploading: 0..100 in steps of 10
	Bytes   int64 // the clip's size, once measured
	Reason  string
}

// Lister finds a camera's segments (*index.Index).
type Lister interface {
	List(camera string, from, to time.Time) ([]index.Recording, error)
}

var jobs = store.NewBucket[Job]("exports")

// Errors of Submit.
var (
	ErrDuplicate = errors.New("export: an export with this id is under way")
	ErrBusy      = errors.New("export: too many exports under way")
)

// MaxJobs bounds the exports under way (each holds its segments).
const MaxJobs = 16

// Exporter runs exports: a Submit stores the job and holds its segments
// from retention; one job at a time is measured and uploaded (and one
// snapshot beside it); at its end, done, failed or cancelled, the job is
// deleted and its hold released. Jobs in the store are held again by Load
// and go on after Run starts, so a restart resumes them. Set the fields,
// then Load, then Run.
type Exporter struct {
	Store *store.Store
	Index Lister
	Root  string // the recordings root
	Holds *Holds
	Up    *Uploader
	// Allow, if set, is asked when a job's turn comes, and again after a
	// restart (modes may change while it waits); an error fails the job
	// with that reason.
	Allow func(Job) error
	// Progress gets every phase change (and uploading every 10 %).
	Progress func(Event)
	Log      *slog.Logger

	mu      sync.Mutex
	ctx     context.Context                    // set by Run
	started map[string]context.CancelCauseFunc // the jobs with a goroutine, by id
	turn    chan struct{}                      // one clip upload at a time
	snap    chan struct{}                      // and one snapshot, so it does not wait an hour behind a clip
	wg      sync.WaitGroup
}

func (e *Exporter) log() *slog.Logger {
	if e.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Log
}

func (e *Exporter) progress(ev Event) {
	if e.Progress != nil {
		e.Progress(ev)
	}
}

// Load holds the segments of every job in the store; call it before the
// retention cleaner's first pass.
func (e *Exporter) Load() ([]Job, error) {
	var all []Job
	err := e.Store.View(func(tx *bolt.Tx) error {
		return jobs.ForEach(tx, func(_ string, j Job) error {
			all = append(all, j)
			return nil
		})
	})
	for _, j := range all {
		e.hold(j)
	}
	return all, err
}

func (e *Exporter) hold(j Job) {
	if len(j.Recs) == 0 {
		return
	}
	from, to := j.Recs[0].Start, j.Recs[0].End()
	for _, r := range j.Recs {
		from, to = minTime(from, r.Start), maxTime(to, r.End())
	}
	e.Holds.Add(j.ID, j.Camera, from, to)
}

// Submit queues an export of camera's [start, start+dur) to url. The
// segments are fixed now; none in the range is playback.ErrNoRecording.
func (e *Exporter) Submit(kind string, r Request, now time.Time) (Job, error) {
	if err := CheckURL(r.URL); err != nil {
		return Job{}, err
	}
	end := r.Start.Add(r.Duration)
	recs, err := e.Index.List(r.Camera, r.Start, end)
	if err != nil {
		return Job{}, fmt.Errorf("export: index: %w", err)
	}
	// Only segments that reach into the range (a Lister may return more).
	recs = slices.DeleteFunc(recs, func(x index.Recording) bool { return !x.End().After(r.Start) || !x.Start.Before(end) })
	if len(recs) == 0 {
		return Job{}, playback.ErrNoRecording
	}
	j := Job{ID: r.ID, Kind: kind, Camera: r.Camera, Start: r.Start, Duration: r.Duration, URL: r.URL, Created: now, Recs: recs}
	err = e.Store.Update(func(tx *bolt.Tx) error {
		if _, err := jobs.Get(tx, j.ID); err == nil {
			return ErrDuplicate
		}
		n := 0
		jobs.ForEach(tx, func(string, Job) error { n++; return nil })
		if n >= MaxJobs {
			return ErrBusy
		}
		return jobs.Put(tx, j.ID, j)
	})
	if err != nil {
		return Job{}, err
	}
	e.hold(j)
	e.progress(Event{Job: j, Phase: PhaseQueued})
	e.log().Info("export queued", "id", j.ID, "kind", kind, "camera", j.Camera, "start", j.Start, "duration", j.Duration,
		"segments", len(recs), "url", Redact(j.URL))
	e.spawn(j)
	return j, nil
}

// Run resumes the stored jobs and runs new ones until ctx ends; a job cut
// short by ctx stays in the store (and on hold) for the next start.
func (e *Exporter) Run(ctx context.Context) error {
	e.mu.Lock()
	e.ctx = ctx
	e.mu.Unlock()
	stored, err := e.Load()
	if err != nil {
		e.log().Error("export jobs not loaded", "err", err)
	}
	for _, j := range stored {
		e.log().Info("export resumed", "id", j.ID, "camera", j.Camera, "url", Redact(j.URL))
		e.spawn(j)
	}
	<-ctx.Done()
	e.wg.Wait()
	return nil
}

// Wait waits for the running jobs (tests).
func (e *Exporter) Wait() { e.wg.Wait() }

func (e *Exporter) spawn(j Job) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ctx == nil || e.started[j.ID] != nil {
		return // Run picks it up from the store
	}
	if e.started == nil {
		e.started = map[string]context.CancelCauseFunc{}
		e.turn = make(chan struct{}, 1)
		e.snap = make(chan struct{}, 1)
	}
	parent := e.ctx
	ctx, cancel := context.WithCancelCause(parent)
	e.started[j.ID] = cancel
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.run(parent, ctx, j)
	}()
}

// run runs one job in ctx, a child of Run's parent context that Cancel
// ends.
func (e *Exporter) run(parent, ctx context.Context, j Job) {
	turn := e.turn
	if j.Kind == KindSnapshot {
		turn = e.snap
	}
	var err error
	select {
	case turn <- struct{}{}:
		err = e.upload(ctx, &j)
		<-turn
	case <-ctx.Done():
	}
	switch {
	case parent.Err() != nil:
		return // stays stored: resumed at the next start
	case errors.Is(context.Cause(ctx), ErrCancelled):
		err = ErrCancelled
	}
	e.finish(j, err)
}

// ErrCancelled ends a job that Cancel stopped.
var ErrCancelled = errors.New("export: cancelled")

// ErrUnknownJob: Cancel found no such job.
var ErrUnknownJob = errors.New("export: no such export under way")

// Cancel stops job id, queued or uploading; it ends as PhaseCancelled.
// A job that finishes before the cancel reaches it ends as it ended.
func (e *Exporter) Cancel(id string) error {
	e.mu.Lock()
	cancel := e.started[id]
	e.mu.Unlock()
	if cancel != nil {
		cancel(ErrCancelled)
		return nil
	}
	var j Job
	err := e.Store.View(func(tx *bolt.Tx) (err error) { j, err = jobs.Get(tx, id); return err })
	if errors.Is(err, store.ErrNotFound) {
		return ErrUnknownJob
	}
	if err != nil {
		return err
	}
	e.finish(j, ErrCancelled) // stored, not started (Run is not running)
	return nil
}

// finish ends a job: removed from the store, hold released, reported.
func (e *Exporter) finish(j Job, err error) {
	if derr := e.Store.Update(func(tx *bolt.Tx) error { return jobs.Delete(tx, j.ID) }); derr != nil {
		e.log().Error("export job not deleted", "id", j.ID, "err", derr)
	}
	e.Holds.Release(j.ID)
	e.mu.Lock()
	if cancel := e.started[j.ID]; cancel != nil {
		cancel(nil)
	}
	delete(e.started, j.ID)
	e.mu.Unlock()
	if errors.Is(err, ErrCancelled) {
		e.log().Info("export cancelled", "id", j.ID, "camera", j.Camera, "url", Redact(j.URL))
		e.progress(Event{Job: j, Phase: PhaseCancelled, Bytes: j.Size, Reason: "cancelled by the fleet"})
		return
	}
	if err != nil {
		e.log().Warn("export failed", "id", j.ID, "camera", j.Camera, "url", Redact(j.URL), "err", err)
		e.progress(Event{Job: j, Phase: PhaseFailed, Bytes: j.Size, Reason: err.Error()})
		return
	}
	e.log().Info("export done", "id", j.ID, "camera", j.Camera, "bytes", j.Size, "url", Redact(j.URL))
	e.progress(Event{Job: j, Phase: PhaseDone, Percent: 100, Bytes: j.Size})
}

// source regenerates the job's clip.
func (e *Exporter) source(j *Job) Source {
	return func(ctx context.Context, w io.Writer) error {
		return playback.Write(ctx, w, e.Root, j.Recs, j.Start, j.Duration)
	}
}

func (e *Exporter) upload(ctx context.Context, j *Job) error {
	if e.Allow != nil {
		if err := e.Allow(*j); err != nil {
			return err
		}
	}
	src := e.source(j)
	if j.Size == 0 {
		n, sum, err := Measure(ctx, src)
		if err != nil {
			return fmt.Errorf("export: making the clip: %w", err)
		}
		j.Size, j.SHA256 = n, sum[:]
		if err := e.Store.Update(func(tx *bolt.Tx) error { return jobs.Put(tx, j.ID, *j) }); err != nil {
			return fmt.Errorf("export: store: %w", err)
		}
	}
	if len(j.SHA256) != 32 {
		return errors.New("export: stored job has no clip hash")
	}
	up := e.Up
	if up == nil {
		up = &Uploader{}
	}
	last := -1
	return up.Upload(ctx, Clip{
		URL: j.URL, Size: j.Size, SHA256: [32]byte(j.SHA256), Source: src, Began: j.Created,
		Progress: func(have int64) {
			pct := int(have * 100 / j.Size / 10 * 10)
			if pct > last && pct < 100 {
				last = pct
				e.progress(Event{Job: *j, Phase: PhaseUploading, Percent: pct, Bytes: j.Size})
			}
		},
	})
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
