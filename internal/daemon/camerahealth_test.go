package daemon

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/operator"
	"github.com/outpost-gw/outpost/recorder/rtsptest"
	"github.com/outpost-gw/outpost/recorder/synth"
)

// fleetFeed collects what the operator receives from the box: the latest
// telemetry sample and the events.
type fleetFeed struct {
	mu      sync.Mutex
	metrics map[string]float64
	events  []wire.Event
}

func (f *fleetFeed) add(m operator.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch m.Stream {
	case "telemetry":
		var tm wire.Telemetry
		if wire.DecodeBody(m.Env, &tm, wire.DefaultLimits()) == nil {
			f.metrics = tm.Metrics
		}
	case "event":
		var ev wire.Event
		if wire.DecodeBody(m.Env, &ev, wire.DefaultLimits()) == nil {
			f.events = append(f.events, ev)
		}
	}
}

// waitFor polls until ok holds for the latest telemetry and the events.
func (f *fleetFeed) waitFor(t *testing.T, what string, ok func(m map[string]float64, evs []wire.Event) bool) {
	t.Helper()
	for deadline := time.Now().Add(25 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		f.mu.Lock()
		m, evs := f.metrics, f.events
		done := m != nil && ok(m, evs)
		f.mu.Unlock()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fleet never saw %s; latest telemetry %v, events %+v", what, m, evs)
		}
	}
}

func hasEvent(evs []wire.Event, kind, camera string) bool {
	for _, ev := range evs {
		if ev.Kind == kind && ev.Attrs["camera"] == camera {
			return true
		}
	}
	return false
}

// TestCameraHealthReachesFleet: a camera's health (online, fps, bitrate,
// age of the last key frame, reconnects) reaches the fleet as telemetry,
// and when the camera goes away and comes back the fleet gets a
// camera_offline and then a camera_recovered event, with the telemetry
// following suit.
func TestCameraHealthReachesFleet(t *testing.T) {
	srv, err := rtsptest.StartServer(rtsptest.ServerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	src, err := synth.New(synth.Options{Width: 64, Height: 48, FPS: 10, GOP: 10})
	if err != nil {
		t.Fatal(err)
	}
	st := rtsptest.H264Stream{SPS: src.Track().SPS, PPS: src.Track().PPS, FPS: 10, InBand: true}
	for range 10 {
		st.Frames = append(st.Frames, src.Next().AU)
	}
	url := srv.URL("/cam")
	pub, err := rtsptest.Publish(url, st)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { pub.Close() }()

	cfg := testConfig()
	cfg.Cloud.TelemetryInterval = config.Duration(time.Second)
	cfg.Recorder.Cameras = []config.Camera{{ID: "front-door", URL: url}}
	cfg.Recorder.SegmentDuration = config.Duration(2 * time.Second)
	cfg.Recorder.PartDuration = config.Duration(500 * time.Millisecond)
	f, brokerURL := testFleetBroker(t)
	dir := t.TempDir()
	fleetPath := filepath.Join(dir, "fleet.json")
	writeFleetFile(t, f, brokerURL, fleetPath)
	r := start(t, Options{Config: cfg, FleetPath: fleetPath, DataDir: filepath.Join(dir, "d")})
	defer r.stop(t)
	op, err := operator.Connect(context.Background(), f, operator.Options{BrokerURL: brokerURL})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	feed := &fleetFeed{}
	op.Subscribe(feed.add)
	var s Status
	getJSON(t, "https://"+r.ep.HTTPS+"/api/v1/status", &s)
	if _, err := op.Claim(context.Background(), s.Cloud.ClaimCode, "", 10*time.Second); err != nil {
		t.Fatal(err)
	}

	const p = "camera_front_door_" // ids name metrics with - as _
	feed.waitFor(t, "the camera online with its figures", func(m map[string]float64, _ []wire.Event) bool {
		age, hasAge := m[p+"keyframe_age_s"]
		_, hasRec := m[p+"reconnects"]
		return m[p+"online"] == 1 && m[p+"fps"] > 5 && m[p+"bitrate_bps"] > 1000 && hasAge && age >= 0 && age < 3 && hasRec
	})

	pub.Close() // the camera goes away: its path answers 404
	feed.waitFor(t, "camera_offline", func(m map[string]float64, evs []wire.Event) bool {
		return hasEvent(evs, "camera_offline", "front-door") && m[p+"online"] == 0
	})
	if hasEvent(feed.events, "camera_recovered", "front-door") {
		t.Errorf("camera_recovered before the camera came back: %+v", feed.events)
	}

	if pub, err = rtsptest.Publish(url, st); err != nil { // and comes back
		t.Fatal(err)
	}
	feed.waitFor(t, "camera_recovered", func(m map[string]float64, evs []wire.Event) bool {
		return hasEvent(evs, "camera_recovered", "front-door") && m[p+"online"] == 1 && m[p+"reconnects"] >= 1 && m[p+"fps"] > 0
	})
	feed.mu.Lock()
	for _, ev := range feed.events {
		if ev.Kind == "camera_offline" && ev.Severity != wire.SeverityWarning || ev.Kind == "camera_recovered" && ev.Severity != wire.SeverityInfo {
			t.Errorf("event %s with severity %s", ev.Kind, ev.Severity)
		}
	}
	feed.mu.Unlock()
}
