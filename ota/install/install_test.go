package install

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/store"
	"github.com/outpost-gw/outpost/internal/trustclock"
	"github.com/outpost-gw/outpost/ota/manifest"
)

type rig struct {
	in       *Installer
	fake     *Fake
	dir      string
	events   []Event
	audits   []string
	mu       sync.Mutex
	keys     []byte
	root     manifest.RootOfTrust
	relPrivs []ed25519.PrivateKey
	srv      *httptest.Server
	image    []byte
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{dir: t.TempDir()}
	root, rootPrivs, err := manifest.NewRootKeys(3, 2)
	if err != nil {
		t.Fatal(err)
	}
	r.root = root
	pub, priv, _ := ed25519.GenerateKey(nil)
	r.relPrivs = []ed25519.PrivateKey{priv}
	r.keys, err = manifest.SignKeys(rootPrivs[:2], manifest.KeysDocument{Version: 1, Expires: time.Now().Add(time.Hour), Threshold: 1, Keys: []ed25519.PublicKey{pub}})
	if err != nil {
		t.Fatal(err)
	}
	r.image = bytes.Repeat([]byte("squashfs"), 64<<10)
	r.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, q *http.Request) {
		http.ServeContent(w, q, "root.img", time.Time{}, bytes.NewReader(r.image))
	}))
	t.Cleanup(r.srv.Close)
	r.fake = &Fake{Path: filepath.Join(r.dir, "slot")}
	r.reopen(t)
	return r
}

