// Package install is the on-box A/B install state machine: offer → verify →
// stream into the inactive root slot → re-hash → trial boot → reboot →
// health gate → commit (Switch, floor raised) or fall back to the old slot.
// Every step is persisted in the store before it is acted on, so a power cut
// at any point resumes (Resume) without ever switching to an unproven slot.
package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/outpost-gw/outpost/internal/store"
	"github.com/outpost-gw/outpost/ota/fetch"
	"github.com/outpost-gw/outpost/ota/manifest"
)

// Target is the device's update API (gokrazy: /update/root, /update/testboot,
// /update/switch, /reboot).
type Target interface {
	StreamTo(ctx context.Context, dest string, r io.Reader) error
	Testboot(ctx context.Context) error
	Switch(ctx context.Context) error
	Reboot(ctx context.Context) error
	// TrialBooted reports whether the running root is a trial boot of the
	// other slot (gokrazy: gokrazy.try_boot_inactive=1 on the kernel command line).
	TrialBooted() (bool, error)
}

// ReadBacker is an optional Target that can read back a written partition
// from the medium (see SpotChunk for when and how much).
type ReadBacker interface {
	ReadBack(dest string) (Slot, error)
}

// CmdlineTidier is an optional Target that clears the boot command line of
// what earlier trial boots left (gokrazy: see ota/bootcmd); Resume calls it
// when the box runs normally, so the next testboot has room for its flag.
type CmdlineTidier interface {
	TidyBootCmdline() (changed bool, err error)
}

// Phase is the persisted step.
type Phase string

const (
	Idle        Phase = ""
	Downloading Phase = "downloading"
	Installed   Phase = "installed"
	Trial       Phase = "trial"
	Committed   Phase = "committed"
	RolledBack  Phase = "rolled_back"
	Refused     Phase = "refused"
	Offered     Phase = "offered"
	Verifying   Phase = "verifying"
	// Rebooting: an offer accepted right after a commit, in the same
	// boot; the box reboots into the committed slot first and continues
	// the install from the download on the next start.
	Rebooting Phase = "rebooting"
)

// Event is one progress report.
type Event struct {
	Phase   Phase
	Version uint64
	Percent int    // Downloading
	Reason  string // RolledBack, Refused
}

// State is what the store holds (bucket "ota", key "state").
type State struct {
	Phase       Phase  `json:"phase"`
	Version     uint64 `json:"version"`
	KeysDoc     []byte `json:"keys_doc,omitempty"`
	Manifest    []byte `json:"manifest,omitempty"`
	Floor       uint64 `json:"floor"`
	KeysVersion uint64 `json:"keys_version"`
	Reason      string `json:"reason,omitempty"`
	// KernelModules are the running root's module trees when the offer
	// was taken (see ModuleLister); nil: not recorded.
	KernelModules []string `json:"kernel_modules"`
}

var bucket = store.NewBucket[State]("ota")

// ErrTrialBooted refuses streaming a root while trial-booted: gokrazy then
// reports the running partition as inactive.
var ErrTrialBooted = errors.New("install: refusing to stream a root update while trial-booted")

// ErrBusy refuses an offer while another install is in progress.
var ErrBusy = errors.New("install: an update is already in progress")

// Installer runs the state machine.
type Installer struct {
	Store    *store.Store
	Root     manifest.RootOfTrust
	HWTarget string // "amd64" or "rpi"
	// RunningVersion is the release number of the running image (0: not a
	// release build); offers at or below it are refused even when the
	// store is new or wiped.
	RunningVersion uint64
	Target         Target
	Client         *http.Client
	Fetch          fetch.Options
	Now            func() time.Time
	// Health must return nil once the box is healthy (cloud link up,
	// recorder writing when cameras are configured) within Window.
	Health func(ctx context.Context) error
	Window time.Duration // default 5 min
	// Progress receives every event (the daemon sends them as cloud events).
	Progress func(Event)
	// Audit records every refusal and outcome.
	Audit func(action, detail string)
	Log   *slog.Logger

	mu sync.Mutex
}

func (in *Installer) emit(e Event) {
	if in.Progress != nil {
		in.Progress(e)
	}
}

func (in *Installer) audit(action, detail string) {
	if in.Audit != nil {
		in.Audit(action, detail)
	}
}

func (in *Installer) log() *slog.Logger {
	if in.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return in.Log
}

