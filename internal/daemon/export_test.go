package daemon

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/operator"
	"github.com/outpost-gw/outpost/recorder/democam"
	"github.com/outpost-gw/outpost/recorder/export/exporttest"
)

// exportEvents collects the "export" events the operator receives.
type exportEvents struct {
	mu  sync.Mutex
	got []wire.Event
}

func (e *exportEvents) add(m operator.Message) {
	var ev wire.Event
	if m.Stream != "event" || wire.DecodeBody(m.Env, &ev, wire.DefaultLimits()) != nil || ev.Kind != "export" {
		return
	}
	e.mu.Lock()
	e.got = append(e.got, ev)
	e.mu.Unlock()
}

func (e *exportEvents) phases(id string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.got {
		if ev.Attrs["id"] == id {
			p := ev.Attrs["phase"]
			if pc := ev.Attrs["percent"]; pc != "" && p == "uploading" {
				p += " " + pc
			}
			out = append(out, p)
		}
	}
	return out
}

func (e *exportEvents) wait(t *testing.T, id, phase string, timeout time.Duration) wire.Event {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		e.mu.Lock()
		for _, ev := range e.got {
			if ev.Attrs["id"] == id && ev.Attrs["phase"] == phase {
				e.mu.Unlock()
				return ev
			}
		}
		e.mu.Unlock()
	}
	t.Fatalf("no %s event for %s within %v; got %v", phase, id, timeout, e.phases(id))
	return wire.Event{}
}