// reopen simulates a power cut: a new store handle and a new Installer.
func (r *rig) reopen(t *testing.T) {
	t.Helper()
	if r.in != nil {
		r.in.Store.Close()
	}
	st, err := store.Open(filepath.Join(r.dir, "db"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r.in = &Installer{
		Store: st, Root: r.root, HWTarget: "amd64", Target: r.fake, Client: r.srv.Client(),
		Window:   time.Second,
		Progress: func(e Event) { r.mu.Lock(); r.events = append(r.events, e); r.mu.Unlock() },
		Audit:    func(a, d string) { r.mu.Lock(); r.audits = append(r.audits, a); r.mu.Unlock() },
	}
	t.Cleanup(func() { st.Close() })
}

func (r *rig) manifest(t *testing.T, v uint64, img []byte) []byte {
	t.Helper()
	b, err := manifest.SignManifest(r.relPrivs, manifest.Manifest{Version: v, Target: "amd64", Expires: time.Now().Add(time.Hour),
		Artifacts: []manifest.Artifact{{Name: "root", URL: r.srv.URL + "/root.img", Length: int64(len(img)), SHA256: sha256.Sum256(img)}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (r *rig) phase(t *testing.T) Phase {
	st, err := r.in.Load()
	if err != nil {
		t.Fatal(err)
	}
	return st.Phase
}

func (r *rig) last() Event { r.mu.Lock(); defer r.mu.Unlock(); return r.events[len(r.events)-1] }

func TestCommit(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	if err := r.in.Offer(ctx, r.keys, r.manifest(t, 2, r.image)); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(r.fake.Path)
	if !bytes.Equal(got, r.image) {
		t.Fatal("slot does not hold the image")
	}
	if p := r.phase(t); p != Trial {
		t.Fatalf("phase %q", p)
	}
	r.fake.Boot()
	r.reopen(t)
	r.in.Health = func(context.Context) error { return nil }
	if err := r.in.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	st, _ := r.in.Load()
	if st.Phase != Committed || st.Floor != 2 || st.KeysVersion != 1 {
		t.Fatalf("state %+v", st)
	}
	want := []string{"stream:root", "testboot", "reboot", "switch"}
	if !slices.Equal(r.fake.Calls, want) {
		t.Fatalf("calls %v, want %v", r.fake.Calls, want)
	}
	if e := r.last(); e.Phase != Committed {
		t.Fatalf("last event %+v", e)
	}
	// An older version is below the floor: refused. The same version
	// again is answered as committed, without touching the target.
	if err := r.in.Offer(ctx, r.keys, r.manifest(t, 1, r.image)); !errors.Is(err, manifest.ErrRollback) {
		t.Fatalf("offer of v1: %v", err)
	}
	calls := len(r.fake.Calls)
	if err := r.in.Offer(ctx, r.keys, r.manifest(t, 2, r.image)); err != nil || r.last().Phase != Committed || len(r.fake.Calls) != calls {
		t.Fatalf("replay of v2: %v, last event %+v, calls %v", err, r.last(), r.fake.Calls)
	}
	bad := r.manifest(t, 2, r.image)
	bad = bytes.Replace(bad, []byte(`"target"`), []byte(`"targeT"`), 1)
	if err := r.in.Offer(ctx, r.keys, bad); err == nil || r.last().Phase != Refused {
		t.Fatalf("altered replay of v2: %v, last event %+v", err, r.last())
	}
	// v3 in the same boot (still trial-booted as far as gokrazy is
	// concerned): verified, then a reboot first, nothing streamed; the
	// next start installs it.
	r.fake.Calls = nil
	if err := r.in.Offer(ctx, r.keys, r.manifest(t, 3, r.image)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.fake.Calls, []string{"reboot"}) || r.phase(t) != Downloading || r.last().Phase != Rebooting {
		t.Fatalf("offer right after the commit: calls %v, phase %q, last event %+v", r.fake.Calls, r.phase(t), r.last())
	}
	r.fake.Boot()
	r.reopen(t)
	if err := r.in.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := r.in.Load(); st.Phase != Trial || st.Version != 3 || !slices.Equal(r.fake.Calls, []string{"reboot", "stream:root", "testboot", "reboot"}) {
		t.Fatalf("after the reboot: state %+v, calls %v", st, r.fake.Calls)
	}
}

func TestHealthGateFails(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	if err := r.in.Offer(ctx, r.keys, r.manifest(t, 2, r.image)); err != nil {
		t.Fatal(err)
	}
	r.fake.Boot()
	r.reopen(t)
	r.in.Health = func(ctx context.Context) error { <-ctx.Done(); return errors.New("cloud link down") }
	if err := r.in.Resume(ctx); err == nil {
		t.Fatal("gate passed")
	}
	st, _ := r.in.Load()
	if st.Phase != RolledBack || st.Floor != 0 {
		t.Fatalf("state %+v", st)
	}
	if slices.Contains(r.fake.Calls, "switch") || r.fake.Calls[len(r.fake.Calls)-1] != "reboot" {
		t.Fatalf("calls %v", r.fake.Calls)
	}
	if e := r.last(); e.Phase != RolledBack || e.Reason == "" {
		t.Fatalf("last event %+v", e)
	}
}

func TestTrialFallsBack(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	if err := r.in.Offer(ctx, r.keys, r.manifest(t, 2, r.image)); err != nil {
		t.Fatal(err)
	}
	r.fake.FailBoot = true
	r.fake.Boot()
	r.reopen(t)
	if err := r.in.Resume(ctx); err == nil {
		t.Fatal("no failure reported")
	}
	if p := r.phase(t); p != RolledBack || slices.Contains(r.fake.Calls, "switch") {
		t.Fatalf("phase %q calls %v", p, r.fake.Calls)
	}
}

// TestPowerCut resumes from each persisted step.
func TestPowerCut(t *testing.T) {
	for _, ph := range []Phase{Downloading, Installed, Trial} {
		t.Run(string(ph), func(t *testing.T) {
			r := newRig(t)
			ctx := context.Background()
			m := r.manifest(t, 2, r.image)
			st := State{Phase: ph, Version: 2, KeysDoc: r.keys, Manifest: m}
			if err := r.in.save(st); err != nil {
				t.Fatal(err)
			}
			if ph != Downloading {
				os.WriteFile(r.fake.Path, r.image, 0o644)
				r.fake.Trial = ph == Trial // the cut came after the reboot into the trial
			} else {
				os.WriteFile(r.fake.Path, r.image[:100], 0o644) // torn slot
			}
			r.reopen(t)
			r.in.Health = func(context.Context) error { return nil }
			if err := r.in.Resume(ctx); err != nil {
				t.Fatal(err)
			}
			if ph != Trial {
				if p := r.phase(t); p != Trial {
					t.Fatalf("phase %q", p)
				}
				got, _ := os.ReadFile(r.fake.Path)
				if !bytes.Equal(got, r.image) {
					t.Fatal("slot not rewritten")
				}
				r.fake.Boot()
				r.reopen(t)
				r.in.Health = func(context.Context) error { return nil }
				if err := r.in.Resume(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if p := r.phase(t); p != Committed {
				t.Fatalf("phase %q, calls %v", p, r.fake.Calls)
			}
		})
	}
}

func TestTamperedManifestRefused(t *testing.T) {
	r := newRig(t)
	m := r.manifest(t, 2, r.image)
	m = bytes.Replace(m, []byte(`"version"`), []byte(`"versioN"`), 1)
	err := r.in.Offer(context.Background(), r.keys, m)
	if err == nil {
		t.Fatal("tampered manifest accepted")
	}
	if len(r.fake.Calls) != 0 {
		t.Fatalf("target touched: %v", r.fake.Calls)
	}
	if _, serr := os.Stat(r.fake.Path); serr == nil {
		t.Fatal("bytes written")
	}
	if !slices.Contains(r.audits, "ota.refused") || r.last().Phase != Refused {
		t.Fatalf("not audited/reported: %v %+v", r.audits, r.last())
	}
}

func TestHashMismatchNotBooted(t *testing.T) {
	r := newRig(t)
	bad := append([]byte(nil), r.image...)
	bad[0] ^= 1
	if err := r.in.Offer(context.Background(), r.keys, r.manifest(t, 2, bad)); err == nil {
		t.Fatal("accepted")
	}
	if slices.Contains(r.fake.Calls, "testboot") || r.phase(t) != RolledBack {
		t.Fatalf("calls %v", r.fake.Calls)
	}
}

func TestStreamingWhileTrialRefused(t *testing.T) {
	r := newRig(t)
	r.fake.Trial = true
	err := r.in.Offer(context.Background(), r.keys, r.manifest(t, 2, r.image))
	if !errors.Is(err, ErrTrialBooted) {
		t.Fatalf("err %v", err)
	}
	if len(r.fake.Calls) != 0 {
		t.Fatalf("calls %v", r.fake.Calls)
	}
}

func TestBusyRefused(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	if err := r.in.Offer(ctx, r.keys, r.manifest(t, 2, r.image)); err != nil {
		t.Fatal(err)
	}
	if err := r.in.Offer(ctx, r.keys, r.manifest(t, 3, r.image)); !errors.Is(err, ErrBusy) {
		t.Fatalf("err %v", err)
	}
}

// tidyFake is a Fake that also tidies the boot command line.
type tidyFake struct {
	*Fake
	tidied int
}

func (f *tidyFake) TidyBootCmdline() (bool, error) { f.tidied++; return true, nil }

// TestResumeTidiesCmdline: a normal boot clears spent trial flags (so the
// next update gets its trial boot); a trial boot leaves the command line
// alone.
func TestResumeTidiesCmdline(t *testing.T) {
	r := newRig(t)
	tf := &tidyFake{Fake: r.fake}
	r.in.Target = tf
	if err := r.in.Resume(context.Background()); err != nil || tf.tidied != 1 {
		t.Fatalf("normal boot: tidied %d times, %v", tf.tidied, err)
	}
	r.fake.Trial = true
	r.in.Resume(context.Background())
	if tf.tidied != 1 {
		t.Error("tidied during a trial boot")
	}
}

// TestRunningVersionIsAFloor: a box with an empty store running release 5
// refuses older releases, answers 5 itself as committed (nothing
// streamed), and installs 6.
func TestRunningVersionIsAFloor(t *testing.T) {
	r := newRig(t)
	r.in.RunningVersion = 5
	ctx := context.Background()
	if err := r.in.Offer(ctx, r.keys, r.manifest(t, 3, r.image)); !errors.Is(err, manifest.ErrRollback) {
		t.Errorf("v3 on a box running v5: %v", err)
	}
	if m, err := r.in.Check(r.keys, r.manifest(t, 5, r.image)); !errors.Is(err, ErrAlreadyInstalled) || m.Version != 5 {
		t.Errorf("Check of v5 on a box running v5: v%d %v", m.Version, err)
	}
	if err := r.in.Offer(ctx, r.keys, r.manifest(t, 5, r.image)); err != nil || r.last() != (Event{Phase: Committed, Version: 5}) || len(r.fake.Calls) != 0 {
		t.Errorf("v5 on a box running v5: %v, last event %+v, calls %v", err, r.last(), r.fake.Calls)
	}
	if err := r.in.Offer(ctx, r.keys, r.manifest(t, 6, r.image)); err != nil {
		t.Errorf("v6: %v", err)
	}
}

// TestFreezeClockSetBack: the installer checks expiry against the trusted
// clock (internal/trustclock), so a box that once knew a later time and
// whose clock was then set back (spoofed NTP, a flat RTC battery) refuses a
// manifest that expired in between; a fresh box before NTP checks against
// its build time.
func TestFreezeClockSetBack(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name   string
		stored time.Time // trusted time kept in the store (zero: none)
		build  time.Time
		system time.Time
		ok     bool
	}{
		{"clock right", time.Time{}, now.Add(-24 * time.Hour), now, true},
		{"clock set back a year, later time kept", now.Add(2 * time.Hour), now.Add(-24 * time.Hour), now.AddDate(-1, 0, 0), false},
		{"clock set back, nothing kept: build time", time.Time{}, now.Add(-24 * time.Hour), now.AddDate(-1, 0, 0), true},
		{"fresh box in 1970, built after the expiry", time.Time{}, now.Add(2 * time.Hour), time.Unix(0, 0), false},
		{"fresh box in 1970, built before", time.Time{}, now.Add(-24 * time.Hour), time.Unix(0, 0), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			if !tc.stored.IsZero() {
				c := &trustclock.Clock{Store: r.in.Store, System: func() time.Time { return tc.stored }, Vouched: func() bool { return true }}
				if err := c.Persist(); err != nil {
					t.Fatal(err)
				}
			}
			clk := &trustclock.Clock{Store: r.in.Store, Build: tc.build, System: func() time.Time { return tc.system }}
			r.in.Now = clk.Now
			err := r.in.Offer(context.Background(), r.keys, r.manifest(t, 2, r.image))
			if tc.ok && err != nil || !tc.ok && !errors.Is(err, manifest.ErrExpired) {
				t.Fatalf("Offer = %v (ok %v)", err, tc.ok)
			}
		})
	}
}
