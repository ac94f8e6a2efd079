package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/operator"
)

// TestHoldCommands: the fleet puts recordings on hold; a retention pass
// that deletes everything else passes them over, across a restart; a
// released hold and an expired one no longer keep anything. Bad
// arguments and unknown cameras are refused; holds are audited.
func TestHoldCommands(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "d")
	root := filepath.Join(data, "recordings")
	segs := writeSegments(t, root, "door", time.Now().Add(-3*time.Hour).Truncate(time.Second), 6*time.Second, time.Second)
	if len(segs) != 6 {
		t.Fatalf("%d segments written, want 6", len(segs))
	}
	f, brokerURL := testFleetBroker(t)
	fleetPath := filepath.Join(dir, "fleet.json")
	writeFleetFile(t, f, brokerURL, fleetPath)
	cfg := testConfig()
	cfg.Recorder.Cameras = []config.Camera{{ID: "door", URL: "rtsp://127.0.0.1:1/none"}}
	r := start(t, Options{Config: cfg, FleetPath: fleetPath, DataDir: data})
	op, err := operator.Connect(context.Background(), f, operator.Options{BrokerURL: brokerURL})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	dev := claim(t, r, op)
	waitOnline(t, r, 20*time.Second)
	cmd := func(name string, args map[string]any) (map[string]any, string) {
		t.Helper()
		res, err := op.Command(context.Background(), dev, name, args, 15*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var m map[string]any
		if res.OK {
			if err := msgpack.Unmarshal(res.Result, &m); err != nil {
				t.Fatal(err)
			}
		}
		return m, res.Error
	}
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	ms := time.Millisecond
	holdArgs := func(id, camera string, from, to time.Time, until time.Duration) map[string]any {
		return map[string]any{"id": id, "camera": camera, "start": ts(from), "end": ts(to), "until": ts(time.Now().Add(until))}
	}
	// keep: segments 1 and 2, for an hour; brief: segment 4, for a few
	// seconds; gone: segment 5, released at once.
	res, errMsg := cmd("hold", holdArgs("keep", "door", segs[1].Start.Add(ms), segs[2].Start.Add(ms), time.Hour))
	if errMsg != "" || res["held"] != true || fmt.Sprint(res["segments"]) != "2" {
		t.Fatalf("hold keep: %v %q", res, errMsg)
	}
	briefUntil := 12 * time.Second
	if _, errMsg := cmd("hold", holdArgs("brief", "door", segs[4].Start.Add(ms), segs[4].Start.Add(2*ms), briefUntil)); errMsg != "" {
		t.Fatalf("hold brief: %q", errMsg)
	}
	placed := time.Now()
	if _, errMsg := cmd("hold", holdArgs("gone", "door", segs[5].Start.Add(ms), segs[5].Start.Add(2*ms), time.Hour)); errMsg != "" {
		t.Fatalf("hold gone: %q", errMsg)
	}
	if res, errMsg := cmd("hold.release", map[string]any{"id": "gone"}); errMsg != "" || res["released"] != true {
		t.Fatalf("hold.release: %v %q", res, errMsg)
	}
	for _, tc := range []struct {
		name string
		args map[string]any
		want string
	}{
		{"hold", holdArgs("x1", "nosuch", segs[0].Start, segs[1].Start, time.Hour), "unknown camera"},
		{"hold", holdArgs("x2", "door", segs[0].Start, segs[1].Start, -time.Minute), "until"},
		{"hold", holdArgs("x3", "door", segs[1].Start, segs[0].Start, time.Hour), "end"},
		{"hold", map[string]any{"id": "x4", "camera": "door"}, "keys"},
		{"hold.release", map[string]any{"id": "gone"}, "no such hold"},
		{"hold.release", map[string]any{"id": "../x"}, "id"},
	} {
		if _, errMsg := cmd(tc.name, tc.args); !strings.Contains(errMsg, tc.want) {
			t.Errorf("%s %v: error %q, want one with %q", tc.name, tc.args, errMsg, tc.want)
		}
	}
	r.stop(t)

	// Restarted with a retention rule that wants every segment gone.
	cfg.Recorder.MaxAge = config.Duration(time.Hour)
	r = start(t, Options{Config: cfg, FleetPath: fleetPath, DataDir: data})
	defer r.stop(t)
	kept := func() []int {
		var out []int
		for i, sg := range segs {
			if recs, _ := r.d.rec.ix.List("door", sg.Start, sg.Start.Add(ms)); len(recs) == 1 && recs[0].Start.Equal(sg.Start) {
				out = append(out, i)
			}
		}
		return out
	}
	waitKept := func(want []int, within time.Duration) {
		t.Helper()
		var got []int
		for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if got = kept(); equalInts(got, want) {
				return
			}
		}
		t.Fatalf("segments kept %v, want %v", got, want)
	}
	waitKept([]int{1, 2, 4}, 5*time.Second)
	if time.Since(placed) > briefUntil {
		t.Fatalf("too slow: the brief hold expired before the first check (%v)", time.Since(placed))
	}
	waitKept([]int{1, 2}, briefUntil+10*time.Second) // brief expires: its segment goes

	entries, err := r.d.auditLog.Entries(0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	var log []string
	for _, e := range entries {
		if strings.HasPrefix(e.Action, "hold") {
			log = append(log, e.Action+" "+e.Target+" "+strings.SplitN(e.Result, ":", 2)[0])
		}
	}
	all := strings.Join(log, "|")
	for _, want := range []string{"hold keep door ok", "hold brief door ok", "hold.release gone door ok", "hold x1 nosuch refused", "hold brief expired door ok"} {
		if !strings.Contains(all, want) {
			t.Errorf("no audit entry %q; have %v", want, log)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
