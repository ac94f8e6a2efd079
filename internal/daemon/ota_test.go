package daemon

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/operator"
	"github.com/outpost-gw/outpost/internal/rollout"
	"github.com/outpost-gw/outpost/ota/install"
	"github.com/outpost-gw/outpost/ota/manifest"
	"github.com/outpost-gw/outpost/recorder"
	"github.com/outpost-gw/outpost/recorder/ingest"
	"github.com/outpost-gw/outpost/recorder/segment"
	"github.com/outpost-gw/outpost/recorder/synth"
)

// otaEvents collects the "ota" events the operator receives.
type otaEvents struct {
	mu  sync.Mutex
	got []wire.Event
	ch  chan struct{}
}

func (e *otaEvents) add(m operator.Message) {
	var ev wire.Event
	if m.Stream != "event" || wire.DecodeBody(m.Env, &ev, wire.DefaultLimits()) != nil || ev.Kind != "ota" {
		return
	}
	e.mu.Lock()
	e.got = append(e.got, ev)
	e.mu.Unlock()
	select {
	case e.ch <- struct{}{}:
	default:
	}
}

func (e *otaEvents) phases() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.got {
		p := ev.Attrs["phase"]
		if p == "downloading" {
			p += " " + ev.Attrs["percent"]
		}
		out = append(out, p)
	}
	return out
}

// waitPhase waits for an event of phase and returns it.
func (e *otaEvents) waitPhase(t *testing.T, phase string, timeout time.Duration) wire.Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		e.mu.Lock()
		for _, ev := range e.got {
			if ev.Attrs["phase"] == phase {
				e.mu.Unlock()
				return ev
			}
		}
		e.mu.Unlock()
		select {
		case <-e.ch:
		case <-deadline:
			t.Fatalf("no ota %q event within %v; got %v", phase, timeout, e.phases())
		}
	}
}

