package daemon

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/store"
	"github.com/outpost-gw/outpost/internal/tokens"
	"github.com/outpost-gw/outpost/internal/trustclock"
	"github.com/outpost-gw/outpost/ota/install"
	"github.com/outpost-gw/outpost/ota/manifest"
)

// offerBox is a daemon bound to a test fleet with an OTA root pinned, a
// fake gokrazy target and a release server: keys, good (valid), stale
// (valid by the system clock, expired by the time the store kept: 3 h
// ahead) and tampered documents, and mint for viewer tokens.
type offerBox struct {
	r                              *running
	base                           string
	fake                           *install.Fake
	img                            []byte
	keysDoc, good, stale, tampered []byte
	mint                           func(actions ...string) string
}

func newOfferBox(t *testing.T) *offerBox {
	f, brokerURL := testFleetBroker(t)
	dir := t.TempDir()
	root, rootPrivs, err := manifest.NewRootKeys(3, 2)
	if err != nil {
		t.Fatal(err)
	}
	relPub, relPriv, _ := ed25519.GenerateKey(nil)
	keysDoc, err := manifest.SignKeys(rootPrivs[:2], manifest.KeysDocument{Version: 1, Expires: time.Now().Add(48 * time.Hour), Threshold: 1, Keys: []ed25519.PublicKey{relPub}})
	if err != nil {
		t.Fatal(err)
	}
	img := bytes.Repeat([]byte("squashfs root v2 "), 20<<10)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, q *http.Request) {
		http.ServeContent(w, q, "root.img", time.Time{}, bytes.NewReader(img))
	}))
	t.Cleanup(srv.Close)
	sign := func(v uint64, expires time.Time) []byte {
		b, err := manifest.SignManifest([]ed25519.PrivateKey{relPriv}, manifest.Manifest{Version: v, Target: hwTarget(), Expires: expires,
			Artifacts: []manifest.Artifact{{Name: "root", URL: srv.URL + "/root.img", Length: int64(len(img)), SHA256: sha256.Sum256(img)}}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := sign(2, time.Now().Add(24*time.Hour))
	// Valid by the system clock, but expired by the time this box has
	// already seen (kept in the store, 3 h ahead of its clock now).
	stale := sign(2, time.Now().Add(time.Hour))
	tampered := bytes.Replace(good, []byte(`"version":2`), []byte(`"version":3`), 1)

	fleetPath := filepath.Join(dir, "fleet.json")
	writeFleetFile(t, f, brokerURL, fleetPath)
	ff, err := config.LoadFleet(fleetPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range root.Keys {
		ff.OTARoot.Keys = append(ff.OTARoot.Keys, base64.StdEncoding.EncodeToString(k))
	}
	ff.OTARoot.Threshold = root.Threshold
	b, _ := json.Marshal(ff)
	os.WriteFile(fleetPath, b, 0o600)

	data := filepath.Join(dir, "d")
	st, err := store.Open(data, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(3 * time.Hour)
	if err := (&trustclock.Clock{Store: st, System: func() time.Time { return later }, Vouched: func() bool { return true }}).Persist(); err != nil {
		t.Fatal(err)
	}
	st.Close()

	fake := &install.Fake{Path: filepath.Join(dir, "slot")}
	r := start(t, Options{Config: testConfig(), FleetPath: fleetPath, DataDir: data, OTATarget: fake, OTAClient: srv.Client()})
	var s Status
	base := "https://" + r.ep.HTTPS
	getJSON(t, base+"/api/v1/status", &s)
	mint := func(actions ...string) string {
		tok, err := tokens.Mint(f.SigningKey(), tokens.Claims{User: "installer", Device: s.Cloud.DeviceID, Cameras: []string{"*"}, Actions: actions,
			NotBefore: time.Now().Add(-time.Minute).Unix(), Expires: time.Now().Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	t.Cleanup(func() { r.stop(t) })
	return &offerBox{r: r, base: base, fake: fake, img: img, keysDoc: keysDoc, good: good, stale: stale, tampered: tampered, mint: mint}
}

// TestLANUpdateOffer: POST /api/v1/update takes an offer as files from the
// LAN page, only with an admin token and from the same origin, bounded;
// it is verified before anything is fetched (against the trusted clock: this
// box once knew a later time than its clock shows now, so a manifest that
// expired in between is refused), then installed by the same installer as
// the cloud command; every answer is audited.
func TestLANUpdateOffer(t *testing.T) {
	b := newOfferBox(t)
	r, base, fake, img, keysDoc, good, stale, tampered, mint := b.r, b.base, b.fake, b.img, b.keysDoc, b.good, b.stale, b.tampered, b.mint
	var s Status
	admin := mint(tokens.ActionAdmin)
	form := func(parts map[string][]byte) (string, []byte) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.SetBoundary("outpost-test-boundary")
		for _, name := range []string{"keys", "manifest", "extra"} {
			if p, ok := parts[name]; ok {
				fw, _ := mw.CreateFormFile(name, name+".json")
				fw.Write(p)
			}
		}
		mw.Close()
		return mw.FormDataContentType(), buf.Bytes()
	}
	post := func(tok, ctype string, body []byte, hdr ...string) (int, string) {
		req, _ := http.NewRequest("POST", base+"/api/v1/update", bytes.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := insecureClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out bytes.Buffer
		out.ReadFrom(resp.Body)
		return resp.StatusCode, out.String()
	}
	ct, goodForm := form(map[string][]byte{"keys": keysDoc, "manifest": good})
	mp, _ := msgpack.Marshal(updateArgs{Keys: keysDoc, Manifest: stale})
	for _, tc := range []struct {
		name  string
		tok   string
		ctype string
		body  []byte
		hdr   []string
		code  int
		want  string
	}{
		{"no token", "", ct, goodForm, nil, 401, "token"},
		{"live token", mint(tokens.ActionLive), ct, goodForm, nil, 403, "action"},
		{"cross-site", admin, ct, goodForm, []string{"Origin", "https://evil.example"}, 403, "cross-site"},
		{"too large", admin, "application/msgpack", bytes.Repeat([]byte{0xc0}, maxOfferBody+1), nil, 400, "too large"},
		{"part too large", admin, ct, func() []byte {
			_, b := form(map[string][]byte{"keys": bytes.Repeat([]byte(" "), manifest.MaxSize+1), "manifest": good})
			return b
		}(), nil, 400, "larger"},
		{"unexpected part", admin, ct, func() []byte {
			_, b := form(map[string][]byte{"keys": keysDoc, "manifest": good, "extra": {1}})
			return b
		}(), nil, 400, "unexpected part"},
		{"manifest missing", admin, ct, func() []byte { _, b := form(map[string][]byte{"keys": keysDoc}); return b }(), nil, 400, "needed"},
		{"wrong content type", admin, "application/json", []byte("{}"), nil, 400, "content type"},
		{"tampered", admin, ct, func() []byte { _, b := form(map[string][]byte{"keys": keysDoc, "manifest": tampered}); return b }(), nil, 422, "signature"},
		{"expired by the trusted clock (msgpack)", admin, "application/msgpack", mp, nil, 422, "expired"},
	} {
		code, body := post(tc.tok, tc.ctype, tc.body, tc.hdr...)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s; want %d %q", tc.name, code, body, tc.code, tc.want)
		}
	}
	if calls := fakeCalls(fake); len(calls) != 0 {
		t.Fatalf("refused offers reached the target: %v", calls)
	}
	code, body := post(admin, ct, goodForm, "Origin", base)
	if code != 202 || !strings.Contains(body, `"version":2`) {
		t.Fatalf("good offer: %d %s", code, body)
	}
	waitCalls(t, fake, "reboot")
	if got, _ := os.ReadFile(fake.Path); !bytes.Equal(got, img) {
		t.Fatalf("the slot holds %d bytes, not the image", len(got))
	}
	getJSON(t, base+"/api/v1/status", &s)
	if s.Update == nil || s.Update.Phase != "trial" || s.Update.Version != 2 {
		t.Errorf("status update %+v", s.Update)
	}
	// A second offer while that one waits for its trial boot: busy.
	if code, body := post(admin, ct, goodForm); code != 409 {
		t.Errorf("offer during an install: %d %s", code, body)
	}
	es, err := r.d.auditLog.Entries(0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		if e.Action == "update offer (LAN)" {
			got = append(got, e.Actor+": "+e.Result)
		}
	}
	want := []string{"installer: refused: unexpected part \"extra\"", "installer: refused: manifest: ota: signatures missing", "installer: refused: ota: document expired", "installer: accepted v2", "installer: refused: install: an update is already in progress"}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || strings.HasPrefix(g, w)
		}
		if !found {
			t.Errorf("no audit entry %q in %q", w, got)
		}
	}
}

// FuzzReadOffer: any body, any content type: an error or two bounded
// documents, never a panic.
func FuzzReadOffer(f *testing.F) {
	f.Add("multipart/form-data; boundary=b", []byte("--b\r\nContent-Disposition: form-data; name=\"keys\"; filename=\"k\"\r\n\r\n{}\r\n--b\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\r\n{}\r\n--b--\r\n"))
	f.Add("application/msgpack", []byte("\x82\xa4keys\xc4\x01x\xa8manifest\xc4\x01y"))
	f.Fuzz(func(t *testing.T, ctype string, body []byte) {
		req := httptest.NewRequest("POST", "/api/v1/update", bytes.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		a, err := readOffer(httptest.NewRecorder(), req)
		if err == nil && (len(a.Keys) == 0 || len(a.Manifest) == 0 || len(a.Keys)+len(a.Manifest) > maxOfferBody) {
			t.Fatalf("accepted %d+%d bytes", len(a.Keys), len(a.Manifest))
		}
	})
}
