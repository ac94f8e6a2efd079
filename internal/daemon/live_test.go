package daemon

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/tokens"
	"github.com/outpost-gw/outpost/recorder/rtsptest"
	"github.com/outpost-gw/outpost/recorder/synth"
)

// TestLiveRTSP: a camera recorded by the daemon is restreamed over RTSP;
// two viewers at once decode it (ffmpeg -xerror) while the camera has one
// connection; a token for another camera, no token, or a forged one is
// refused.
func TestLiveRTSP(t *testing.T) {
	rtsptest.NeedFFmpeg(t)
	src, _ := synth.New(synth.Options{Width: 160, Height: 128, FPS: 10, GOP: 10})
	st := rtsptest.H264Stream{SPS: src.Track().SPS, PPS: src.Track().PPS, FPS: 10}
	for range 20 {
		st.Frames = append(st.Frames, src.Next().AU)
	}
	cam, err := rtsptest.StartCamera(rtsptest.CameraConfig{Stream: st})
	if err != nil {
		t.Fatal(err)
	}
	defer cam.Close()
	cfg := testConfig()
	cfg.Recorder.Cameras = []config.Camera{{ID: "door", URL: cam.URL()}, {ID: "yard", URL: "rtsp://127.0.0.1:1/none"}}
	f, brokerURL := testFleetBroker(t)
	fleetPath := filepath.Join(t.TempDir(), "fleet.json")
	writeFleetFile(t, f, brokerURL, fleetPath)
	r := start(t, Options{Config: cfg, DataDir: filepath.Join(t.TempDir(), "d"), FleetPath: fleetPath})
	defer r.stop(t)
	if r.ep.RTSP == "" {
		t.Fatal("no RTSP endpoint")
	}
	mint := func(camera string) string {
		tok, err := tokens.Mint(f.SigningKey(), tokens.Claims{User: "ana", Device: r.ep.DeviceID, Cameras: []string{camera},
			Actions: []string{tokens.ActionLive}, NotBefore: time.Now().Add(-time.Minute).Unix(), Expires: time.Now().Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	// In a URL only single-use tokens are accepted (one RTSP connection).
	mintOnce := func(camera string) string {
		tok, err := tokens.Mint(f.SigningKey(), tokens.Claims{User: "ana", Device: r.ep.DeviceID, Cameras: []string{camera}, SingleUse: true,
			Actions: []string{tokens.ActionLive}, NotBefore: time.Now().Add(-time.Minute).Unix(), Expires: time.Now().Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tok := mint("door")
	time.Sleep(1500 * time.Millisecond) // the camera is connected and streaming

	// Refusals, seen by a plain RTSP client.
	for _, tc := range []struct {
		name, url string
		want      base.StatusCode
	}{
		{"no token", "rtsp://" + r.ep.RTSP + "/door", base.StatusUnauthorized},
		{"forged", "rtsp://" + r.ep.RTSP + "/door?token=" + tok[:len(tok)-4] + "AAAA", base.StatusUnauthorized},
		{"other camera", "rtsp://" + r.ep.RTSP + "/door?token=" + mintOnce("yard"), base.StatusForbidden},
		{"reusable token in the URL", "rtsp://" + r.ep.RTSP + "/door?token=" + tok, base.StatusForbidden},
		{"unknown path", "rtsp://" + r.ep.RTSP + "/nope?token=" + tok, base.StatusNotFound},
		{"other camera as password", "rtsp://ana:" + mint("yard") + "@" + r.ep.RTSP + "/door", base.StatusForbidden},
	} {
		u, err := base.ParseURL(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		c := &gortsplib.Client{Scheme: u.Scheme, Host: u.Host}
		if err := c.Start2(); err != nil {
			t.Fatal(err)
		}
		_, res, err := c.Describe(u)
		c.Close()
		if err == nil || (res != nil && res.StatusCode != tc.want) || (res == nil && !strings.Contains(err.Error(), strconv.Itoa(int(tc.want))) && !strings.Contains(err.Error(), "authentication")) {
			t.Errorf("%s: res %v err %v, want %d", tc.name, res, err, tc.want)
		}
	}

	// The token as the password (Basic): ffmpeg cuts URL credentials at
	// 127 bytes, so a gortsplib client checks this one.
	u, _ := base.ParseURL("rtsp://viewer:" + tok + "@" + r.ep.RTSP + "/door")
	c := &gortsplib.Client{Scheme: u.Scheme, Host: u.Host}
	if err := c.Start2(); err != nil {
		t.Fatal(err)
	}
	if desc, _, err := c.Describe(u); err != nil || len(desc.Medias) != 1 {
		t.Errorf("token as password: %v", err)
	}
	c.Close()

	// Two viewers at once: ffmpeg decodes 3 s each.
	var wg sync.WaitGroup
	for i, u := range []string{
		"rtsp://" + r.ep.RTSP + "/door?token=" + mintOnce("door"),
		"rtsp://" + r.ep.RTSP + "/door?token=" + mintOnce("door"),
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, "ffmpeg", "-v", "error", "-xerror", "-rtsp_transport", "tcp", "-i", u, "-t", "3", "-f", "null", "-").CombinedOutput()
			if err != nil {
				t.Errorf("viewer %d: %v\n%s", i, err, out)
			}
		}()
	}
	wg.Wait()
	if n := cam.Connections(); n != 1 {
		t.Errorf("camera saw %d connections, want 1 (one ingest feeds recording and viewers)", n)
	}
}
