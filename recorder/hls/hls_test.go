package hls

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/testutil/tools"
	"github.com/outpost-gw/outpost/recorder"
	"github.com/outpost-gw/outpost/recorder/synth"
)

// feed writes a synthetic camera (H264 with reordered frames, AAC) into
// st: ahead seconds at once, then in real time until ctx ends.
func feed(ctx context.Context, t *testing.T, st *Stream, ahead time.Duration) {
	t.Helper()
	v, err := synth.New(synth.Options{FPS: 25, GOP: 25, Reorder: true})
	if err != nil {
		t.Fatal(err)
	}
	a, err := synth.NewAudio(synth.AudioOptions{Codec: recorder.AAC, Track: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start([]recorder.Track{v.Track(), a.Track()}); err != nil {
		t.Fatal(err)
	}
	st.wanted.Store(time.Now().UnixNano()) // as if a viewer had asked
	var as recorder.Sample
	next := func() time.Duration {
		s := v.Next()
		for as.AU == nil || as.DTS <= s.DTS {
			if as.AU != nil {
				st.Write(as)
			}
			as = a.Next()
		}
		st.Write(s)
		return s.DTS
	}
	for next() < ahead {
	}
	go func() {
		tk := time.NewTicker(40 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				next()
			}
		}
	}()
}

func get(t *testing.T, url string) (int, http.Header, []byte) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, b
}

func serve(t *testing.T, s *Server) *httptest.Server {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cam, file, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		s.ServeFile(w, r, cam, file)
	}))
	t.Cleanup(hs.Close)
	return hs
}

// TestPlaylistAndDecode: the playlists list fMP4 segments, and ffmpeg
// plays the live stream (video with reordered frames, and audio) without
// an error.
func TestPlaylistAndDecode(t *testing.T) {
	s := New(Config{})
	t.Cleanup(s.Close)
	hs := serve(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	feed(ctx, t, s.Stream("cam"), 6*time.Second)

	code, h, body := get(t, hs.URL+"/cam/index.m3u8")
	if code != 200 || !strings.Contains(h.Get("Content-Type"), "mpegurl") || !bytes.Contains(body, []byte("#EXT-X-STREAM-INF")) {
		t.Fatalf("index.m3u8: %d %q\n%s", code, h.Get("Content-Type"), body)
	}
	var media string
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasSuffix(strings.SplitN(l, "?", 2)[0], ".m3u8") && !strings.HasPrefix(l, "#") {
			media = strings.SplitN(l, "?", 2)[0]
			break
		}
	}
	code, _, body = get(t, hs.URL+"/cam/"+media)
	if code != 200 || !bytes.Contains(body, []byte("#EXT-X-MAP")) || !bytes.Contains(body, []byte(".mp4")) {
		t.Fatalf("%s: %d\n%s", media, code, body)
	}

	if code, _, body := get(t, hs.URL+"/cam/nope_seg9.mp4"); code != 404 {
		t.Fatalf("unknown segment of a running stream: %d %q", code, body)
	}

	tools.Need(t, "ffprobe")
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
		hs.URL+"/cam/index.m3u8").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "h264") || !strings.Contains(string(out), "aac") {
		t.Fatalf("ffprobe: %v\n%s", err, out)
	}
	cmd := exec.Command("ffmpeg", "-v", "error", "-xerror", "-i", hs.URL+"/cam/index.m3u8", "-t", "3", "-f", "null", "-")
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("ffmpeg decode of the live HLS stream: %v\n%s", err, out)
	}
}

// TestRequests: names that are not the stream's, a camera never seen, and
// a camera with no video yet get clear answers at once, never a hang or
// an empty 200.
func TestRequests(t *testing.T) {
	s := New(Config{PlaylistWait: 300 * time.Millisecond, MaxWaiters: 2})
	t.Cleanup(s.Close)
	hs := serve(t, s)
	st := s.Stream("quiet")
	v, _ := synth.New(synth.Options{})
	if err := st.Start([]recorder.Track{v.Track()}); err != nil {
		t.Fatal(err)
	}
	// Nobody asked yet: no muxer, 503 at once; the request starts one.
	if code, _, _ := get(t, hs.URL+"/quiet/index.m3u8"); code != 503 {
		t.Fatalf("before muxing: %d", code)
	}
	st.Write(v.Next())
	if st.muxer() == nil {
		t.Fatal("a request did not start the muxer")
	}
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/quiet/../../etc/passwd", 404},
		{"/quiet/index.m3u8", 503}, // muxing, no segment yet: waits PlaylistWait
		{"/quiet/index.m3u8", 503},
		{"/quiet/index.m3u8", 503}, // beyond MaxWaiters: at once
		{"/quiet/nope_seg9.mp4", 404},
		{"/quiet/a%2Fb.mp4", 404},
		{"/never/index.m3u8", 404},
	} {
		start := time.Now()
		code, h, _ := get(t, hs.URL+tc.path)
		if code != tc.want {
			t.Errorf("%s: %d, want %d", tc.path, code, tc.want)
		}
		if code == 503 && h.Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After", tc.path)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%s took %v", tc.path, d)
		}
	}
}

// TestReconnectKeepsMuxer: the camera reconnecting with the same tracks
// keeps the playlist (players carry on); new tracks start a new stream.
func TestReconnectKeepsMuxer(t *testing.T) {
	s := New(Config{})
	t.Cleanup(s.Close)
	st := s.Stream("cam")
	v, _ := synth.New(synth.Options{})
	tr := []recorder.Track{v.Track()}
	if err := st.Start(tr); err != nil {
		t.Fatal(err)
	}
	st.wanted.Store(time.Now().UnixNano())
	st.Write(v.Next())
	m := st.muxer()
	if m == nil {
		t.Fatal("no muxer while wanted")
	}
	st.End(nil)
	if err := st.Start(tr); err != nil || st.muxer() != m {
		t.Fatalf("same tracks: new muxer (%v)", err)
	}
	w, _ := synth.New(synth.Options{Width: 640, Height: 480})
	if err := st.Start([]recorder.Track{w.Track()}); err != nil || st.muxer() != nil {
		t.Fatalf("new tracks kept the old muxer (%v)", err)
	}
	st.Write(w.Next())
	if st.muxer() == nil || st.muxer() == m {
		t.Fatal("no new muxer for the new tracks")
	}
	st.wanted.Store(time.Now().Add(-time.Hour).UnixNano())
	st.Write(w.Next())
	if st.muxer() != nil {
		t.Fatal("an idle stream kept its muxer")
	}
	if err := st.Start([]recorder.Track{{Codec: recorder.G711, ClockRate: 8000}}); err == nil {
		t.Fatal("a G.711-only camera: no error")
	}
}
