// Package democam is a synthetic camera on loopback: an RTSP server with a
// pure-Go H264 stream published into it (no encoder, no ffmpeg). The demo
// records it, and tests use it where a real camera is not needed.
package democam

import (
	"fmt"
	"log/slog"

	"github.com/outpost-gw/outpost/recorder/rtsptest"
	"github.com/outpost-gw/outpost/recorder/synth"
)

// Camera is a running synthetic camera.
type Camera struct {
	URL string // rtsp://127.0.0.1:PORT/demo
	srv *rtsptest.Server
	pub *rtsptest.Publisher
}

// Options shape the stream.
type Options struct {
	Width, Height, FPS, GOP int
	Log                     *slog.Logger
	// User and Pass, when User is set, are required of readers, as a
	// camera with a login does; URL carries no credentials.
	User, Pass string
}

// Start starts the server and the publisher.
func Start(o Options) (*Camera, error) {
	if o.FPS == 0 {
		o.FPS = 10
	}
	if o.GOP == 0 {
		o.GOP = 2 * o.FPS
	}
	src, err := synth.New(synth.Options{Width: o.Width, Height: o.Height, FPS: o.FPS, GOP: o.GOP})
	if err != nil {
		return nil, err
	}
	tr := src.Track()
	st := rtsptest.H264Stream{SPS: tr.SPS, PPS: tr.PPS, FPS: o.FPS, InBand: true}
	for range o.GOP {
		st.Frames = append(st.Frames, src.Next().AU)
	}
	srv, err := rtsptest.StartServer(rtsptest.ServerConfig{Log: o.Log, User: o.User, Pass: o.Pass})
	if err != nil {
		return nil, fmt.Errorf("democam: %w", err)
	}
	url := srv.URL("/demo")
	pub, err := rtsptest.Publish(url, st)
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("democam: %w", err)
	}
	return &Camera{URL: url, srv: srv, pub: pub}, nil
}

// Close stops publishing and the server.
func (c *Camera) Close() {
	c.pub.Close()
	c.srv.Close()
}

// Authenticated and Denied count reader requests that passed, or failed,
// the login check (Options.User).
func (c *Camera) Authenticated() uint64 { return c.srv.Authenticated() }
func (c *Camera) Denied() uint64        { return c.srv.Denied() }