// Load returns the persisted state.
func (in *Installer) Load() (State, error) {
	var st State
	err := in.Store.View(func(tx *bolt.Tx) error {
		var err error
		st, err = bucket.Get(tx, "state")
		if errors.Is(err, store.ErrNotFound) {
			st, err = State{}, nil
		}
		return err
	})
	return st, err
}

func (in *Installer) save(st State) error {
	return in.Store.Update(func(tx *bolt.Tx) error { return bucket.Put(tx, "state", st) })
}

func (in *Installer) refuse(v uint64, err error) error {
	in.audit("ota.refused", err.Error())
	in.emit(Event{Phase: Refused, Version: v, Reason: err.Error()})
	return err
}

// Offer verifies an offered release and, if it passes, streams it into the
// inactive root slot, marks a trial boot and reboots. It returns after the
// reboot was requested (or with the refusal / failure).
func (in *Installer) Offer(ctx context.Context, keysDoc, manifestDoc []byte) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	st, err := in.Load()
	if err != nil {
		return err
	}
	in.emit(Event{Phase: Offered})
	switch st.Phase {
	case Idle, Committed, RolledBack, Refused:
	default:
		return in.refuse(0, fmt.Errorf("%w (%s of v%d)", ErrBusy, st.Phase, st.Version))
	}
	trial, err := in.Target.TrialBooted()
	if err != nil {
		return in.refuse(0, err)
	}
	if trial && st.Phase != Committed {
		return in.refuse(0, ErrTrialBooted)
	}
	in.emit(Event{Phase: Verifying})
	m, err := in.verify(st, keysDoc, manifestDoc)
	if errors.Is(err, manifest.ErrRollback) && in.alreadyInstalled(st, keysDoc, manifestDoc) {
		// The release this box runs, offered again (a re-run rollout):
		// nothing to do, and the answer is the outcome it had.
		cur := in.running(st)
		in.audit("ota.already_installed", fmt.Sprintf("v%d", cur))
		in.emit(Event{Phase: Committed, Version: cur})
		return nil
	}
	if err != nil {
		return in.refuse(0, err)
	}
	st.Phase, st.Version, st.KeysDoc, st.Manifest, st.Reason = Downloading, m.Version, keysDoc, manifestDoc, ""
	st.KernelModules = nil
	if ml, ok := in.Target.(ModuleLister); ok {
		if st.KernelModules, err = ml.KernelModules(); err != nil {
			return in.refuse(m.Version, err)
		}
	}
	if err := in.save(st); err != nil {
		return err
	}
	if trial {
		// Committed during this boot: gokrazy still takes the running
		// slot for the inactive one, so streaming now would overwrite
		// it. Reboot into the committed slot; Resume continues from the
		// download (verifying the offer again).
		in.log().Info("ota: rebooting out of the committed trial boot before installing", "version", m.Version)
		in.audit("ota.reboot_before_install", fmt.Sprintf("v%d", m.Version))
		in.emit(Event{Phase: Rebooting, Version: m.Version})
		return in.Target.Reboot(ctx)
	}
	return in.fromDownloading(ctx, st, m)
}

// Check verifies an offer as Offer would and returns the manifest, without
// acting on it, reporting or auditing: an operator handing the box a file
// gets the refusal at once. Offer verifies again.
func (in *Installer) Check(keysDoc, manifestDoc []byte) (manifest.Manifest, error) {
	if !in.mu.TryLock() {
		return manifest.Manifest{}, ErrBusy
	}
	defer in.mu.Unlock()
	st, err := in.Load()
	if err != nil {
		return manifest.Manifest{}, err
	}
	switch st.Phase {
	case Idle, Committed, RolledBack, Refused:
	default:
		return manifest.Manifest{}, fmt.Errorf("%w (%s of v%d)", ErrBusy, st.Phase, st.Version)
	}
	if trial, err := in.Target.TrialBooted(); err != nil {
		return manifest.Manifest{}, err
	} else if trial && st.Phase != Committed {
		return manifest.Manifest{}, ErrTrialBooted
	}
	m, err := in.verify(st, keysDoc, manifestDoc)
	if errors.Is(err, manifest.ErrRollback) && in.alreadyInstalled(st, keysDoc, manifestDoc) {
		return manifest.Manifest{Version: in.running(st)}, ErrAlreadyInstalled
	}
	return m, err
}

// ErrAlreadyInstalled is Check's answer to a valid offer of the release the
// box runs: nothing to do (Offer answers it as committed).
var ErrAlreadyInstalled = errors.New("install: this release is the one installed")

