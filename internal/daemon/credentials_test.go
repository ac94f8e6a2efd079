package daemon

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/store"
	"github.com/outpost-gw/outpost/recorder/democam"
)

// syncBuffer is a log sink for several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestCameraLoginsStayInTheStore: a camera that wants a login gets it,
// whether the config gives it in the URL or in the username/password
// fields; a wrong one fails visibly. Neither password shows in the logs
// (debug level), the status and camera listings, the running config, or
// anywhere in the store (audit, telemetry and events in the outbox) but
// the camera-login bucket; a later start on a config without the login
// still reaches the camera.
func TestCameraLoginsStayInTheStore(t *testing.T) {
	const user, pass, wrong = "admin", "S3cr3t-Pw/:@x", "N0tTh3-Pw"
	cam, err := democam.Start(democam.Options{FPS: 10, GOP: 10, User: user, Pass: pass})
	if err != nil {
		t.Fatal(err)
	}
	defer cam.Close()
	withLogin := func(u, p string) string {
		pu, _ := url.Parse(cam.URL)
		pu.User = url.UserPassword(u, p)
		return pu.String()
	}
	f, brokerURL := testFleetBroker(t)
	fleetPath := filepath.Join(t.TempDir(), "fleet.json")
	writeFleetFile(t, f, brokerURL, fleetPath)
	cfg := testConfig()
	cfg.Cloud.TelemetryInterval = config.Duration(time.Second)
	cfg.Recorder.Cameras = []config.Camera{
		{ID: "inurl", URL: withLogin(user, pass)},
		{ID: "fields", URL: cam.URL, Username: user, Password: pass},
		{ID: "wrong", URL: withLogin(user, wrong)},
	}
	data := filepath.Join(t.TempDir(), "d")
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	secrets := []string{pass, url.QueryEscape(pass), url.PathEscape(pass), wrong}
	leaks := func(where, s string) {
		t.Helper()
		for _, p := range secrets {
			if strings.Contains(s, p) {
				t.Errorf("%s contains a camera password (%q):\n%s", where, p, s)
			}
		}
	}
	online := func(r *running, ids ...string) []CameraHealth {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			cams := r.d.rec.cameras()
			n := 0
			for _, c := range cams {
				for _, id := range ids {
					if c.ID == id && c.State == "online" {
						n++
					}
				}
			}
			if n == len(ids) {
				return cams
			}
			if time.Now().After(deadline) {
				t.Fatalf("cameras %v not all online: %+v\nlogs:\n%s", ids, cams, logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	r := start(t, Options{Config: cfg, DataDir: data, FleetPath: fleetPath, Log: log})
	cams := online(r, "inurl", "fields")
	time.Sleep(2500 * time.Millisecond) // telemetry rounds, the wrong login's retries
	for _, c := range r.d.rec.cameras() {
		if c.ID == "wrong" && (c.State == "online" || c.LastError == "") {
			t.Errorf("camera with a wrong password: %+v", c)
		}
		if c.ID == "wrong" {
			t.Logf("wrong login: %s", c.LastError)
		}
	}
	camsJSON, _ := json.Marshal(r.d.rec.cameras())
	leaks("camera listing", string(camsJSON))
	var st Status
	getJSON(t, "https://"+r.ep.HTTPS+"/api/v1/status", &st)
	stJSON, _ := json.Marshal(st)
	leaks("status", string(stJSON))
	cfgJSON, _ := json.Marshal(r.d.cfg)
	leaks("running config", string(cfgJSON))
	for _, cc := range r.d.cfg.Recorder.Cameras {
		if strings.Contains(cc.URL, "@") || cc.Username != "" || cc.Password != "" {
			t.Errorf("running config keeps a login: %+v", cc)
		}
	}
	if cam.Denied() == 0 || cam.Authenticated() == 0 {
		t.Errorf("camera saw %d authenticated and %d denied requests", cam.Authenticated(), cam.Denied())
	}
	_ = cams
	r.stop(t)

	// Start again without any login in the config: the store supplies it.
	cfg2 := testConfig()
	cfg2.Recorder.Cameras = []config.Camera{{ID: "inurl", URL: cam.URL}}
	r = start(t, Options{Config: cfg2, DataDir: data, Log: log})
	online(r, "inurl")
	r.stop(t)

	leaks("logs", logs.String())
	if !strings.Contains(logs.String(), "admin:xxxxx@") {
		t.Errorf("logs do not show the redacted camera URL")
	}
	st2, err := store.Open(data, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	var stored []string
	st2.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return walkBucket(b, string(name), func(path string, v []byte) {
				if string(name) == cameraLogins.Name() {
					stored = append(stored, path)
					return
				}
				leaks("store "+path, string(v))
			})
		})
	})
	// Cameras "fields" and "wrong" are gone from the second config.
	if len(stored) != 1 || stored[0] != "camera_logins/inurl" {
		t.Errorf("camera logins in the store: %v, want camera_logins/inurl", stored)
	}
	st2.View(func(tx *bolt.Tx) error {
		l, err := cameraLogins.Get(tx, "inurl")
		if err != nil || l != (cameraLogin{user, pass}) {
			t.Errorf("stored login %+v, %v", l, err)
		}
		return nil
	})
}