// TestExportCommands drives the cloud's export, clip and snapshot commands
// through the broker: each upload goes to a resumable session (one cut
// mid-chunk), progress comes back as events, the file at the server
// decodes; cameras whose modes keep video on the site are refused and
// audited; a daemon stopped mid-upload resumes the job when it starts again.
func TestExportCommands(t *testing.T) {
	cam, err := democam.Start(democam.Options{FPS: 10, GOP: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer cam.Close()
	up := &exporttest.Server{Sig: "s3cr3t", Final: http.StatusCreated, Release: make(chan struct{})}
	srv := httptest.NewTLSServer(up)
	defer srv.Close()

	cfg := testConfig()
	cfg.Recorder.Cameras = []config.Camera{
		{ID: "door", URL: cam.URL},
		{ID: "lobby", URL: "rtsp://127.0.0.1:1/lobby", Live: "on-prem", Recorded: "on-prem"}, // refused before any video is looked at
		{ID: "vault", URL: "rtsp://127.0.0.1:1/vault", Recorded: "recording-only"},
	}
	cfg.Recorder.SegmentDuration = config.Duration(time.Second)
	cfg.Recorder.PartDuration = config.Duration(250 * time.Millisecond)
	f, brokerURL := testFleetBroker(t)
	dir := t.TempDir()
	fleetPath := filepath.Join(dir, "fleet.json")
	writeFleetFile(t, f, brokerURL, fleetPath)
	o := Options{Config: cfg, FleetPath: fleetPath, DataDir: filepath.Join(dir, "d"), ExportClient: srv.Client()}
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
	ev := &exportEvents{}
	op.Subscribe(ev.add)
	dev := claim(t, r, op)
	waitOnline(t, r, 20*time.Second)
	// Closed segments for two whole seconds after the first one began.
	var from time.Time
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		recs, _ := r.d.rec.ix.List("door", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
		if len(recs) > 0 {
			from = recs[0].Start.UTC().Truncate(time.Second).Add(time.Second)
			if recs[len(recs)-1].End().After(from.Add(2 * time.Second)) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recording of door: %v; cameras %+v", recs, r.d.rec.cameras())
		}
	}
	cmd := func(name string, args map[string]any) wire.CommandResult {
		t.Helper()
		res, err := op.Command(context.Background(), dev, name, args, 10*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return res
	}
	uploadURL := func(path string) string { return srv.URL + path + "?upload_id=7&sig=s3cr3t" }
	exportArgs := func(id, camera, path string) map[string]any {
		return map[string]any{"id": id, "camera": camera, "start": from.Format(time.RFC3339), "duration_s": 2, "url": uploadURL(path)}
	}
	decodes := func(path string) {
		t.Helper()
		got, complete := up.File(path)
		if !complete || len(got) == 0 {
			t.Fatalf("%s: %d bytes at the server, complete %v", path, len(got), complete)
		}
		if _, err := exec.LookPath("ffmpeg"); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("ffmpeg is required in CI")
			}
			return
		}
		file := filepath.Join(t.TempDir(), "got.mp4")
		os.WriteFile(file, got, 0o600)
		for _, c := range [][]string{{"ffprobe", "-v", "error", "-show_format", file}, {"ffmpeg", "-v", "error", "-xerror", "-i", file, "-f", "null", "-"}} {
			if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil || len(out) > 0 && c[0] == "ffmpeg" {
				t.Errorf("%s of %s: %v\n%s", c[0], path, err, out)
			}
		}
	}

	// Export and clip: accepted, queued → uploading → done, through a cut.
	for _, name := range []string{"export", "clip"} {
		path := "/b/" + name + ".mp4"
		up.Inject(path, exporttest.Hang)
		go func() { time.Sleep(200 * time.Millisecond); up.Release <- struct{}{} }()
		if res := cmd(name, exportArgs(name+"-1", "door", path)); !res.OK {
			t.Fatalf("%s command: %+v", name, res)
		}
		done := ev.wait(t, name+"-1", "done", 30*time.Second)
		decodes(path)
		got, _ := up.File(path)
		if done.Attrs["bytes"] != strconv.Itoa(len(got)) || done.Attrs["camera"] != "door" || done.Attrs["command"] != name {
			t.Errorf("done event %+v for %d bytes", done.Attrs, len(got))
		}
		if ph := ev.phases(name + "-1"); ph[0] != "queued" || !strings.HasPrefix(ph[1], "uploading") {
			t.Errorf("%s phases %v", name, ph)
		}
	}
	// Snapshot: the newest GOP.
	res := cmd("snapshot", map[string]any{"id": "snap-1", "camera": "door", "url": uploadURL("/b/snap.mp4")})
	var snapRes struct {
		Until string `msgpack:"recorded_until"`
	}
	if !res.OK || msgpack.Unmarshal(res.Result, &snapRes) != nil {
		t.Fatalf("snapshot: %+v", res)
	}
	if until, err := time.Parse(time.RFC3339Nano, snapRes.Until); err != nil || time.Since(until) > time.Minute {
		t.Errorf("snapshot recorded_until %q", snapRes.Until)
	}
	ev.wait(t, "snap-1", "done", 30*time.Second)
	decodes("/b/snap.mp4")
	if _, err := exec.LookPath("ffprobe"); err == nil { // one GOP: one key frame
		got, _ := up.File("/b/snap.mp4")
		file := filepath.Join(t.TempDir(), "snap.mp4")
		os.WriteFile(file, got, 0o600)
		out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-skip_frame", "nokey",
			"-show_entries", "frame=pict_type", "-of", "csv=p=0", file).Output()
		if keys := strings.Fields(string(out)); err != nil || len(keys) != 1 {
			t.Errorf("snapshot key frames %q (%v), want one", out, err)
		}
	}

	// Refusals: on-site cameras, http, unknown keys.
	for _, tc := range []struct {
		name string
		args map[string]any
		want string
	}{
		{"export", exportArgs("x-1", "lobby", "/b/x"), "stays on the site LAN"},
		{"clip", exportArgs("x-2", "vault", "/b/x"), "may not be viewed or exported"},
		{"snapshot", map[string]any{"id": "x-3", "camera": "lobby", "url": uploadURL("/b/x")}, "stays on the site LAN"},
		{"export", exportArgs("x-4", "attic", "/b/x"), "unknown camera"},
		{"export", func() map[string]any {
			a := exportArgs("x-5", "door", "")
			a["url"] = "http://127.0.0.1:1/b?sig=s3cr3t"
			return a
		}(), "only https"},
		{"export", func() map[string]any {
			a := exportArgs("x-6", "door", "/b/x")
			delete(a, "duration_s")
			a["max_bytes"] = 1
			return a
		}(), "unknown key"},
	} {
		res := cmd(tc.name, tc.args)
		if res.OK || !strings.Contains(res.Error, tc.want) {
			t.Errorf("%s %v: %+v, want refused with %q", tc.name, tc.args["camera"], res, tc.want)
		}
	}
	if got, _ := up.File("/b/x"); got != nil {
		t.Error("a refused export reached the server")
	}
	entries, err := r.d.auditLog.Entries(0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	var denied, uploaded []string
	for _, e := range entries {
		if strings.HasPrefix(e.Result, "denied") {
			denied = append(denied, e.Action+" "+e.Target)
		}
		if strings.HasPrefix(e.Result, "ok: uploaded") {
			uploaded = append(uploaded, e.Action)
		}
		if strings.Contains(e.Source+e.Result+e.Action, "s3cr3t") {
			t.Errorf("audit entry with the URL's secret: %+v", e)
		}
	}
	for _, want := range []string{"export x-1 lobby", "clip x-2 vault", "snapshot x-3 lobby"} {
		if !strings.Contains(strings.Join(denied, "|"), want) {
			t.Errorf("no denied audit entry %q; have %v", want, denied)
		}
	}
	if len(uploaded) != 3 {
		t.Errorf("audited uploads %v, want export, clip, snapshot", uploaded)
	}

	// Cancel: an upload stuck in its first chunk stops, and says so.
	up.Inject("/b/cancel.mp4", exporttest.Hang)
	if res := cmd("export", exportArgs("exp-c", "door", "/b/cancel.mp4")); !res.OK {
		t.Fatalf("export: %+v", res)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if got, _ := up.File("/b/cancel.mp4"); len(got) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no bytes arrived")
		}
	}
	if res := cmd("export.cancel", map[string]any{"id": "exp-c"}); !res.OK {
		t.Fatalf("export.cancel: %+v", res)
	}
	ev.wait(t, "exp-c", "cancelled", 10*time.Second)
	if res := cmd("export.cancel", map[string]any{"id": "exp-c"}); res.OK || !strings.Contains(res.Error, "no such export") {
		t.Errorf("second cancel: %+v", res)
	}
	if _, complete := up.File("/b/cancel.mp4"); complete {
		t.Error("cancelled upload completed")
	}

	// Restart mid-upload: half of the first chunk arrives, then the daemon
	// stops; started again, it finishes the job from the server's count.
	up.Inject("/b/restart.mp4", exporttest.Hang)
	if res := cmd("export", exportArgs("exp-r", "door", "/b/restart.mp4")); !res.OK {
		t.Fatalf("export: %+v", res)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if got, _ := up.File("/b/restart.mp4"); len(got) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no bytes arrived")
		}
	}
	r.stop(t)
	stopped = true
	half, _ := up.File("/b/restart.mp4")
	r = start(t, o)
	stopped = false
	ev.wait(t, "exp-r", "done", 30*time.Second)
	decodes("/b/restart.mp4")
	got, _ := up.File("/b/restart.mp4")
	if !bytes.HasPrefix(got, half) || len(got) <= len(half) {
		t.Errorf("restart: %d bytes then %d", len(half), len(got))
	}
	t.Logf("restart: %d of %d bytes before; phases %v", len(half), len(got), ev.phases("exp-r"))
}