// running is the release the box runs: the image's release number, or for
// an image without one the last committed release.
func (in *Installer) running(st State) uint64 {
	if in.RunningVersion != 0 || st.Phase != Committed {
		return in.RunningVersion
	}
	return st.Floor
}

// alreadyInstalled reports whether the offer is a valid signed manifest of
// exactly the release the box runs (nothing is installed either way).
func (in *Installer) alreadyInstalled(st State, keysDoc, manifestDoc []byte) bool {
	cur := in.running(st)
	if cur == 0 {
		return false
	}
	m, err := in.verifyFloor(st, cur-1, keysDoc, manifestDoc)
	return err == nil && m.Version == cur
}

func (in *Installer) verify(st State, keysDoc, manifestDoc []byte) (manifest.Manifest, error) {
	return in.verifyFloor(st, max(st.Floor, in.RunningVersion), keysDoc, manifestDoc)
}

func (in *Installer) verifyFloor(st State, floor uint64, keysDoc, manifestDoc []byte) (manifest.Manifest, error) {
	now := time.Now
	if in.Now != nil {
		now = in.Now
	}
	ms := manifest.State{Floor: floor, KeysVersion: st.KeysVersion, Target: in.HWTarget, Now: now()}
	return manifest.Verify(in.Root, keysDoc, manifestDoc, ms)
}

// The fetch hands the image to gokrazy's updater in blocks of pipeBlock
// bytes, pipeDepth of them at most in flight (see blockPipe).
const (
	pipeBlock = 1 << 20
	pipeDepth = 4
)

// fromDownloading streams the root artifact into the target; a power cut
// during it restarts the download from the start (the slot is inactive).
func (in *Installer) fromDownloading(ctx context.Context, st State, m manifest.Manifest) error {
	art, err := m.Artifact("root")
	if err != nil {
		return in.fail(st, err)
	}
	if trial, err := in.Target.TrialBooted(); err != nil || trial {
		if err == nil {
			err = ErrTrialBooted
		}
		return in.fail(st, err)
	}
	opts := in.Fetch
	last := -1
	opts.Progress = func(n int64) {
		if p := int(n * 100 / max(art.Length, 1)); p != last {
			last = p
			in.emit(Event{Phase: Downloading, Version: m.Version, Percent: p})
		}
	}
	pipe := newBlockPipe(pipeBlock, pipeDepth)
	done := make(chan error, 1)
	go func() {
		err := in.Target.StreamTo(ctx, "root", pipe)
		pipe.CloseRead(err)
		done <- err
	}()
	rec := &spotRecorder{w: pipe, spots: spotPlan(art.Length)}
	var wb Writeback
	if wbr, ok := in.Target.(Writebacker); ok {
		var err error
		if wb, err = wbr.Writeback("root"); err != nil {
			in.log().Warn("ota: the slot is written back only at the end", "err", err)
		} else {
			rec.advance = wb.Advance
		}
	}
	ferr := fetch.Fetch(ctx, in.Client, art, rec, opts)
	rec.done()
	pipe.CloseWithError(ferr)
	serr := <-done
	if wb != nil {
		wb.Close() // the stream has ended and gokrazy has synced the slot
	}
	if ferr != nil {
		return in.fail(st, fmt.Errorf("fetch: %w", ferr))
	}
	if serr != nil {
		return in.fail(st, fmt.Errorf("stream to root: %w", serr))
	}
	if rb, ok := in.Target.(ReadBacker); ok {
		in.emit(Event{Phase: Verifying, Version: m.Version})
		if err := spotCheck(rb, art, rec.spots); err != nil {
			return in.fail(st, err)
		}
	}
	st.Phase = Installed
	if err := in.save(st); err != nil {
		return err
	}
	in.emit(Event{Phase: Installed, Version: m.Version})
	return in.fromInstalled(ctx, st)
}

func (in *Installer) fromInstalled(ctx context.Context, st State) error {
	if err := in.Target.Testboot(ctx); err != nil {
		return in.fail(st, fmt.Errorf("testboot: %w", err))
	}
	st.Phase = Trial
	if err := in.save(st); err != nil {
		return err
	}
	in.emit(Event{Phase: Trial, Version: st.Version})
	in.audit("ota.trial_boot", fmt.Sprintf("v%d", st.Version))
	return in.Target.Reboot(ctx)
}