func walkBucket(b *bolt.Bucket, path string, fn func(path string, v []byte)) error {
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			return walkBucket(b.Bucket(k), path+"/"+string(k), fn)
		}
		fn(path+"/"+string(k), v)
		return nil
	})
}

// TestPushedConfigSavedWithoutLogins: a config pushed by the fleet is
// written to disk without camera logins, which go to the store; the file
// loads back as the same config less the logins.
func TestPushedConfigSavedWithoutLogins(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d := &daemon{o: Options{DataDir: dir}, st: st, log: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		name, doc string
		want      map[string]cameraLogin
	}{
		{"none", `{"config_version":1,"recorder":{"cameras":[{"id":"a","url":"rtsp://10.0.0.5/s"}]}}`, nil},
		{"url and fields", `{"config_version":1,"recorder":{"segment_duration":"30s","cameras":[
			{"id":"a","url":"rtsp://u1:p%40ss1@10.0.0.5/s","live":"on-prem"},
			{"id":"b","url":"rtsp://10.0.0.6:8554/x","username":"u2","password":"pass-two"}]}}`,
			map[string]cameraLogin{"a": {"u1", "p@ss1"}, "b": {"u2", "pass-two"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := d.savePushedConfig(1, []byte(tc.doc)); err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(filepath.Join(dir, PushedConfigFile))
			for _, l := range tc.want {
				if bytes.Contains(b, []byte(l.Password)) || bytes.Contains(b, []byte(url.PathEscape(l.Password))) {
					t.Errorf("pushed config file keeps a password:\n%s", b)
				}
			}
			if tc.want == nil && string(b) != tc.doc {
				t.Errorf("a config without logins was rewritten:\n%s", b)
			}
			got, err := pushedConfig(dir)
			if err != nil {
				t.Fatal(err)
			}
			orig, _ := config.Parse([]byte(tc.doc))
			for i := range orig.Recorder.Cameras {
				orig.Recorder.Cameras[i], _, _ = splitLogin(orig.Recorder.Cameras[i])
			}
			a, _ := json.Marshal(orig)
			g, _ := json.Marshal(got)
			if !bytes.Equal(a, g) {
				t.Errorf("saved config differs:\n got %s\nwant %s", g, a)
			}
			st.View(func(tx *bolt.Tx) error {
				for id, want := range tc.want {
					if l, err := cameraLogins.Get(tx, id); err != nil || l != want {
						t.Errorf("login %s: %+v, %v; want %+v", id, l, err, want)
					}
				}
				return nil
			})
		})
	}
}
