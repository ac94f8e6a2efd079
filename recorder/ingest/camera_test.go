package ingest

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/recorder"
	"github.com/outpost-gw/outpost/recorder/rtsptest"
)

func startServer(t *testing.T, udp bool) *rtsptest.Server {
	t.Helper()
	s, err := rtsptest.StartServer(rtsptest.ServerConfig{UDP: udp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func publish(t *testing.T, url string, st rtsptest.H264Stream) *rtsptest.Publisher {
	t.Helper()
	p, err := rtsptest.Publish(url, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// The in-process publisher through the relay: samples arrive in order, the
// first is an IDR with the SDP's SPS/PPS in front (the stream carries them
// only in the SDP), P frames come through byte for byte, stats look right.
func TestH264InProcess(t *testing.T) {
	for _, tr := range []string{"tcp", "udp"} {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, tr == "udp")
			st := testH264(320, 240, 25, 25)
			publish(t, srv.URL("cam"), st)
			sink := newCheckSink()
			cam := runCamera(t, srv.URL("cam"), sink, func(c *Config) { c.Transport = tr })
			eventually(t, 10*time.Second, "75 frames", func() bool { return sink.count(0) >= 75 })
			sink.verify(t)
			sink.view(func(s *checkSink) {
				if len(s.starts) != 1 || len(s.starts[0]) != 1 || s.starts[0][0].Codec != recorder.H264 {
					t.Fatalf("starts: %+v", s.starts)
				}
				if !bytes.Equal(s.starts[0][0].SPS, st.SPS) || !bytes.Equal(s.starts[0][0].PPS, st.PPS) {
					t.Error("Start got other parameter sets than the SDP's")
				}
				first := s.keep[0]
				if !first.Key || len(first.AU) != 3 || !bytes.Equal(first.AU[0], st.SPS) || !bytes.Equal(first.AU[1], st.PPS) {
					t.Errorf("first sample: key %v, %d NALUs", first.Key, len(first.AU))
				}
				// P frames are single NALUs of the source, in order.
				idx := -1
				for i, f := range st.Frames {
					if bytes.Equal(f[0], first.AU[2]) {
						idx = i
					}
				}
				for k, x := range s.keep[1:30] {
					want := st.Frames[(idx+1+k)%len(st.Frames)][0]
					if got := x.AU[len(x.AU)-1]; !bytes.Equal(got, want) {
						t.Fatalf("sample %d differs from the source frame", k+1)
					}
					if d := x.DTS - s.keep[k].DTS; d < 35*time.Millisecond || d > 45*time.Millisecond {
						t.Errorf("sample %d: DTS step %v, want 40ms", k+1, d)
					}
				}
			})
			stats := cam.Stats()
			if stats.State != Online || stats.FPS < 20 || stats.FPS > 30 || stats.Bitrate < 5e5 ||
				time.Since(stats.LastKeyFrame) > 2*time.Second || stats.Frames < 75 {
				t.Errorf("stats: %+v", stats)
			}
		})
	}
}

// ffmpeg as the camera: libx264 with B-frames (DTS ≠ PTS), H265, and the
// three audio codecs. Frame counts over 3 s match 25 fps.
func TestFFmpegCameras(t *testing.T) {
	rtsptest.NeedFFmpeg(t)
	for _, tc := range []struct {
		name  string
		cfg   rtsptest.FFmpegConfig
		video recorder.Codec
		audio recorder.Codec
	}{
		{"h264-bframes-aac", rtsptest.FFmpegConfig{Audio: "aac"}, recorder.H264, recorder.AAC},
		{"h265-opus", rtsptest.FFmpegConfig{Video: "libx265", Audio: "libopus"}, recorder.H265, recorder.Opus},
		{"h264-g711", rtsptest.FFmpegConfig{Audio: "pcm_mulaw", BFrames: -1}, recorder.H264, recorder.G711},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, false)
			ff, err := rtsptest.StartFFmpeg(context.Background(), srv.URL("cam"), tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ff.Stop() })
			eventually(t, 10*time.Second, "ffmpeg publishing", func() bool { return srv.Publishing("cam") })
			sink := newCheckSink()
			cam := runCamera(t, srv.URL("cam"), sink, nil)
			eventually(t, 10*time.Second, "online", func() bool { return sink.count(0) > 0 })
			time.Sleep(500 * time.Millisecond) // settle
			v0, a0 := sink.count(0), sink.count(1)
			time.Sleep(3 * time.Second)
			v, a := sink.count(0)-v0, sink.count(1)-a0
			t.Logf("3 s: %d video frames, %d audio samples; stats %+v", v, a, cam.Stats())
			// ffmpeg -re sends 25 fps in real time, slower when the
			// machine is loaded (seen: 61 in 3 s); more than 80 would
			// mean duplicated frames.
			if v < 40 || v > 80 {
				t.Errorf("%d video frames in 3 s, want ~75", v)
			}
			if a < 10 {
				t.Errorf("%d audio samples in 3 s", a)
			}
			sink.verify(t)
			sink.view(func(s *checkSink) {
				tr := s.starts[0]
				if len(tr) != 2 || tr[0].Codec != tc.video || tr[1].Codec != tc.audio {
					t.Fatalf("tracks %+v", tr)
				}
				if tr[0].SPS == nil || tr[0].PPS == nil || tc.video == recorder.H265 && tr[0].VPS == nil {
					t.Error("parameter sets missing from Start")
				}
				if tc.audio == recorder.AAC && (len(tr[1].AACConfig) == 0 || tr[1].Channels != 1) {
					t.Errorf("AAC track %+v", tr[1])
				}
				if tc.cfg.BFrames == 0 && s.reorder == 0 {
					t.Error("no video sample with PTS > DTS: B-frames not exercised")
				}
			})
		})
	}
}

