package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/access"
	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/fleet"
	"github.com/outpost-gw/outpost/internal/tokens"
	"github.com/outpost-gw/outpost/recorder/live"
)

// TestOnPremModesOnLANPaths: the running daemon applies each camera's modes
// on the LAN API and the RTSP hook. The test's requests come from loopback,
// which is not the site LAN unless lan.site_subnets says so.
func TestOnPremModesOnLANPaths(t *testing.T) {
	cfg := testConfig()
	cfg.Recorder.Cameras = []config.Camera{
		{ID: "open", URL: "rtsp://127.0.0.1:1/a"},
		{ID: "onprem", URL: "rtsp://127.0.0.1:1/b", Live: access.LiveOnPrem, Recorded: access.RecordedOnPrem},
		{ID: "sealed", URL: "rtsp://127.0.0.1:1/c", Recorded: access.RecordedRecordingOnly},
		{ID: "vip", URL: "rtsp://127.0.0.1:1/d", Live: access.LiveUsers, LiveUsers: []string{"bob"}},
	}
	r, f, st := startInFleet(t, cfg)
	defer r.stop(t)
	mint := func(user string) string {
		tok, err := tokens.Mint(f.SigningKey(), tokens.Claims{User: user, Device: st.Cloud.DeviceID, Cameras: []string{"*"},
			Actions: []string{tokens.ActionLive, tokens.ActionPlayback}, NotBefore: time.Now().Add(-time.Minute).Unix(), Expires: time.Now().Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	span := "&start=" + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339) + "&end=" + time.Now().UTC().Format(time.RFC3339)
	get := func(tok, path string) int {
		req, _ := http.NewRequest("GET", "https://"+r.ep.HTTPS+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := insecureClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	ana, bob := mint("ana"), mint("bob")
	for _, c := range []struct {
		camera, tok string
		want        int
	}{
		{"open", ana, 200},
		{"onprem", ana, 403}, // loopback is not the site LAN
		{"sealed", ana, 403},
		{"vip", ana, 200}, // users mode limits live only
	} {
		if got := get(c.tok, "/api/v1/recordings?camera="+c.camera+span); got != c.want {
			t.Errorf("recordings of %s: %d, want %d", c.camera, got, c.want)
		}
	}
	// The camera list shows what the token names, with what this viewer
	// may do from here.
	openOnly, err := tokens.Mint(f.SigningKey(), tokens.Claims{User: "ana", Device: st.Cloud.DeviceID, Cameras: []string{"open", "onprem"},
		Actions: []string{tokens.ActionLive, tokens.ActionPlayback}, NotBefore: time.Now().Add(-time.Minute).Unix(), Expires: time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "https://"+r.ep.HTTPS+"/api/v1/cameras", nil)
	req.Header.Set("Authorization", "Bearer "+openOnly)
	resp, err := insecureClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var list struct{ Cameras []CameraStatus }
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(list.Cameras) != 2 || list.Cameras[0].ID != "open" || !list.Cameras[0].CanLive || !list.Cameras[0].CanPlayback ||
		list.Cameras[1].ID != "onprem" || list.Cameras[1].CanLive || list.Cameras[1].CanPlayback {
		t.Errorf("camera list %+v", list.Cameras)
	}

	// The RTSP restream's hook, through the same gate.
	d := r.d
	lo := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
	for _, c := range []struct {
		camera, tok string
		want        error
	}{
		{"open", ana, nil},
		{"onprem", ana, access.ErrOnPrem},
		{"sealed", ana, nil},
		{"vip", ana, access.ErrUser},
		{"vip", bob, nil},
	} {
		err := d.authorizeLive(context.Background(), live.AuthRequest{Camera: c.camera, Token: c.tok, Remote: lo})
		if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("rtsp %s: %v, want %v", c.camera, err, c.want)
		}
	}
	// With loopback declared part of the site, on-prem opens.
	d.cfg.LAN.SiteSubnets = []string{"127.0.0.0/8"}
	if err := d.authorizeLive(context.Background(), live.AuthRequest{Camera: "onprem", Token: ana, Remote: lo}); err != nil {
		t.Errorf("rtsp onprem from the site: %v", err)
	}
	if got := get(ana, "/api/v1/recordings?camera=onprem"+span); got != 200 {
		t.Errorf("recordings of onprem from the site: %d", got)
	}
	if got := get(ana, "/api/v1/recordings?camera=sealed"+span); got != 403 {
		t.Errorf("recordings of sealed from the site: %d", got)
	}
	// Every refusal was audited.
	es, err := d.auditLog.Entries(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	denied := 0
	for _, e := range es {
		if strings.Contains(e.Result, "denied") && (strings.Contains(e.Result, "site LAN") || strings.Contains(e.Result, "recording")) {
			denied++
		}
	}
	if denied < 3 {
		t.Errorf("%d mode refusals audited, want ≥ 3", denied)
	}
}

// TestSessionCSRFAndLockout: sign in sets an HttpOnly SameSite=Strict
// cookie that then opens the APIs; a cross-site POST is refused; a source
// that keeps failing is locked out while others are not.
func TestSessionCSRFAndLockout(t *testing.T) {
	cfg := testConfig()
	cfg.Recorder.Cameras = []config.Camera{{ID: "door", URL: "rtsp://127.0.0.1:1/a"}}
	r, f, st := startInFleet(t, cfg)
	defer r.stop(t)
	mint := func(single bool) string {
		tok, err := tokens.Mint(f.SigningKey(), tokens.Claims{User: "ana", Device: st.Cloud.DeviceID, Cameras: []string{"door"},
			Actions: []string{tokens.ActionLive}, NotBefore: time.Now().Add(-time.Minute).Unix(), Expires: time.Now().Add(time.Hour).Unix(), SingleUse: single})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	base := "https://" + r.ep.HTTPS
	post := func(tok string, hdr map[string]string) *http.Response {
		req, _ := http.NewRequest("POST", base+"/api/v1/session", strings.NewReader(url.Values{"token": {tok}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := insecureClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	// Cross-site sign-in (login CSRF) refused, same origin accepted.
	if resp := post(mint(false), map[string]string{"Origin": "https://evil.example"}); resp.StatusCode != 403 {
		t.Errorf("cross-site sign-in: %d", resp.StatusCode)
	}
	if resp := post(mint(false), map[string]string{"Origin": "https://" + r.ep.HTTPS, "Sec-Fetch-Site": "cross-site"}); resp.StatusCode != 403 {
		t.Errorf("sec-fetch-site cross-site: %d", resp.StatusCode)
	}
	if resp := post(mint(true), map[string]string{"Origin": base}); resp.StatusCode != 401 {
		t.Errorf("sign-in with a single-use token: %d", resp.StatusCode)
	}
	resp := post(mint(false), map[string]string{"Origin": base})
	if resp.StatusCode != 200 {
		t.Fatalf("sign-in: %d", resp.StatusCode)
	}
	var ck *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			ck = c
		}
	}
	if ck == nil || !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteStrictMode {
		t.Fatalf("session cookie %+v", ck)
	}
	req, _ := http.NewRequest("GET", base+"/api/v1/cameras", nil)
	req.AddCookie(ck)
	if resp, err := insecureClient().Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("cameras with the cookie: %v %v", resp, err)
	}

	// Lockout: maxFailures guesses from one source (the refused single-use
	// sign-in above was a genuine token and did not count), then even a
	// good token from it gets 429.
	for i := 0; i < maxFailures; i++ {
		if resp := post("garbage", map[string]string{"Origin": base}); resp.StatusCode != 401 {
			t.Fatalf("bad token %d: %d", i, resp.StatusCode)
		}
	}
	resp = post(mint(false), map[string]string{"Origin": base})
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("after %d failures: %d (Retry-After %q)", maxFailures, resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Another source is not locked out, and the lock lifts after lockoutFor.
	d := r.d
	if ok, _ := d.locks.locked(access.RemoteAddr("192.168.1.50:1234")); ok {
		t.Error("another source locked out")
	}
	d.locks.mu.Lock()
	d.locks.now = func() time.Time { return time.Now().Add(lockoutFor + time.Second) }
	d.locks.mu.Unlock()
	if resp := post(mint(false), map[string]string{"Origin": base}); resp.StatusCode != 200 {
		t.Errorf("after the lockout: %d", resp.StatusCode)
	}
}

// startInFleet starts the daemon bound to a test fleet and returns its
// status (for the device id).
func startInFleet(t *testing.T, cfg *config.Config) (*running, *fleet.Fleet, Status) {
	t.Helper()
	f, brokerURL := testFleetBroker(t)
	fleetPath := filepath.Join(t.TempDir(), "fleet.json")
	writeFleetFile(t, f, brokerURL, fleetPath)
	r := start(t, Options{Config: cfg, DataDir: filepath.Join(t.TempDir(), "d"), FleetPath: fleetPath})
	var st Status
	getJSON(t, "https://"+r.ep.HTTPS+"/api/v1/status", &st)
	return r, f, st
}
