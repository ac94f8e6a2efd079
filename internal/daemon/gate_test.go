package daemon

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/outpost-gw/outpost/cloudlink/outbox"
	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/store"

	"github.com/outpost-gw/outpost/internal/access"
	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/tokens"
)

// TestGate: the edges of the viewer gate through the real daemon.
//   - Only guesses (tokens that do not parse or verify) count towards the
//     lockout; an expired genuine token or no token, as a page polling
//     after its session ended sends, does not lock its viewer out.
//   - Requests without a token are audited, once a minute per source.
//   - A single-use token refused for another camera is not spent.
//   - The recorded modes hold on the real video and clip handlers.
//   - The status is open to loopback and the site LAN; from elsewhere it
//     needs an admin token.
func TestGate(t *testing.T) {
	cfg := testConfig()
	cfg.LAN.SiteSubnets = []string{"192.168.1.0/24"}
	cfg.Recorder.Cameras = []config.Camera{
		{ID: "door", URL: "rtsp://127.0.0.1:1/a"},
		{ID: "vault", URL: "rtsp://127.0.0.1:1/b", Recorded: access.RecordedOnPrem},
		{ID: "sealed", URL: "rtsp://127.0.0.1:1/c", Recorded: access.RecordedRecordingOnly},
	}
	r, f, st := startInFleet(t, cfg)
	defer r.stop(t)
	base := "https://" + r.ep.HTTPS
	type claims = tokens.Claims
	mint := func(c claims) string {
		c.User, c.Device = "ana", st.Cloud.DeviceID
		if c.Cameras == nil {
			c.Cameras = []string{"*"}
		}
		if c.Actions == nil {
			c.Actions = []string{tokens.ActionLive, tokens.ActionPlayback, tokens.ActionExport}
		}
		if c.Expires == 0 {
			c.NotBefore, c.Expires = time.Now().Add(-time.Minute).Unix(), time.Now().Add(time.Hour).Unix()
		}
		tok, err := tokens.Mint(f.SigningKey(), c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	get := func(tok, path string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		res, err := insecureClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	good := mint(claims{})
	expired := mint(claims{NotBefore: time.Now().Add(-3 * time.Hour).Unix(), Expires: time.Now().Add(-2 * time.Hour).Unix()})
	span := "&start=" + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339) + "&end=" + time.Now().UTC().Format(time.RFC3339)

	// An ended session polling: 2×maxFailures refusals, no lockout.
	for range 2 * maxFailures {
		if c := get(expired, "/api/v1/cameras"); c != 401 {
			t.Fatalf("expired token: %d", c)
		}
		if c := get("", "/api/v1/live/door/index.m3u8"); c != 401 {
			t.Fatalf("no token: %d", c)
		}
	}
	if c := get(good, "/api/v1/cameras"); c != 200 {
		t.Errorf("after expired and missing tokens, a good one: %d (locked out?)", c)
	}

	// A single-use token for door's playback: refused for sealed and for
	// live, still good for door's recordings, once.
	once := mint(claims{Cameras: []string{"door"}, Actions: []string{tokens.ActionPlayback}, SingleUse: true})
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/api/v1/recordings?camera=sealed" + span, 403},
		{"/api/v1/live/door/index.m3u8", 403},
		{"/api/v1/recordings?camera=door" + span, 200},
		{"/api/v1/recordings?camera=door" + span, 401}, // spent
	} {
		if c := get(once, tc.path); c != tc.want {
			t.Errorf("single-use token, %s: %d, want %d", tc.path, c, tc.want)
		}
	}

	// The recorded modes on the real video and clip handlers, from
	// loopback (not the site LAN).
	at := "&start=" + time.Now().Add(-time.Minute).UTC().Format(time.RFC3339) + "&duration=10"
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/api/v1/recordings/video?camera=door" + at, 404}, // allowed; nothing recorded
		{"/api/v1/recordings/clip?camera=door" + at, 404},
		{"/api/v1/recordings/video?camera=vault" + at, 403},
		{"/api/v1/recordings/clip?camera=vault" + at, 403},
		{"/api/v1/recordings/video?camera=sealed" + at, 403},
		{"/api/v1/recordings/clip?camera=sealed" + at, 403},
	} {
		if c := get(good, tc.path); c != tc.want {
			t.Errorf("%s: %d, want %d", tc.path, c, tc.want)
		}
	}

	// Guesses do lock out.
	for i := range maxFailures {
		if c := get("opt1.garbage.garbage", "/api/v1/cameras"); c != 401 {
			t.Fatalf("forged %d: %d", i, c)
		}
	}
	if c := get(good, "/api/v1/cameras"); c != http.StatusTooManyRequests {
		t.Errorf("after %d forged tokens: %d, want 429", maxFailures, c)
	}

	es, err := r.d.auditLog.Entries(0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	anon := 0
	for _, e := range es {
		if e.Actor == "anonymous" {
			anon++
		}
	}
	if anon != 1 {
		t.Errorf("%d audit entries for %d requests without a token, want 1 (once a minute per source)", anon, 2*maxFailures)
	}

	// The installer's status: loopback and the site LAN without a token;
	// elsewhere an admin token.
	admin := mint(claims{Actions: []string{tokens.ActionAdmin}})
	d := r.d
	status := d.installerView(d.handleStatus)
	for _, tc := range []struct {
		name, remote, tok string
		want              int
	}{
		{"loopback", "127.0.0.1:4000", "", 200},
		{"loopback v6", "[::1]:4000", "", 200},
		{"site LAN", "192.168.1.20:4000", "", 200},
		{"off-site, no token", "203.0.113.9:4000", "", 401},
		{"off-site, viewer token", "203.0.113.9:4000", good, 403},
		{"off-site, admin token", "203.0.113.9:4000", admin, 200},
	} {
		req := httptest.NewRequest("GET", "/api/v1/status", nil)
		req.RemoteAddr = tc.remote
		if tc.tok != "" {
			req.Header.Set("Authorization", "Bearer "+tc.tok)
		}
		rec := httptest.NewRecorder()
		status(rec, req)
		if rec.Code != tc.want || (tc.want == 200 && !strings.Contains(rec.Body.String(), `"cameras"`)) {
			t.Errorf("status, %s: %d %s, want %d", tc.name, rec.Code, rec.Body.String(), tc.want)
		}
	}
}

// TestRateLimit: a source gets rateBurst requests at once, then
// ratePerSecond; another source has its own bucket; refusals are audited
// once a minute.
func TestRateLimit(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := &rateLimits{now: func() time.Time { return now }}
	a, b := netip.MustParseAddr("192.168.1.5"), netip.MustParseAddr("192.168.1.6")
	n := 0
	for l.allow(a) {
		n++
		if n > 10*rateBurst {
			t.Fatal("no limit")
		}
	}
	if n != rateBurst {
		t.Errorf("burst %d, want %d", n, rateBurst)
	}
	if !l.allow(b) {
		t.Error("another source limited")
	}
	if !l.firstRefusal(a) || l.firstRefusal(a) {
		t.Error("refusals not audited once a minute")
	}
	now = now.Add(time.Second)
	n = 0
	for l.allow(a) {
		n++
	}
	if n != ratePerSecond {
		t.Errorf("after 1 s: %d, want %d", n, ratePerSecond)
	}
}

// TestAuditChainBreakRaisesEvent: an audit entry changed in the store
// between two runs is detected at start-up: logged, audited, and an
// "audit_chain_broken" event (critical) is queued for the fleet.
func TestAuditChainBreakRaisesEvent(t *testing.T) {
	f, brokerURL := testFleetBroker(t)
	fleetPath := filepath.Join(t.TempDir(), "fleet.json")
	writeFleetFile(t, f, brokerURL, fleetPath)
	data := filepath.Join(t.TempDir(), "d")
	r := start(t, Options{Config: testConfig(), DataDir: data, FleetPath: fleetPath})
	r.stop(t)

	st, err := store.Open(data, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	err = st.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("audit"))
		if b == nil {
			return errors.New("no audit bucket")
		}
		k, v := b.Cursor().First()
		return b.Put(k, bytes.Replace(v, []byte(`"ok"`), []byte(`"no"`), 1))
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	r = start(t, Options{Config: testConfig(), DataDir: data, FleetPath: fleetPath})
	defer r.stop(t)
	es, err := r.d.cloud.ob.Next(outbox.StreamEvent, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range es {
		env, err := wire.Decode(e.Payload, wire.DefaultLimits())
		if err != nil {
			continue
		}
		var ev wire.Event
		if wire.DecodeBody(env, &ev, wire.DefaultLimits()) == nil && ev.Kind == "audit_chain_broken" && ev.Severity == wire.SeverityCritical {
			found = true
		}
	}
	if !found {
		t.Errorf("no audit_chain_broken event among %d queued events", len(es))
	}
	entries, _ := r.d.auditLog.Entries(0, 1000)
	audited := false
	for _, e := range entries {
		audited = audited || e.Action == "audit verify"
	}
	if !audited {
		t.Error("the break is not in the audit log")
	}
}
