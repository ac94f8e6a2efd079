package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/testutil/fleettest"
	"github.com/outpost-gw/outpost/internal/tokens"
	"github.com/outpost-gw/outpost/recorder/rtsptest"
)

// probed is what ffprobe says about a file's video stream.
type probed struct {
	frames   int       // decoded frames (-count_frames)
	duration float64   // container duration, s
	dts, pts []float64 // per packet, in file order
	keys     int
}

func ffprobe(t *testing.T, file string) probed {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_frames:format=duration:packet=pts_time,dts_time,flags", "-of", "json", file).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", file, err)
	}
	var v struct {
		Packets []struct {
			PTS   string `json:"pts_time"`
			DTS   string `json:"dts_time"`
			Flags string `json:"flags"`
		}
		Streams []struct {
			Frames string `json:"nb_read_frames"`
		}
		Format struct {
			Duration string
		}
	}
	if err := json.Unmarshal(out, &v); err != nil || len(v.Streams) != 1 {
		t.Fatalf("ffprobe %s: %v\n%s", file, err, out)
	}
	var p probed
	p.frames, _ = strconv.Atoi(v.Streams[0].Frames)
	p.duration, _ = strconv.ParseFloat(v.Format.Duration, 64)
	for _, pk := range v.Packets {
		d, err1 := strconv.ParseFloat(pk.DTS, 64)
		s, err2 := strconv.ParseFloat(pk.PTS, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: a packet without timestamps: %+v", file, pk)
		}
		p.dts, p.pts = append(p.dts, d), append(p.pts, s)
		if len(pk.Flags) > 0 && pk.Flags[0] == 'K' {
			p.keys++
		}
	}
	return p
}

// checkTimeline checks a recording of a fps stream with B-frames: it
// decodes without error, DTS strictly increases, PTS ≥ DTS, some packets
// are reordered (PTS ≠ DTS), the presentation times are one frame apart
// with none missing or doubled, and the frame count matches the duration.
func checkTimeline(t *testing.T, name, file string, fps float64) probed {
	t.Helper()
	if out, err := exec.Command("ffmpeg", "-v", "error", "-xerror", "-i", file, "-f", "null", "-").CombinedOutput(); err != nil {
		t.Errorf("%s does not decode: %v\n%s", name, err, out)
	}
	p := ffprobe(t, file)
	const eps = 1e-3
	reordered := 0
	for i := range p.dts {
		if i > 0 && p.dts[i] <= p.dts[i-1] {
			t.Errorf("%s: packet %d DTS %.3f not after %.3f", name, i, p.dts[i], p.dts[i-1])
		}
		if p.pts[i] < p.dts[i]-eps {
			t.Errorf("%s: packet %d PTS %.3f before DTS %.3f", name, i, p.pts[i], p.dts[i])
		}
		if math.Abs(p.pts[i]-p.dts[i]) > eps {
			reordered++
		}
	}
	if reordered == 0 {
		t.Errorf("%s: no packet with PTS ≠ DTS: the B-frames were lost", name)
	}
	pts := append([]float64(nil), p.pts...)
	sort.Float64s(pts)
	for i := 1; i < len(pts); i++ {
		if d := pts[i] - pts[i-1]; math.Abs(d-1/fps) > 0.25/fps {
			t.Errorf("%s: presentation times %.3f → %.3f: a step of %.1f frames", name, pts[i-1], pts[i], d*fps)
		}
	}
	if want := p.duration * fps; p.frames != len(p.pts) || math.Abs(float64(p.frames)-want) > 1.5 {
		t.Errorf("%s: %d frames decoded, %d packets, duration %.3fs × %.0f fps = %.1f", name, p.frames, len(p.pts), p.duration, fps, want)
	}
	if p.keys == 0 {
		t.Errorf("%s: no key frame", name)
	}
	return p
}

