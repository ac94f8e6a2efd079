package ingest

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/recorder/rtsptest"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestCameraLogin: a camera that wants a login (basic or digest, as
// gortsplib's server offers both) gets it from the URL or from
// Username/Password; a wrong one keeps the camera offline with the
// reason. No password shows in the logs (debug level), LastError or
// errors.
func TestCameraLogin(t *testing.T) {
	const user, pass = "viewer", "pa:ss@w/rd%1"
	srv, err := rtsptest.StartServer(rtsptest.ServerConfig{User: user, Pass: pass})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	publish(t, srv.URL("cam"), testH264(320, 240, 25, 25))
	inURL := func(p string) string {
		u, _ := url.Parse(srv.URL("cam"))
		u.User = url.UserPassword(user, p)
		return u.String()
	}
	for _, tc := range []struct {
		name      string
		url       string
		user, pw  string
		ok        bool
		forbidden string
	}{
		{"in the URL", inURL(pass), "", "", true, pass},
		{"fields", srv.URL("cam"), user, pass, true, pass},
		{"fields override the URL", inURL("stale-one"), user, pass, true, pass},
		{"wrong", inURL("Wr0ngPa55"), "", "", false, "Wr0ngPa55"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs lockedBuffer
			sink := newCheckSink()
			cam := runCamera(t, tc.url, sink, func(c *Config) {
				c.Username, c.Password = tc.user, tc.pw
				c.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			})
			if tc.ok {
				eventually(t, 10*time.Second, "frames", func() bool { return sink.count(0) >= 10 })
			} else {
				eventually(t, 10*time.Second, "a login error", func() bool { return cam.Stats().LastError != "" })
				time.Sleep(300 * time.Millisecond) // a retry or two
				if sink.count(0) != 0 {
					t.Error("frames with a wrong password")
				}
				if e := cam.Stats().LastError; !strings.Contains(e, "401") {
					t.Errorf("LastError %q does not say 401", e)
				}
			}
			all := logs.String() + cam.Stats().LastError + fmt.Sprint(cam.Stats())
			for _, p := range []string{tc.forbidden, url.QueryEscape(tc.forbidden), url.PathEscape(tc.forbidden), "stale-one"} {
				if strings.Contains(all, p) {
					t.Errorf("password %q shows:\n%s", p, all)
				}
			}
		})
	}
}
