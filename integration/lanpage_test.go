package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/testutil/fleettest"
	"github.com/outpost-gw/outpost/internal/tokens"
	"github.com/outpost-gw/outpost/recorder/rtsptest"
)

// artifactsDir is where browser tests leave their screenshots:
// $OUTPOST_ARTIFACTS, or integration/artifacts in the checkout.
func artifactsDir(t *testing.T) string {
	dir := os.Getenv("OUTPOST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(repoRoot(), "integration", "artifacts")
	}
	dir = filepath.Join(dir, t.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browser starts headless Chromium that reaches nothing but loopback.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, _ := exec.LookPath("chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1100),
		chromedp.Flag("ignore-certificate-errors", true), // the box's self-signed LAN certificate
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		// Nothing but the box: no name resolves, so nothing leaves the host.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancelC(); cancelA() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// waitJS polls a JavaScript expression until it is true.
func waitJS(t *testing.T, ctx context.Context, what, expr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return
		}
		if err != nil {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	state, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({live: document.querySelector('#live-state')?.textContent,
		rec: document.querySelector('#rec-state')?.textContent, err: document.querySelector('#viewer-error')?.textContent,
		liveTime: document.querySelector('#live')?.currentTime, recTime: document.querySelector('#recorded')?.currentTime,
		liveErr: document.querySelector('#live')?.error?.message, recErr: document.querySelector('#recorded')?.error?.message})`))
	t.Fatalf("timed out waiting for %s (%s); page: %s", what, last, state)
}

// advancing checks that a video element plays: its currentTime moves by
// about the wall time.
func advancing(t *testing.T, ctx context.Context, sel, what string) {
	t.Helper()
	expr := `document.querySelector('` + sel + `').currentTime`
	t1, _ := chromedp.Run(ctx, chromedp.Evaluate[float64](expr))
	time.Sleep(2 * time.Second)
	t2, _ := chromedp.Run(ctx, chromedp.Evaluate[float64](expr))
	if t2-t1 < 1 {
		t.Errorf("%s: currentTime went from %.2f to %.2f in 2 s", what, t1, t2)
	}
	t.Logf("%s: currentTime %.2f → %.2f over 2 s", what, t1, t2)
}

func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)
}

// TestLANPageInChromium drives the LAN page in headless Chromium against
// the real outpostd recording a real ffmpeg camera (libx264 with B-frames,
// AAC): the installer view shows the camera online, live video plays
// (HLS; its currentTime advances), a recording plays from the timeline,
// and a token for another camera gets 403 for this one. Screenshots of
// each step are kept as artefacts.
func TestLANPageInChromium(t *testing.T) {
	requireTools(t, "ffmpeg", "ffprobe", "chromium")
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
	cam, err := rtsptest.StartFFmpeg(context.Background(), srv.URL("cam"), rtsptest.FFmpegConfig{Size: "640x360", Audio: "aac"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cam.Stop() })

	port := freePort(t)
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	cfgPath := filepath.Join(dir, "config.json")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`{"config_version":1,"lan":{"https_addr":"127.0.0.1:%d","http_addr":""},"watchdog":{"disabled":true},
		"storage":{"grow_perm":false},
		"recorder":{"cameras":[{"id":"door","url":%q}],"segment_duration":"4s","part_duration":"1s","min_free_mb":0}}`, port, srv.URL("cam"))), 0o600)
	var logs bytes.Buffer
	cmd := exec.Command(bin, "-config", cfgPath, "-data", filepath.Join(dir, "data"), "-fleet", fleetPath)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("outpostd logs:\n%s", tail(logs.String(), 4000))
		}
	})

	// The box: up, its device id, the camera online and a first segment.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 5 * time.Second}
	getJSON := func(url, tok string, into any) int {
		req, _ := http.NewRequest("GET", url, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		res, err := hc.Do(req)
		if err != nil {
			return 0
		}
		defer res.Body.Close()
		json.NewDecoder(res.Body).Decode(into)
		return res.StatusCode
	}
	var st struct {
		Cloud struct {
			DeviceID string `json:"device_id"`
		}
		Cameras []struct{ ID, State string }
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if getJSON(base+"/api/v1/status", "", &st) == 200 && st.Cloud.DeviceID != "" && len(st.Cameras) == 1 && st.Cameras[0].State == "online" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("box not up with the camera online: %+v", st)
		}
	}
	now := time.Now()
	mint := func(user string, cams ...string) string {
		tok, err := tokens.Mint(f.SigningKey(), tokens.Claims{User: user, Device: st.Cloud.DeviceID, Cameras: cams,
			Actions: []string{tokens.ActionLive, tokens.ActionPlayback, tokens.ActionExport}, NotBefore: now.Add(-time.Minute).Unix(), Expires: now.Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	ana, bob := mint("ana", "door"), mint("bob", "yard")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		var recs struct {
			Spans []struct{ Start, End time.Time }
		}
		q := fmt.Sprintf("/api/v1/recordings?camera=door&start=%s&end=%s", now.Add(-time.Hour).UTC().Format(time.RFC3339), now.Add(time.Hour).UTC().Format(time.RFC3339))
		if getJSON(base+q, ana, &recs) == 200 && len(recs.Spans) > 0 && recs.Spans[0].End.Sub(recs.Spans[0].Start) >= 7*time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recording of 8 s yet: %+v", recs)
		}
	}

	art := artifactsDir(t)
	ctx := browser(t)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()

	// Installer view: no token needed.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#cameras tbody tr[data-camera="door"] .badge.online`))); err != nil {
		t.Fatalf("installer view: %v", err)
	}
	claim, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#claim")))
	firmware, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#firmware")))
	clock, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#clock")))
	if claim == "" || claim == "–" || !strings.Contains(firmware, "on") || !strings.Contains(clock, "box clock") {
		t.Errorf("installer view: claim %q, firmware %q, clock %q", claim, firmware, clock)
	}
	screenshot(t, ctx, art, "1-installer.png")

	// Sign in; live video plays and keeps playing.
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#token"), ana),
		chromedp.Click(chromedp.CSS(`#signin-form button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS("#viewer"))); err != nil {
		t.Fatalf("sign in: %v", err)
	}
	waitJS(t, ctx, "live video playing", `document.querySelector('#live').currentTime > 1`, 60*time.Second)
	advancing(t, ctx, "#live", "live (native HLS)")
	waitJS(t, ctx, "a thumbnail", `!!document.querySelector('#cameras td.thumb video') && document.querySelector('#cameras td.thumb video').readyState >= 2`, 30*time.Second)
	screenshot(t, ctx, art, "2-live.png")

	// The Media Source fallback (browsers without native HLS) plays too.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/?player=mse"), chromedp.WaitVisible(chromedp.CSS("#viewer"))); err != nil {
		t.Fatalf("reload with the MSE player: %v", err)
	}
	waitJS(t, ctx, "live video through MSE", `document.querySelector('#live').src.startsWith('blob:') && document.querySelector('#live').currentTime > 0`, 60*time.Second)
	advancing(t, ctx, "#live", "live (MSE)")

	// A recording plays from the timeline.
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS("#timeline .span")),
		chromedp.Click(chromedp.CSS("#timeline .span"))); err != nil {
		t.Fatalf("timeline: %v", err)
	}
	waitJS(t, ctx, "recording playing", `document.querySelector('#recorded').currentTime > 1`, 30*time.Second)
	src, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#recorded').src`))
	if !strings.Contains(src, "/api/v1/recordings/video?camera=door") || strings.Contains(src, "token=") {
		t.Errorf("recorded src %q: want the playback API without a token in the URL", src)
	}
	screenshot(t, ctx, art, "3-recording.png")

	// The clip download link gives a file that plays.
	clip := fmt.Sprintf("%s/api/v1/recordings/clip?camera=door&start=%s&duration=3", base, now.UTC().Format(time.RFC3339))
	req, _ := http.NewRequest("GET", clip, nil)
	req.Header.Set("Authorization", "Bearer "+ana)
	if res, err := hc.Do(req); err != nil {
		t.Errorf("clip: %v", err)
	} else {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		p := filepath.Join(dir, "clip.mp4")
		os.WriteFile(p, b, 0o644)
		if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Disposition"), "attachment") {
			t.Errorf("clip: %d %q", res.StatusCode, res.Header.Get("Content-Disposition"))
		} else if out, err := exec.Command("ffmpeg", "-v", "error", "-xerror", "-i", p, "-f", "null", "-").CombinedOutput(); err != nil {
			t.Errorf("clip does not decode: %v\n%s", err, out)
		}
	}

	// Another camera's token: the page lists nothing, and this camera's
	// live stream and recordings are 403 from the page too.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#signin")),
		chromedp.SendKeys(chromedp.CSS("#token"), bob),
		chromedp.Click(chromedp.CSS(`#signin-form button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS("#viewer"))); err != nil {
		t.Fatalf("sign in as bob: %v", err)
	}
	codes, err := chromedp.Run(ctx, chromedp.Evaluate[[]int](`Promise.all([
		fetch('/api/v1/live/door/index.m3u8').then(r => r.status),
		fetch('/api/v1/recordings?camera=door&start=`+now.Add(-time.Hour).UTC().Format(time.RFC3339)+`&end=`+now.Add(time.Hour).UTC().Format(time.RFC3339)+`').then(r => r.status),
		fetch('/api/v1/recordings/video?camera=door&start=`+now.UTC().Format(time.RFC3339)+`&duration=2').then(r => r.status)])`,
		chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if len(codes) != 3 || codes[0] != 403 || codes[1] != 403 || codes[2] != 403 {
		t.Errorf("another camera's token on door: live, list, video = %v, want 403 each", codes)
	}
	options, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#camera option').length`))
	if options != 0 {
		t.Errorf("bob sees %d cameras, want none", options)
	}
	// Nothing of ana's session is left on the page.
	waitJS(t, ctx, "the page cleared for bob", `!document.querySelector('#recorded').getAttribute('src') && !document.querySelector('#live').getAttribute('src')
		&& !document.querySelector('#cameras td.thumb video') && getComputedStyle(document.querySelector('#clip-form')).display === 'none'
		&& document.querySelector('#timeline .span') === null`, 10*time.Second)
	screenshot(t, ctx, art, "4-other-camera.png")
}