// TestExportModes: the cloud's export, clip and snapshot commands against
// every on-premise mode. Cloud paths are off-site, so only global modes
// let video out; a snapshot (a still from the recording, of the present)
// needs both the live and the recorded mode global.
func TestExportModes(t *testing.T) {
	cfg := testConfig()
	cfg.LAN.SiteSubnets = []string{"192.168.1.0/24"}
	modes := []config.Camera{
		{ID: "open"},
		{ID: "rec-global", Live: "on-prem", Recorded: "global"},
		{ID: "rec-onprem", Recorded: "on-prem"},
		{ID: "rec-only", Recorded: "recording-only"},
		{ID: "live-users", Live: "users", LiveUsers: []string{"ana"}},
	}
	cfg.Recorder.Cameras = modes
	d := &daemon{cfg: *cfg, rec: &recording{}}
	for _, c := range modes {
		d.rec.cams = append(d.rec.cams, &camera{id: c.ID})
	}
	want := map[string][3]bool{ // export, clip, snapshot allowed
		"open":       {true, true, true},
		"rec-global": {true, true, false},
		"rec-onprem": {false, false, false},
		"rec-only":   {false, false, false},
		"live-users": {true, true, false},
		"unknown":    {false, false, false},
	}
	for cam, w := range want {
		for i, cmd := range []string{"export", "clip", "snapshot"} {
			if err := d.allowExport(cmd, cam); (err == nil) != w[i] {
				t.Errorf("%s of %s: %v, want allowed %v", cmd, cam, err, w[i])
			}
		}
	}
}