// failTrial records a failed trial, then reboots: the trial boot returns
// to the old slot by itself.
func (in *Installer) failTrial(ctx context.Context, st State, err error) error {
	ferr := in.fail(st, err)
	if rerr := in.Target.Reboot(ctx); rerr != nil {
		return errors.Join(ferr, rerr)
	}
	return ferr
}

// fail ends the attempt without touching the boot configuration.
func (in *Installer) fail(st State, err error) error {
	st.Phase, st.Reason = RolledBack, err.Error()
	st.KeysDoc, st.Manifest = nil, nil
	if serr := in.save(st); serr != nil {
		return errors.Join(err, serr)
	}
	in.audit("ota.failed", err.Error())
	in.emit(Event{Phase: RolledBack, Version: st.Version, Reason: err.Error()})
	return err
}

// Resume is called once at start-up. It continues whatever step a reboot or
// power cut interrupted; in Trial it runs the health gate.
func (in *Installer) Resume(ctx context.Context) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	st, err := in.Load()
	if err != nil {
		return err
	}
	if t, ok := in.Target.(CmdlineTidier); ok && st.Phase != Installed {
		if trial, err := in.Target.TrialBooted(); err == nil && !trial {
			if changed, err := t.TidyBootCmdline(); err != nil {
				in.log().Warn("ota: tidying the boot command line", "err", err)
			} else if changed {
				in.log().Info("ota: removed spent trial-boot flags from the boot command line")
			}
		}
	}
	switch st.Phase {
	case Downloading:
		m, err := in.verify(State{Floor: st.Floor, KeysVersion: st.KeysVersion}, st.KeysDoc, st.Manifest)
		if err != nil {
			return in.fail(st, fmt.Errorf("resume: %w", err))
		}
		in.log().Info("ota: resuming interrupted download", "version", st.Version)
		return in.fromDownloading(ctx, st, m)
	case Installed:
		return in.fromInstalled(ctx, st)
	case Trial:
		return in.gate(ctx, st)
	}
	return nil
}

func (in *Installer) gate(ctx context.Context, st State) error {
	trial, err := in.Target.TrialBooted()
	if err != nil {
		return in.fail(st, fmt.Errorf("trial boot state: %w", err))
	}
	if !trial {
		// The new slot did not come up (or the power was cut during
		// the trial): gokrazy fell back to the old slot by itself.
		return in.fail(st, errors.New("trial boot did not run the new version (fell back to the old slot)"))
	}
	if ml, ok := in.Target.(ModuleLister); ok {
		if err := checkModules(ml, st.KernelModules); err != nil {
			return in.failTrial(ctx, st, err)
		}
	}
	w := in.Window
	if w <= 0 {
		w = 5 * time.Minute
	}
	hctx, cancel := context.WithTimeout(ctx, w)
	defer cancel()
	// The whole slot is re-hashed beside the health check: both must pass.
	slotErr := make(chan error, 1)
	if rb, ok := in.Target.(ReadBacker); ok {
		go func() {
			t0 := time.Now()
			err := checkTrialSlot(hctx, rb, st.Manifest)
			if err != nil {
				cancel() // no need to wait for the health check
			} else {
				in.log().Info("ota: the trial slot hashes to the signed digest", "version", st.Version, "took", time.Since(t0).Round(time.Millisecond))
			}
			slotErr <- err
		}()
	} else {
		slotErr <- nil
	}
	var herr error
	if in.Health != nil {
		herr = in.Health(hctx)
	}
	if err := <-slotErr; err != nil {
		herr = fmt.Errorf("trial slot: %w", err)
	} else if herr != nil {
		herr = fmt.Errorf("health gate: %w", herr)
	}
	if herr != nil {
		return in.failTrial(ctx, st, herr)
	}
	if err := in.Target.Switch(ctx); err != nil {
		ferr := in.fail(st, fmt.Errorf("switch: %w", err))
		return errors.Join(ferr, in.Target.Reboot(ctx))
	}
	keys, _, kerr := manifest.ParseKeysUnverified(st.KeysDoc)
	if kerr == nil && keys.Version > st.KeysVersion {
		st.KeysVersion = keys.Version
	}
	st.Phase, st.Floor, st.Reason = Committed, st.Version, ""
	st.KeysDoc, st.Manifest = nil, nil
	if err := in.save(st); err != nil {
		return err
	}
	in.audit("ota.committed", fmt.Sprintf("v%d", st.Version))
	in.emit(Event{Phase: Committed, Version: st.Version})
	return nil
}
