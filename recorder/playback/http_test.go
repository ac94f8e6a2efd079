package playback

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/recorder"
	"github.com/outpost-gw/outpost/recorder/index"
)

// lister serves recordings from a slice, as index.List does.
type lister struct {
	recs []index.Recording
	err  error
}

func (l lister) List(camera string, from, to time.Time) ([]index.Recording, error) {
	var out []index.Recording
	for _, r := range l.recs {
		if r.Camera == camera && r.Start.Before(to) && r.End().After(from) {
			out = append(out, r)
		}
	}
	return out, l.err
}

func TestHandler(t *testing.T) {
	root := t.TempDir()
	recs := record(t, root, rec{fps: 25, gop: 25, seg: 2 * time.Second, part: time.Second, audio: recorder.AAC,
		sessions: [][2]time.Duration{{0, 6 * time.Second}}})
	bad := []index.Recording{{Camera: "cam-3", File: "cam-3/../cam-1/" + filepath.Base(recs[0].File), Start: t0, Duration: time.Minute}}
	gone := []index.Recording{{Camera: "cam-4", File: "cam-4/2026-11-22/gone.mp4", Start: t0, Duration: time.Minute}}
	known := func(c string) bool { return c != "cam-9" }
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	srv := httptest.NewServer(Handler(lister{recs: slices.Concat(recs, bad, gone)}, root, known, log))
	defer srv.Close()
	failing := httptest.NewServer(Handler(lister{err: errors.New("disk on fire")}, root, known, log))
	defer failing.Close()

	const ok = "camera=cam-1&start=2026-11-22T10:30:01Z&duration=3"
	for _, tc := range []struct {
		name, method, query string
		srv                 *httptest.Server
		code                int
	}{
		{"success", "GET", ok, srv, 200},
		{"fractional seconds", "GET", "camera=cam-1&start=2026-11-22T11:30:01.5%2B01:00&duration=2.5", srv, 200},
		{"POST", "POST", ok, srv, 405},
		{"no camera", "GET", "start=2026-11-22T10:30:01Z&duration=3", srv, 400},
		{"camera with a slash", "GET", "camera=..%2Fcam-1&start=2026-11-22T10:30:01Z&duration=3", srv, 400},
		{"no start", "GET", "camera=cam-1&duration=3", srv, 400},
		{"bad start", "GET", "camera=cam-1&start=yesterday&duration=3", srv, 400},
		{"start without zone", "GET", "camera=cam-1&start=2026-11-22T10:30:01&duration=3", srv, 400},
		{"no duration", "GET", "camera=cam-1&start=2026-11-22T10:30:01Z", srv, 400},
		{"zero duration", "GET", "camera=cam-1&start=2026-11-22T10:30:01Z&duration=0", srv, 400},
		{"negative duration", "GET", "camera=cam-1&start=2026-11-22T10:30:01Z&duration=-3", srv, 400},
		{"duration over a day", "GET", "camera=cam-1&start=2026-11-22T10:30:01Z&duration=86401", srv, 400},
		{"duration NaN", "GET", "camera=cam-1&start=2026-11-22T10:30:01Z&duration=NaN", srv, 400},
		{"duration with unit", "GET", "camera=cam-1&start=2026-11-22T10:30:01Z&duration=3s", srv, 400},
		{"unknown camera", "GET", "camera=cam-9&start=2026-11-22T10:30:01Z&duration=3", srv, 404},
		{"empty range", "GET", "camera=cam-1&start=2026-11-22T09:00:00Z&duration=60", srv, 404},
		{"range after the recording", "GET", "camera=cam-1&start=2026-11-22T10:30:07Z&duration=60", srv, 404},
		{"file gone", "GET", "camera=cam-4&start=2026-11-22T10:30:01Z&duration=3", srv, 404},
		{"path outside the camera", "GET", "camera=cam-3&start=2026-11-22T10:30:01Z&duration=3", srv, 500},
		{"index error", "GET", ok, failing, 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, tc.srv.URL+"/api/v1/recordings/video?"+tc.query, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != tc.code {
				t.Fatalf("%d %.200q (%v), want %d", resp.StatusCode, body, err, tc.code)
			}
			if tc.code != 200 {
				if resp.Header.Get("Content-Type") != "application/json" || !strings.HasPrefix(string(body), `{"error":`) {
					t.Errorf("error response %s: %s", resp.Header.Get("Content-Type"), body)
				}
				return
			}
			q, _ := url.ParseQuery(tc.query)
			start, _ := time.Parse(time.RFC3339, q.Get("start"))
			origin, err := time.Parse(time.RFC3339Nano, resp.Header.Get("X-Playback-Start"))
			if resp.Header.Get("Content-Type") != "video/mp4" || !slices.Equal(resp.TransferEncoding, []string{"chunked"}) ||
				resp.Header.Get("Content-Disposition") != `inline; filename="cam-1-`+start.UTC().Format("20060102T150405Z")+`.mp4"` ||
				err != nil || origin.After(start) || start.Sub(origin) > time.Second {
				t.Errorf("headers %v, chunked %v", resp.Header, resp.TransferEncoding)
			}
			if _, err := exec.LookPath("ffmpeg"); err != nil && os.Getenv("CI") == "" {
				t.Skip("ffmpeg not installed")
			}
			out := filepath.Join(t.TempDir(), "out.mp4")
			if err := os.WriteFile(out, body, 0o644); err != nil {
				t.Fatal(err)
			}
			if p := probe(t, out); !slices.Equal(p.codecs, []string{"h264", "aac"}) || !strings.HasPrefix(p.firstKey, "K") {
				t.Errorf("body: %+v", p)
			}
		})
	}
}