// Publisher gone: the camera goes offline and ends the sink session;
// publisher back: online again with a new Start.
func TestReconnect(t *testing.T) {
	srv := startServer(t, false)
	st := testH264(160, 128, 25, 25)
	p := publish(t, srv.URL("cam"), st)
	sink := newCheckSink()
	cam := runCamera(t, srv.URL("cam"), sink, nil)
	eventually(t, 10*time.Second, "frames", func() bool { return sink.count(0) >= 10 })
	p.Close()
	eventually(t, 5*time.Second, "offline", func() bool { return cam.Stats().State != Online })
	eventually(t, 5*time.Second, "End", func() bool {
		n := 0
		sink.view(func(s *checkSink) { n = len(s.ends) })
		return n == 1
	})
	time.Sleep(time.Second) // a few failed attempts (404)
	if s := cam.Stats(); s.Reconnects == 0 || s.LastError == "" || s.State == Online {
		t.Errorf("while gone: %+v", s)
	}
	n := sink.count(0)
	publish(t, srv.URL("cam"), st)
	eventually(t, 10*time.Second, "frames again", func() bool { return sink.count(0) >= n+10 })
	if s := cam.Stats(); s.State != Online {
		t.Errorf("after return: %+v", s)
	}
	sink.view(func(s *checkSink) {
		if len(s.starts) != 2 {
			t.Errorf("%d Starts, want 2", len(s.starts))
		}
	})
	sink.verify(t)
}

