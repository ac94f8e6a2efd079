package daemon

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/access"
	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/tokens"
	"github.com/outpost-gw/outpost/recorder/democam"
)

// TestLANPageAndHLS: the page and its assets are served with the security
// headers; the session endpoint says who is signed in; HLS goes through
// the viewer gate on every request (token, camera, live mode for the HLS
// path), audits the viewing once rather than per segment, and answers bad
// file names with 404; clips need the export action; a reusable token in
// a URL is refused.
func TestLANPageAndHLS(t *testing.T) {
	cam, err := democam.Start(democam.Options{FPS: 10, GOP: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer cam.Close()
	began := time.Now()
	cfg := testConfig()
	cfg.Recorder.Cameras = []config.Camera{{ID: "door", URL: cam.URL}, {ID: "vault", URL: cam.URL, Live: access.LiveOnPrem}}
	cfg.Recorder.SegmentDuration = config.Duration(2 * time.Second)
	cfg.Recorder.PartDuration = config.Duration(500 * time.Millisecond)
	r, f, st := startInFleet(t, cfg)
	defer r.stop(t)
	base := "https://" + r.ep.HTTPS
	mint := func(actions ...string) string {
		tok, err := tokens.Mint(f.SigningKey(), tokens.Claims{User: "ana", Device: st.Cloud.DeviceID, Cameras: []string{"door", "vault"},
			Actions: actions, NotBefore: time.Now().Add(-time.Minute).Unix(), Expires: time.Now().Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	viewer, exporter := mint(tokens.ActionLive, tokens.ActionPlayback), mint(tokens.ActionPlayback, tokens.ActionExport)
	do := func(method, path, tok string, hdr ...string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		res, err := insecureClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res, b
	}

	// The page.
	res, body := do("GET", "/", "")
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), "/assets/app.js") {
		t.Fatalf("GET /: %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP %q", csp)
	}
	for _, p := range []string{"/assets/app.js", "/assets/style.css"} {
		if res, _ := do("GET", p, ""); res.StatusCode != 200 || res.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("%s: %d %q", p, res.StatusCode, res.Header.Get("Cache-Control"))
		}
	}
	if res, _ := do("GET", "/assets/../webui.go", ""); res.StatusCode == 200 {
		t.Errorf("asset traversal: %d", res.StatusCode)
	}

	// Who is signed in.
	if res, _ := do("GET", "/api/v1/session", ""); res.StatusCode != 401 {
		t.Errorf("session without a cookie: %d", res.StatusCode)
	}
	res, body = do("GET", "/api/v1/session", "", "Cookie", sessionCookie+"="+viewer)
	if res.StatusCode != 200 || !strings.Contains(string(body), `"user":"ana"`) {
		t.Errorf("session with a cookie: %d %s", res.StatusCode, body)
	}

	// Status for the installer: clock, camera health, retention, no token.
	var s Status
	getJSON(t, base+"/api/v1/status", &s)
	if s.Time.IsZero() || len(s.Cameras) != 2 || s.Recording == nil {
		t.Errorf("status: time %v, cameras %+v, recording %+v", s.Time, s.Cameras, s.Recording)
	}

	// HLS: the muxer starts at the first request; the playlist follows.
	var master string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(300 * time.Millisecond) {
		res, body := do("GET", "/api/v1/live/door/index.m3u8", viewer)
		if res.StatusCode == 200 {
			master = string(body)
			break
		}
		if res.StatusCode != 503 || time.Now().After(deadline) {
			t.Fatalf("index.m3u8: %d %s", res.StatusCode, body)
		}
	}
	var media string
	for _, l := range strings.Split(master, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			media = strings.SplitN(l, "?", 2)[0]
		}
	}
	res, body = do("GET", "/api/v1/live/door/"+media, viewer)
	if res.StatusCode != 200 || !strings.Contains(string(body), "#EXT-X-MAP") {
		t.Fatalf("%s: %d %s", media, res.StatusCode, body)
	}
	var segs []string
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasSuffix(l, ".mp4") && !strings.HasPrefix(l, "#") {
			segs = append(segs, l)
		}
	}
	if len(segs) == 0 {
		t.Fatalf("no segments in %s", body)
	}
	for _, sg := range segs {
		if res, b := do("GET", "/api/v1/live/door/"+sg, viewer); res.StatusCode != 200 || res.Header.Get("Content-Type") != "video/mp4" || len(b) == 0 {
			t.Errorf("segment %s: %d %q %d bytes", sg, res.StatusCode, res.Header.Get("Content-Type"), len(b))
		}
	}
	for _, tc := range []struct {
		name, path, tok string
		want            int
	}{
		{"no token", "/api/v1/live/door/index.m3u8", "", 401},
		{"no live action", "/api/v1/live/door/index.m3u8", exporter, 403},
		{"on-prem camera from off-site", "/api/v1/live/vault/index.m3u8", viewer, 403},
		{"unknown camera", "/api/v1/live/yard/index.m3u8", viewer, 403},
		{"a segment needs the token too", "/api/v1/live/door/" + segs[0], "", 401},
		{"not a stream file", "/api/v1/live/door/passwd", viewer, 404},
		{"traversal", "/api/v1/live/door/..%2F..%2Fconfig.json", viewer, 404},
	} {
		if res, b := do("GET", tc.path, tc.tok); res.StatusCode != tc.want {
			t.Errorf("%s: %s → %d %s, want %d", tc.name, tc.path, res.StatusCode, b, tc.want)
		}
	}

	// A reusable token in the URL is refused; in a header it is fine.
	if res, b := do("GET", "/api/v1/live/door/index.m3u8?token="+url.QueryEscape(viewer), ""); res.StatusCode != 400 || !strings.Contains(string(b), "single-use") {
		t.Errorf("reusable token in the URL: %d %s", res.StatusCode, b)
	}

	// Clips: the export action, served as an attachment.
	clip := "/api/v1/recordings/clip?camera=door&start=" + began.UTC().Format(time.RFC3339) + "&duration=30"
	if res, _ := do("GET", clip, viewer); res.StatusCode != 403 {
		t.Errorf("clip without export: %d", res.StatusCode)
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		res, b := do("GET", clip, exporter)
		if res.StatusCode == 200 {
			if !strings.HasPrefix(res.Header.Get("Content-Disposition"), "attachment;") || len(b) == 0 {
				t.Errorf("clip: %q, %d bytes", res.Header.Get("Content-Disposition"), len(b))
			}
			break
		}
		if res.StatusCode != 404 || time.Now().After(deadline) { // 404 until a segment is closed
			t.Fatalf("clip: %d %s", res.StatusCode, b)
		}
	}

	// The viewing was audited at its index.m3u8, not per segment; every
	// refusal was audited.
	es, err := r.d.auditLog.Entries(0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	var okIndex, okSegment, denied int
	for _, e := range es {
		switch {
		case strings.Contains(e.Action, "/api/v1/live/") && e.Result == "ok" && strings.HasSuffix(e.Action, "index.m3u8"):
			okIndex++
		case strings.Contains(e.Action, "/api/v1/live/") && e.Result == "ok":
			okSegment++
		case strings.Contains(e.Action, "/api/v1/live/") && strings.HasPrefix(e.Result, "denied"):
			denied++
		}
	}
	if okIndex == 0 || okSegment != 0 || denied < 3 {
		t.Errorf("audit: %d index grants, %d segment grants (want 0), %d refusals", okIndex, okSegment, denied)
	}
}
