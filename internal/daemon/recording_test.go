package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/tokens"
	"github.com/outpost-gw/outpost/recorder/democam"
	"github.com/outpost-gw/outpost/recorder/rtsptest"
	"github.com/outpost-gw/outpost/recorder/synth"
)

// TestRecordsCamera: a configured camera is recorded to segments that the
// index lists with their spans, and each file plays (ffmpeg decodes it
// fully) where ffmpeg is installed.
func TestRecordsCamera(t *testing.T) {
	cam, err := democam.Start(democam.Options{FPS: 10, GOP: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer cam.Close()
	cfg := testConfig()
	cfg.Recorder.Cameras = []config.Camera{{ID: "door", URL: cam.URL}, {ID: "dead", URL: "rtsp://127.0.0.1:1/none"}}
	cfg.Recorder.SegmentDuration = config.Duration(2 * time.Second)
	cfg.Recorder.PartDuration = config.Duration(500 * time.Millisecond)
	data := filepath.Join(t.TempDir(), "d")
	from := time.Now().Add(-time.Minute)
	f, brokerURL := testFleetBroker(t)
	fleetPath := filepath.Join(t.TempDir(), "fleet.json")
	writeFleetFile(t, f, brokerURL, fleetPath)
	r := start(t, Options{Config: cfg, DataDir: data, FleetPath: fleetPath})
	var st Status
	getJSON(t, "https://"+r.ep.HTTPS+"/api/v1/status", &st)
	dev := st.Cloud.DeviceID
	mint := func(device, camera string, actions ...string) string {
		tok, err := tokens.Mint(f.SigningKey(), tokens.Claims{User: "ana", Device: device, Cameras: []string{camera}, Actions: actions,
			NotBefore: time.Now().Add(-time.Minute).Unix(), Expires: time.Now().Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tok := mint(dev, "door", tokens.ActionLive, tokens.ActionPlayback)
	time.Sleep(5500 * time.Millisecond)

	// Access: no token, a token for another camera, another box, or
	// without the action → refused.
	anyRange := "&start=" + from.UTC().Format(time.RFC3339) + "&end=" + time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	for _, tc := range []struct {
		name, tok, path string
		want            int
	}{
		{"no token", "", "/api/v1/cameras", http.StatusUnauthorized},
		{"forged", tok[:len(tok)-4] + "AAAA", "/api/v1/cameras", http.StatusUnauthorized},
		{"other camera", mint(dev, "yard", tokens.ActionPlayback), "/api/v1/recordings?camera=door" + anyRange, http.StatusForbidden},
		{"other box", mint("op-someotherbox00000", "door", tokens.ActionPlayback), "/api/v1/recordings?camera=door" + anyRange, http.StatusForbidden},
		{"live only", mint(dev, "door", tokens.ActionLive), "/api/v1/recordings?camera=door" + anyRange, http.StatusForbidden},
		{"good", tok, "/api/v1/recordings?camera=door" + anyRange, http.StatusOK},
	} {
		req, _ := http.NewRequest("GET", "https://"+r.ep.HTTPS+tc.path, nil)
		if tc.tok != "" {
			req.Header.Set("Authorization", "Bearer "+tc.tok)
		}
		resp, err := insecureClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}

	var cams struct{ Cameras []CameraStatus }
	getJSONAuth(t, "https://"+r.ep.HTTPS+"/api/v1/cameras", tok, &cams)
	states := map[string]string{}
	for _, c := range cams.Cameras {
		states[c.ID] = c.State
	}
	if states["door"] != "online" || states["dead"] == "online" {
		t.Errorf("camera states %v", states)
	}
	q := url.Values{"camera": {"door"}, "start": {from.UTC().Format(time.RFC3339)}, "end": {time.Now().Add(time.Minute).UTC().Format(time.RFC3339)}}
	var list struct {
		Segments []struct {
			Duration float64 `json:"duration_s"`
		}
		Spans []struct{ Start, End time.Time }
	}
	getJSONAuth(t, "https://"+r.ep.HTTPS+"/api/v1/recordings?"+q.Encode(), tok, &list)
	if len(list.Segments) < 2 || len(list.Spans) != 1 {
		t.Errorf("recordings: %d segments, spans %+v; want ≥ 2 segments in one span", len(list.Segments), list.Spans)
	}
	for _, bad := range []string{"camera=../../etc&start=x&end=y", "camera=door&start=yesterday&end=now", "camera=door"} {
		req, _ := http.NewRequest("GET", "https://"+r.ep.HTTPS+"/api/v1/recordings?"+bad, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := insecureClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Errorf("%s → %d", bad, resp.StatusCode)
		}
	}
	// A reusable token is refused in a URL; a single-use one opens one
	// playback: across segment boundaries, one fMP4 stream that ffmpeg
	// decodes.
	vq := url.Values{"camera": {"door"}, "start": {from.UTC().Format(time.RFC3339)}, "duration": {"120"}, "token": {tok}}
	resp, err := insecureClient().Get("https://" + r.ep.HTTPS + "/api/v1/recordings/video?" + vq.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a reusable token in the URL: %d, want 400", resp.StatusCode)
	}
	once, err := tokens.Mint(f.SigningKey(), tokens.Claims{User: "ana", Device: dev, Cameras: []string{"door"}, Actions: []string{tokens.ActionPlayback},
		NotBefore: time.Now().Add(-time.Minute).Unix(), Expires: time.Now().Add(time.Hour).Unix(), SingleUse: true, ID: "once-1"})
	if err != nil {
		t.Fatal(err)
	}
	vq.Set("token", once)
	resp, err = insecureClient().Get("https://" + r.ep.HTTPS + "/api/v1/recordings/video?" + vq.Encode())
	if err != nil {
		t.Fatal(err)
	}
	video, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "video/mp4" || len(video) == 0 {
		t.Fatalf("playback: %d %s, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(video))
	}
	playbackFile := filepath.Join(t.TempDir(), "playback.mp4")
	os.WriteFile(playbackFile, video, 0o600)
	r.stop(t) // closes and indexes the open segment

	files, _ := filepath.Glob(filepath.Join(data, "recordings", "door", "*", "*.mp4"))
	if len(files) < 3 {
		t.Fatalf("%d segment files, want ≥ 3", len(files))
	}
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("ffmpeg is required in CI")
		}
		t.Skip("ffmpeg not installed")
	}
	for _, f := range append(files, playbackFile) {
		out, err := exec.CommandContext(context.Background(), "ffmpeg", "-v", "error", "-xerror", "-i", f, "-f", "null", "-").CombinedOutput()
		if err != nil {
			t.Errorf("%s does not decode: %v\n%s", f, err, out)
		}
	}
}

// TestRetentionDeletesOldRecordings: with recorder.max_age set, segments
// older than that are deleted (files and index entries) while recording goes on.
func TestRetentionDeletesOldRecordings(t *testing.T) {
	cam, err := democam.Start(democam.Options{FPS: 10, GOP: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer cam.Close()
	cfg := testConfig()
	cfg.Recorder.Cameras = []config.Camera{{ID: "door", URL: cam.URL}}
	cfg.Recorder.SegmentDuration = config.Duration(time.Second)
	cfg.Recorder.PartDuration = config.Duration(250 * time.Millisecond)
	cfg.Recorder.MaxAge = config.Duration(2 * time.Second)
	data := filepath.Join(t.TempDir(), "d")
	r := start(t, Options{Config: cfg, DataDir: data})
	time.Sleep(7 * time.Second)
	files, _ := filepath.Glob(filepath.Join(data, "recordings", "door", "*", "*.mp4"))
	r.stop(t)
	// About 2 s of closed segments may stay, plus the open one.
	if len(files) == 0 || len(files) > 5 {
		t.Errorf("%d segment files after 7 s with max_age 2 s", len(files))
	}
}

func getJSONAuth(t *testing.T, url, tok string, v any) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := insecureClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// TestEightCamerasOneHostile: eight cameras at once, one of them sending
// garbage (random payloads, random timestamps, non-RTP frames): the daemon
// keeps serving and the seven others keep recording.
func TestEightCamerasOneHostile(t *testing.T) {
	cfg := testConfig()
	cfg.Recorder.SegmentDuration = config.Duration(2 * time.Second)
	cfg.Recorder.PartDuration = config.Duration(500 * time.Millisecond)
	for i := range 7 {
		cam, err := democam.Start(democam.Options{FPS: 10, GOP: 10})
		if err != nil {
			t.Fatal(err)
		}
		defer cam.Close()
		cfg.Recorder.Cameras = append(cfg.Recorder.Cameras, config.Camera{ID: fmt.Sprintf("cam%d", i), URL: cam.URL})
	}
	src, _ := synth.New(synth.Options{FPS: 10, GOP: 10})
	st := rtsptest.H264Stream{SPS: src.Track().SPS, PPS: src.Track().PPS, FPS: 10}
	for range 10 {
		st.Frames = append(st.Frames, src.Next().AU)
	}
	hostile, err := rtsptest.StartCamera(rtsptest.CameraConfig{Stream: st, Fault: rtsptest.Garbage})
	if err != nil {
		t.Fatal(err)
	}
	defer hostile.Close()
	cfg.Recorder.Cameras = append(cfg.Recorder.Cameras, config.Camera{ID: "hostile", URL: hostile.URL()})
	data := filepath.Join(t.TempDir(), "d")
	r := start(t, Options{Config: cfg, DataDir: data})
	time.Sleep(6 * time.Second)
	resp, err := insecureClient().Get("https://" + r.ep.HTTPS + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("daemon not serving with a hostile camera: %v", err)
	}
	resp.Body.Close()
	r.stop(t)
	for i := range 7 {
		files, _ := filepath.Glob(filepath.Join(data, "recordings", fmt.Sprintf("cam%d", i), "*", "*.mp4"))
		if len(files) < 2 {
			t.Errorf("cam%d: %d segments next to a hostile camera, want ≥ 2", i, len(files))
		}
	}
}
