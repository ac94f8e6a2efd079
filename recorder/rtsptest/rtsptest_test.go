package rtsptest

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"
)

// fakeStream is enough for the relay, which does not look into NAL units.
var fakeStream = H264Stream{
	SPS:    []byte{0x67, 0x42, 0xc0, 0x1e, 0xd9},
	PPS:    []byte{0x68, 0xce, 0x3c, 0x80},
	Frames: [][][]byte{{{0x65, 0x88, 0x84}}, {{0x41, 0x9a, 0x02}}},
	FPS:    50,
}

// read plays url and counts the RTP packets that arrive, until the server
// drops the connection (the returned channel closes).
func read(t *testing.T, url string) (func() int, <-chan struct{}) {
	t.Helper()
	u, err := base.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	tcp := gortsplib.TransportTCP
	c := &gortsplib.Client{Scheme: u.Scheme, Host: u.Host, Transport: &tcp}
	if err := c.Start2(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	desc, _, err := c.Describe(u)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	done := make(chan struct{})
	c.OnPacketRTPAny(func(*description.Media, format.Format, *rtp.Packet) { n.Add(1) })
	if _, err := c.Play(nil); err != nil {
		t.Fatal(err)
	}
	go func() { c.Wait(); close(done) }()
	return func() int { return int(n.Load()) }, done
}

func TestRelay(t *testing.T) {
	s, err := StartServer(ServerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := Publish(s.URL("/cam"), fakeStream)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if !s.Publishing("cam") || s.Publishing("other") {
		t.Fatal("Publishing")
	}
	count, gone := read(t, s.URL("cam"))
	for end := time.Now().Add(5 * time.Second); count() < 10; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d packets relayed", count())
		}
	}
	s.Kick("cam")
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("reader still connected after Kick")
	}
	if s.Publishing("cam") || p.Sent() < 10 {
		t.Errorf("after Kick: publishing %v, sent %d", s.Publishing("cam"), p.Sent())
	}
}

func TestCameraFaults(t *testing.T) {
	for _, f := range []Fault{Healthy, Garbage, Oversized, Flood} {
		c, err := StartCamera(CameraConfig{Stream: fakeStream, Fault: f})
		if err != nil {
			t.Fatal(err)
		}
		count, _ := read(t, c.URL())
		for end := time.Now().Add(5 * time.Second); count() < 10; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("fault %d: %d packets", f, count())
			}
		}
		c.Close()
	}
}
