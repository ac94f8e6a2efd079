package live

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"

	"github.com/outpost-gw/outpost/recorder"
	"github.com/outpost-gw/outpost/recorder/synth"
)

func startServer(t *testing.T) *Server {
	t.Helper()
	s, err := NewServer(Config{Addr: "127.0.0.1:0", Authorize: func(_ context.Context, r AuthRequest) error {
		if r.Token != "good" {
			return errors.New("no")
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func play(t *testing.T, s *Server, onPacket func()) *gortsplib.Client {
	t.Helper()
	u, _ := base.ParseURL("rtsp://" + s.Addr().String() + "/cam?token=good")
	tcp := gortsplib.TransportTCP
	c := &gortsplib.Client{Scheme: u.Scheme, Host: u.Host, Transport: &tcp}
	if err := c.Start2(); err != nil {
		t.Fatal(err)
	}
	desc, _, err := c.Describe(u)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		t.Fatal(err)
	}
	c.OnPacketRTPAny(func(*description.Media, format.Format, *rtp.Packet) { onPacket() })
	if _, err := c.Play(nil); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSlowViewer: a viewer that stops reading fills its own write queue
// and is disconnected; the camera's writes never wait for it, and a
// viewer that reads keeps getting packets.
func TestSlowViewer(t *testing.T) {
	s := startServer(t)
	st := s.Stream("cam")
	src, _ := synth.New(synth.Options{Width: 640, Height: 480, FPS: 25, GOP: 1}) // every frame a 460 kB IDR
	if err := st.Start([]recorder.Track{src.Track()}); err != nil {
		t.Fatal(err)
	}
	stuck := make(chan struct{})
	slow := play(t, s, func() { <-stuck })
	defer slow.Close()
	defer close(stuck) // before slow.Close, which waits for its reader
	got := make(chan struct{}, 1<<16)
	fast := play(t, s, func() {
		select {
		case got <- struct{}{}:
		default:
		}
	})
	defer fast.Close()
	for i := 0; i < 200 && (s.Overflows() == 0 || s.Readers("cam") > 1); i++ {
		if err := st.Write(src.Next()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // lets the fast viewer keep up
	}
	if s.Overflows() == 0 {
		t.Fatal("the stuck viewer's queue never overflowed")
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Readers("cam") != 1 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := s.Readers("cam"); n != 1 {
		t.Errorf("%d readers after the stuck one overflowed, want 1 (the fast one)", n)
	}
	if len(got) == 0 {
		t.Error("the reading viewer got nothing")
	}
}