func startCamera(t *testing.T, cfg rtsptest.CameraConfig) *rtsptest.Camera {
	t.Helper()
	c, err := rtsptest.StartCamera(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// Hostile cameras: the ingest survives each, counts what it drops, keeps
// the sink contract, and delivers whatever is deliverable.
func TestHostileCameras(t *testing.T) {
	st := testH264(160, 128, 25, 25)
	for _, tc := range []struct {
		name  string
		fault rtsptest.Fault
		check func(t *testing.T, cam *Camera, sink *checkSink)
	}{
		{"bad-sdp", rtsptest.BadSDP, func(t *testing.T, cam *Camera, sink *checkSink) {
			eventually(t, 5*time.Second, "retries", func() bool { return cam.Stats().Reconnects >= 3 })
			s := cam.Stats()
			if s.State == Online || !strings.Contains(s.LastError, "describe") || sink.count(0) != 0 {
				t.Errorf("stats %+v", s)
			}
		}},
		{"garbage", rtsptest.Garbage, func(t *testing.T, cam *Camera, sink *checkSink) {
			eventually(t, 10*time.Second, "frames", func() bool { return sink.count(0) >= 50 })
			if s := cam.Stats(); s.Dropped == 0 {
				t.Errorf("nothing dropped: %+v", s)
			}
		}},
		{"oversized", rtsptest.Oversized, func(t *testing.T, cam *Camera, sink *checkSink) {
			eventually(t, 10*time.Second, "frames", func() bool { return sink.count(0) >= 50 })
			sink.view(func(s *checkSink) {
				for _, x := range s.keep {
					if x.Key && (len(x.AU) != 3 || !bytes.Equal(x.AU[2], st.Frames[0][0])) {
						t.Fatal("jumbo IDR frame not reassembled intact")
					}
				}
			})
		}},
		{"stall", rtsptest.Stall, func(t *testing.T, cam *Camera, sink *checkSink) {
			eventually(t, 10*time.Second, "End after stall", func() bool {
				var ok bool
				sink.view(func(s *checkSink) { ok = len(s.ends) > 0 && errors.Is(s.ends[0], ErrStalled) })
				return ok
			})
			if s := cam.Stats(); s.State == Online {
				t.Errorf("online right after a stall: %+v", s)
			}
			eventually(t, 10*time.Second, "second session", func() bool {
				var n int
				sink.view(func(s *checkSink) { n = len(s.starts) })
				return n >= 2
			})
		}},
		{"flood", rtsptest.Flood, func(t *testing.T, cam *Camera, sink *checkSink) {
			eventually(t, 10*time.Second, "frames", func() bool { return sink.count(0) >= 2000 })
			if s := cam.Stats(); s.FPS < 100 {
				t.Errorf("flood at %.0f fps?", s.FPS)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			camSrv := startCamera(t, rtsptest.CameraConfig{Stream: st, Fault: tc.fault, StallAfter: time.Second, StallFor: 5 * time.Second})
			sink := newCheckSink()
			cam := runCamera(t, camSrv.URL(), sink, func(c *Config) { c.ReadTimeout = 1500 * time.Millisecond })
			tc.check(t, cam, sink)
			sink.verify(t)
		})
	}
}

// Four cameras at once, one of them flooding or sending garbage: the
// three healthy ones keep their frame rate.
func TestFourCamerasOneHostile(t *testing.T) {
	for _, fault := range []rtsptest.Fault{rtsptest.Flood, rtsptest.Garbage} {
		t.Run(map[rtsptest.Fault]string{rtsptest.Flood: "flood", rtsptest.Garbage: "garbage"}[fault], func(t *testing.T) {
			st := testH264(320, 240, 25, 25)
			srv := startServer(t, false)
			var sinks []*checkSink
			var pubs []*rtsptest.Publisher
			for i := range 3 {
				path := "cam" + string(rune('a'+i))
				pubs = append(pubs, publish(t, srv.URL(path), st))
				sinks = append(sinks, newCheckSink())
				runCamera(t, srv.URL(path), sinks[i], nil)
			}
			bad := startCamera(t, rtsptest.CameraConfig{Stream: testH264(320, 240, 25, 25), Fault: fault})
			badSink := newCheckSink()
			runCamera(t, bad.URL(), badSink, nil)
			for _, s := range sinks {
				eventually(t, 10*time.Second, "healthy cameras online", func() bool { return s.count(0) > 0 })
			}
			eventually(t, 10*time.Second, "hostile camera delivering", func() bool { return badSink.count(0) > 0 })
			var before, sent [3]int
			for i, s := range sinks {
				before[i], sent[i] = s.count(0), pubs[i].Sent()
			}
			time.Sleep(3 * time.Second)
			for i, s := range sinks {
				n, want := s.count(0)-before[i], pubs[i].Sent()-sent[i]
				if n < want-3 {
					t.Errorf("camera %d: %d frames in 3 s next to a hostile camera, %d sent", i, n, want)
				}
				if want < 60 {
					t.Logf("publisher %d sent only %d frames in 3 s (CPU starved?)", i, want)
				}
				s.verify(t)
			}
			t.Logf("hostile camera delivered %d frames", badSink.count(0))
			badSink.verify(t)
		})
	}
}

// Credentials never reach logs, errors or Stats.
func TestCredentialsRedacted(t *testing.T) {
	camSrv := startCamera(t, rtsptest.CameraConfig{Stream: testH264(32, 32, 5, 25), Fault: rtsptest.BadSDP})
	var mu sync.Mutex
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	const secret = "s3cr3t/pa:ss"
	sink := newCheckSink()
	url := strings.Replace(camSrv.URL(), "rtsp://", "rtsp://admin:"+strings.ReplaceAll(secret, "/", "%2F")+"@", 1)
	cam := runCamera(t, url, sink, func(c *Config) { c.Log = log })
	eventually(t, 5*time.Second, "failures", func() bool { return cam.Stats().Reconnects >= 2 })
	mu.Lock()
	defer mu.Unlock()
	if s := cam.Stats(); strings.Contains(s.LastError, "s3cr3t") || strings.Contains(logs.String(), "s3cr3t") {
		t.Errorf("password leaked:\n%s\n%s", s.LastError, logs.String())
	}
	if !strings.Contains(logs.String(), "admin:xxxxx@") {
		t.Errorf("logs do not name the camera URL:\n%s", logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{URL: "rtsp://h/x", Sink: newCheckSink()},
		{ID: "a", URL: "rtsp://h/x"},
		{ID: "a", URL: "http://h/x", Sink: newCheckSink()},
		{ID: "a", URL: "rtsp://h/x", Sink: newCheckSink(), Transport: "sctp"},
		{ID: "a", URL: "rtsp://u:p@h:99999999/x", Sink: newCheckSink()},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		} else if strings.Contains(err.Error(), ":p@") {
			t.Errorf("error leaks the password: %v", err)
		}
	}
}