// TestOutpostdRecordsBFrames: ffmpeg publishes libx264 with two B-frames
// and a key frame every 2 s into the test RTSP server; the real outpostd
// records it. Every closed segment and a playback response of the LAN
// API decode cleanly (ffmpeg -xerror), keep their reordering (PTS ≠ DTS,
// DTS increasing), and hold duration × rate frames, one frame apart.
func TestOutpostdRecordsBFrames(t *testing.T) {
	requireTools(t, "ffmpeg", "ffprobe")
	const fps = 25
	bin := buildOutpostd(t)
	f, brokerURL := fleettest.Start(t)
	dir := t.TempDir()
	ff, err := config.LoadFleet(f.FleetFilePath())
	if err != nil {
		t.Fatal(err)
	}
	ff.BrokerURL = brokerURL.String()
	fb, _ := json.Marshal(ff)
	fleetPath := filepath.Join(dir, "fleet.json")
	os.WriteFile(fleetPath, fb, 0o600)

	srv, err := rtsptest.StartServer(rtsptest.ServerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cam, err := rtsptest.StartFFmpeg(context.Background(), srv.URL("cam"), rtsptest.FFmpegConfig{FPS: fps, GOP: 50, BFrames: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cam.Stop() })

	port := freePort(t)
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	cfgPath := filepath.Join(dir, "config.json")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`{"config_version":1,"lan":{"https_addr":"127.0.0.1:%d","http_addr":""},"watchdog":{"disabled":true},
		"storage":{"grow_perm":false},
		"recorder":{"cameras":[{"id":"door","url":%q}],"segment_duration":"4s","part_duration":"1s","min_free_mb":0,"live_rtsp_addr":""}}`, port, srv.URL("cam"))), 0o600)
	data := filepath.Join(dir, "data")
	var logs bytes.Buffer
	cmd := exec.Command(bin, "-config", cfgPath, "-data", data, "-fleet", fleetPath)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("outpostd logs:\n%s", tail(logs.String(), 60))
		}
	})

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 10 * time.Second}
	get := func(u, tok string) (*http.Response, error) {
		req, _ := http.NewRequest("GET", u, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		return hc.Do(req)
	}
	var st struct {
		Cloud struct {
			DeviceID string `json:"device_id"`
		}
		Cameras []struct{ ID, State string }
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if res, err := get(base+"/api/v1/status", ""); err == nil {
			json.NewDecoder(res.Body).Decode(&st)
			res.Body.Close()
			if st.Cloud.DeviceID != "" && len(st.Cameras) == 1 && st.Cameras[0].State == "online" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("box not up with the camera online: %+v", st)
		}
	}
	now := time.Now()
	tok, err := tokens.Mint(f.SigningKey(), tokens.Claims{User: "ana", Device: st.Cloud.DeviceID, Cameras: []string{"door"},
		Actions: []string{tokens.ActionPlayback}, NotBefore: now.Add(-time.Minute).Unix(), Expires: now.Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	// Three closed segments (key frames every 2 s, segments of 4 s).
	var spanStart time.Time
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		var recs struct {
			Segments []struct{ Start, End time.Time }
		}
		q := url.Values{"camera": {"door"}, "start": {now.Add(-time.Hour).UTC().Format(time.RFC3339)}, "end": {now.Add(time.Hour).UTC().Format(time.RFC3339)}}
		if res, err := get(base+"/api/v1/recordings?"+q.Encode(), tok); err == nil {
			json.NewDecoder(res.Body).Decode(&recs)
			res.Body.Close()
		}
		if len(recs.Segments) >= 3 {
			spanStart = recs.Segments[0].Start
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no three segments after 60 s: %+v", recs)
		}
	}

	// Playback across segment boundaries, starting mid-GOP.
	q := url.Values{"camera": {"door"}, "start": {spanStart.Add(3 * time.Second).UTC().Format(time.RFC3339Nano)}, "duration": {"7"}}
	res, err := get(base+"/api/v1/recordings/video?"+q.Encode(), tok)
	if err != nil {
		t.Fatal(err)
	}
	video, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("playback: %d %s", res.StatusCode, video)
	}
	pb := filepath.Join(dir, "playback.mp4")
	os.WriteFile(pb, video, 0o600)

	cmd.Process.Signal(syscall.SIGTERM) // closes the open segment
	cmd.Wait()

	files, _ := filepath.Glob(filepath.Join(data, "recordings", "door", "*", "*.mp4"))
	sort.Strings(files)
	if len(files) < 3 {
		t.Fatalf("%d segment files, want ≥ 3", len(files))
	}
	total := 0
	for _, file := range files {
		p := checkTimeline(t, filepath.Base(file), file, fps)
		total += p.frames
		t.Logf("%s: %d frames in %.2fs, %d key", filepath.Base(file), p.frames, p.duration, p.keys)
	}
	p := checkTimeline(t, "playback", pb, fps)
	t.Logf("playback: %d frames in %.2fs; %d segments, %d frames in all", p.frames, p.duration, len(files), total)
	if p.duration < 6.5 {
		t.Errorf("playback of 7 s holds %.2fs", p.duration)
	}
}