// TestUpdateCommandEndToEnd drives the "update" command through the broker
// and the daemon's dispatcher into the installer over a fake gokrazy target:
// the box reports offered → downloading → verifying → installed → trial,
// asks for the reboot; after the (simulated) trial boot the restarted daemon
// runs the health gate and reports committed. A second offer of the same
// version is refused as a rollback, and reported so.
func TestUpdateCommandEndToEnd(t *testing.T) {
	f, brokerURL := testFleetBroker(t)
	dir := t.TempDir()

	root, rootPrivs, err := manifest.NewRootKeys(3, 2)
	if err != nil {
		t.Fatal(err)
	}
	relPub, relPriv, _ := ed25519.GenerateKey(nil)
	keysDoc, err := manifest.SignKeys(rootPrivs[:2], manifest.KeysDocument{Version: 1, Expires: time.Now().Add(time.Hour), Threshold: 1, Keys: []ed25519.PublicKey{relPub}})
	if err != nil {
		t.Fatal(err)
	}
	img := bytes.Repeat([]byte("squashfs root v2 "), 40<<10)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, q *http.Request) {
		http.ServeContent(w, q, "root.img", time.Time{}, bytes.NewReader(img))
	}))
	defer srv.Close()
	signed, err := manifest.SignManifest([]ed25519.PrivateKey{relPriv}, manifest.Manifest{Version: 2, Target: hwTarget(), Expires: time.Now().Add(time.Hour),
		Artifacts: []manifest.Artifact{{Name: "root", URL: srv.URL + "/root.img", Length: int64(len(img)), SHA256: sha256.Sum256(img)}}})
	if err != nil {
		t.Fatal(err)
	}

	// The fleet file with the update root pinned.
	fleetPath := filepath.Join(dir, "fleet.json")
	writeFleetFile(t, f, brokerURL, fleetPath)
	ff, err := config.LoadFleet(fleetPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range root.Keys {
		ff.OTARoot.Keys = append(ff.OTARoot.Keys, base64.StdEncoding.EncodeToString(k))
	}
	ff.OTARoot.Threshold = root.Threshold
	b, _ := json.Marshal(ff)
	os.WriteFile(fleetPath, b, 0o600)

	fake := &install.Fake{Path: filepath.Join(dir, "slot")}
	cfg := testConfig()
	cfg.Cloud.UpdateHealthWindow = config.Duration(20 * time.Second)
	o := Options{Config: cfg, FleetPath: fleetPath, DataDir: filepath.Join(dir, "d"), OTATarget: fake, OTAClient: srv.Client()}
	r := start(t, o)
	stopped := false
	defer func() {
		if !stopped {
			r.stop(t)
		}
	}()

	op, err := operator.Connect(context.Background(), f, operator.Options{BrokerURL: brokerURL})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	ev := &otaEvents{ch: make(chan struct{}, 1)}
	op.Subscribe(ev.add)
	dev := claim(t, r, op)
	waitOnline(t, r, 20*time.Second)
	// Offered the way `outpost release push` does (internal/rollout over
	// the operator's link): it waits for the box's outcome across the
	// reboot below.
	link, err := rollout.NewLink(op, keysDoc, signed)
	if err != nil {
		t.Fatal(err)
	}
	pushed := make(chan error, 1)
	var pushOut bytes.Buffer
	go func() {
		_, err := rollout.Run(context.Background(), link, rollout.Plan{Canary: []string{dev}, Timeout: time.Minute}, &pushOut)
		pushed <- err
	}()
	ev.waitPhase(t, "trial", 30*time.Second)
	if got, _ := os.ReadFile(fake.Path); !bytes.Equal(got, img) {
		t.Fatalf("the slot holds %d bytes, not the image", len(got))
	}
	for _, want := range []string{"offered", "downloading 100", "verifying", "installed", "trial"} {
		if !slices.Contains(ev.phases(), want) {
			t.Errorf("no %q event; got %v", want, ev.phases())
		}
	}
	waitCalls(t, fake, "reboot")

	// The reboot: the daemon stops, the trial slot boots, the daemon starts
	// again on the same data dir and runs the gate once its link is up.
	r.stop(t)
	stopped = true
	fake.Boot()
	if trial, _ := fake.TrialBooted(); !trial {
		t.Fatal("the fake did not trial-boot")
	}
	r = start(t, o)
	stopped = false
	done := ev.waitPhase(t, "committed", 40*time.Second)
	if done.Attrs["version"] != "2" {
		t.Errorf("committed event %+v", done)
	}
	if i, j := slices.Index(fake.Calls, "testboot"), slices.Index(fake.Calls, "switch"); i < 0 || j < i {
		t.Errorf("target calls %v: want testboot, then switch after the trial", fake.Calls)
	}
	if err := <-pushed; err != nil || !strings.Contains(pushOut.String(), dev+": committed") {
		t.Errorf("rollout: %v\n%s", err, pushOut.String())
	}

	// An older version is a rollback: refused with its reason.
	v1, err := manifest.SignManifest([]ed25519.PrivateKey{relPriv}, manifest.Manifest{Version: 1, Target: hwTarget(), Expires: time.Now().Add(time.Hour),
		Artifacts: []manifest.Artifact{{Name: "root", URL: srv.URL + "/root.img", Length: int64(len(img)), SHA256: sha256.Sum256(img)}}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := op.Command(context.Background(), dev, "update", map[string][]byte{"keys": keysDoc, "manifest": v1}, 20*time.Second)
	if err != nil || !res.OK {
		t.Fatalf("update command for v1: %+v %v", res, err)
	}
	ref := ev.waitPhase(t, "refused", 20*time.Second)
	if !strings.Contains(ref.Attrs["reason"], "floor") && !strings.Contains(ref.Attrs["reason"], "rollback") {
		t.Errorf("refusal reason %q: want the floor / rollback named", ref.Attrs["reason"])
	}
	// The installed version again (a re-run rollout) is answered as
	// committed, with nothing streamed.
	streams := slices.Index(fakeCalls(fake), "stream:root")
	pushOut.Reset()
	if _, err := rollout.Run(context.Background(), link, rollout.Plan{Canary: []string{dev}, Timeout: 20 * time.Second}, &pushOut); err != nil {
		t.Errorf("re-run rollout of v2: %v\n%s", err, pushOut.String())
	}
	if n := len(slices.DeleteFunc(fakeCalls(fake), func(c string) bool { return c != "stream:root" })); n != 1 || streams < 0 {
		t.Errorf("streamed %d times", n)
	}
	t.Logf("events: %v", ev.phases())
}

func waitCalls(t *testing.T, f *install.Fake, call string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if slices.Contains(fakeCalls(f), call) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("target calls %v: no %s", fakeCalls(f), call)
}

func fakeCalls(f *install.Fake) []string {
	// Fake.Calls is appended under its lock; TrialBooted takes the same lock,
	// so reading after it sees every call made before.
	f.TrialBooted()
	return slices.Clone(f.Calls)
}

// TestRecorderWritingGate: no cameras pass at once; a camera that sends
// nothing fails the gate at the window's end, naming it; a camera whose
// writer gets a part written passes.
func TestRecorderWritingGate(t *testing.T) {
	ctx := context.Background()
	var none *recording
	if err := none.recorderWriting(ctx, time.Millisecond); err != nil {
		t.Errorf("no recorder: %v", err)
	}
	mk := func(id string) *camera {
		w, err := segment.New(segment.Config{Dir: t.TempDir(), Camera: id, PartDuration: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		in, err := ingest.New(ingest.Config{ID: id, URL: "rtsp://127.0.0.1:1/" + id, Sink: w})
		if err != nil {
			t.Fatal(err)
		}
		return &camera{id: id, ingest: in, writer: w}
	}
	dead := &recording{cams: []*camera{mk("dead")}}
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err := dead.recorderWriting(wctx, 10*time.Millisecond)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "dead (no frames)") {
		t.Errorf("camera without frames: %v", err)
	}

	live := mk("live")
	rec := &recording{cams: []*camera{live, mk("unplugged")}}
	src, _ := synth.New(synth.Options{FPS: 25, GOP: 25})
	if err := live.writer.Start([]recorder.Track{src.Track()}); err != nil {
		t.Fatal(err)
	}
	gate := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		gate <- rec.recorderWriting(wctx, 10*time.Millisecond)
	}()
	start := time.Now()
	for i := 0; i < 50; i++ { // 2 s of video: parts every 100 ms
		s := src.Next()
		s.Received = start.Add(s.DTS)
		if err := live.writer.Write(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-gate; err != nil {
		t.Errorf("camera writing parts: %v", err)
	}
	live.writer.End(nil)
}

func TestRunningRelease(t *testing.T) {
	for in, want := range map[string]uint64{"v7": 7, "12": 12, "dev": 0, "itest-1700000000": 0, "v1.2.3": 0, "": 0} {
		if got := runningRelease(in); got != want {
			t.Errorf("runningRelease(%q) = %d, want %d", in, got, want)
		}
	}
}
