// Package ingest pulls a camera's RTSP stream and hands its access units to
// a recorder.Sink: one gortsplib client per camera, reconnecting with
// backoff forever.
//
// Per session: DESCRIBE/SETUP/PLAY; keep one H264 or H265 video track and
// one AAC, Opus or G711 audio track (others are ignored with a log line);
// decode the PTS of every packet (PacketPTS2) and the video DTS with
// mediacommon's extractor; drop everything until the first key frame; put
// the parameter sets in front of every key frame; stamp Received with the
// local clock (the camera's RTCP wall clock is not trusted). A session ends
// on disconnect, on error, or when samples stop for ReadTimeout; the sink
// then gets End and the camera reconnects.
//
// The sink is started at the first key frame of a session, not at PLAY, so
// that its Tracks carry parameter sets even when the SDP has none (they
// are then taken from the key frame). When a key frame brings different,
// valid parameter sets in band (resolution or profile change), the sink
// gets End(ErrParamsChanged) and a new Start with the new Tracks; sample
// timestamps carry on across that restart. A sink Write error also ends
// the sink session, which restarts at the next key frame.
//
// Hostile input is counted in Stats.Dropped and logged at most every 10 s
// per kind: undecodable packets, RTP timestamps that jump further than the
// wall clock allows (they would derail gortsplib's timestamp unwrapping),
// units whose DTS does not increase, and panics in a decoder.
package ingest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/bluenviron/gortsplib/v4/pkg/readbuffer"
	"github.com/outpost-gw/outpost/recorder"
	"github.com/pion/rtp"
)

// Errors a session can end with (matched with errors.Is; the sink's End
// gets them too).
var (
	// ErrStalled: the camera stopped sending packets, or sends nothing
	// usable, for longer than ReadTimeout.
	ErrStalled = errors.New("ingest: camera stalled")
	// ErrParamsChanged: the camera switched parameter sets in band
	// (resolution, profile); the sink is restarted with the new Tracks.
	ErrParamsChanged = errors.New("ingest: video parameter sets changed")
	// ErrNoTracks: the camera offers no H264/H265 video nor AAC/Opus/G711 audio.
	ErrNoTracks = errors.New("ingest: no supported track")
	// ErrSink wraps errors returned by the sink.
	ErrSink = errors.New("ingest: sink")
)

// UDPReadBufferSize is the socket buffer asked for with the UDP transport:
// a camera sends an IDR frame in one burst, and the default buffer loses
// half of it. The kernel caps it at net.core.rmem_max (gokrazy's default
// is 208 KiB): raise that sysctl, or the camera falls back to the default
// with a warning.
const UDPReadBufferSize = 4 << 20

// Config configures a Camera. ID, URL and Sink are required.
type Config struct {
	ID  string // names the camera in logs
	URL string // rtsp://host[:port]/path; credentials may be embedded
	// Username and Password override credentials in URL. They never
	// appear in logs, errors or Stats.
	Username, Password string
	// Transport is "tcp" (default: no loss, survives NAT) or "udp".
	Transport string
	Sink      recorder.Sink
	Log       *slog.Logger     // default: discard
	Now       func() time.Time // stamps samples and Stats; default time.Now
	// MinBackoff and MaxBackoff bound the exponential, jittered delay
	// between sessions (defaults 500 ms and 30 s). A session that stayed
	// online for MaxBackoff resets the delay.
	MinBackoff, MaxBackoff time.Duration
	// ReadTimeout ends a session when no sample arrived for that long
	// (no key frame for twice that long); default 10 s. It is also the
	// RTSP request timeout.
	ReadTimeout time.Duration
}

// Camera ingests one camera. Create it with New, run it with Run, read
// its health with Stats from any goroutine.
type Camera struct {
	cfg      Config
	u        *base.URL // with credentials
	redacted string
	log      *slog.Logger
	h        health
	once     sync.Once // UDP buffer warning

	logMu  sync.Mutex
	logged map[string]time.Time // rate limit for per-packet warnings
}

// New validates cfg and fills in defaults.
func New(cfg Config) (*Camera, error) {
	if cfg.ID == "" || cfg.Sink == nil {
		return nil, errors.New("ingest: Config needs ID and Sink")
	}
	pu, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("ingest: camera %s: bad URL", cfg.ID) // the parse error would repeat the URL
	}
	if pu.User != nil {
		if cfg.Username == "" {
			cfg.Username = pu.User.Username()
		}
		if p, ok := pu.User.Password(); ok && cfg.Password == "" {
			cfg.Password = p
		}
	}
	pu.User = nil
	if cfg.Username != "" || cfg.Password != "" {
		pu.User = url.UserPassword(cfg.Username, cfg.Password)
	}
	u, err := base.ParseURL(pu.String())
	port, perr := strconv.Atoi(cmp.Or(pu.Port(), "554"))
	if err != nil || (u.Scheme != "rtsp" && u.Scheme != "rtsps") || pu.Hostname() == "" || perr != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("ingest: camera %s: bad URL %s", cfg.ID, pu.Redacted())
	}
	switch cfg.Transport {
	case "":
		cfg.Transport = "tcp"
	case "tcp", "udp":
	default:
		return nil, fmt.Errorf("ingest: camera %s: transport %q: want tcp or udp", cfg.ID, cfg.Transport)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 10 * time.Second
	}
	c := &Camera{cfg: cfg, u: u, redacted: pu.Redacted(), logged: map[string]time.Time{}}
	c.log = cfg.Log.With("camera", cfg.ID)
	c.h.s.State, c.h.s.Since = Offline, cfg.Now()
	return c, nil
}

// Stats returns the camera's current health.
func (c *Camera) Stats() Stats { return c.h.snapshot(c.cfg.Now()) }

// Run ingests until ctx ends, then returns nil. Sessions that fail or end
// are retried with backoff, forever. Run must not be called twice at once.
func (c *Camera) Run(ctx context.Context) error {
	attempt := 0
	for first := true; ; first = false {
		if !first {
			c.h.update(func(s *Stats) { s.Reconnects++ })
		}
		online, err := c.session(ctx)
		if ctx.Err() != nil {
			c.h.setState(Offline, c.cfg.Now())
			return nil
		}
		msg := c.redact(err.Error())
		c.h.update(func(s *Stats) { s.LastError = msg })
		c.h.setState(Offline, c.cfg.Now())
		if online >= c.cfg.MaxBackoff {
			attempt = 0
		}
		d := c.cfg.MaxBackoff
		if attempt < 32 && c.cfg.MinBackoff < d>>attempt {
			d = c.cfg.MinBackoff << attempt
		}
		d = d/2 + rand.N(d/2+1) // jitter: cameras restarted together do not reconnect together
		attempt++
		c.log.Warn("camera session ended", "url", c.redacted, "err", msg, "online", online.Round(time.Millisecond), "retry_in", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
	}
}

// track is a chosen media/format with its depacketizer.
type track struct {
	media  *description.Media
	format format.Format
	rec    recorder.Track
	dep    depacketizer
}

// session runs one RTSP session; it returns how long the sink was fed and
// why the session ended.
func (c *Camera) session(ctx context.Context) (time.Duration, error) {
	c.h.setState(Connecting, c.cfg.Now())
	tr, bufSize := gortsplib.TransportTCP, 0
	if c.cfg.Transport == "udp" {
		tr, bufSize = gortsplib.TransportUDP, c.udpBufferSize()
	}
	var mu sync.Mutex // serializes callbacks: UDP reads each track in its own goroutine
	client := &gortsplib.Client{
		Scheme: c.u.Scheme, Host: c.u.Host,
		// gortsplib tracks packet arrival in whole seconds: give it one
		// more; the pipeline's own check below is exact.
		ReadTimeout:       c.cfg.ReadTimeout + time.Second,
		WriteTimeout:      c.cfg.ReadTimeout,
		Transport:         &tr,
		UDPReadBufferSize: bufSize,
		UserAgent:         "outpost",
		OnPacketsLost:     func(n uint64) { c.h.update(func(s *Stats) { s.Lost += n }) },
		OnDecodeError: func(err error) {
			c.h.update(func(s *Stats) { s.Dropped++ })
			c.warn(c.cfg.Now(), "rtp", "bad RTP packet dropped", err)
		},
		OnTransportSwitch: func(err error) { c.log.Info("camera transport switch", "err", c.redact(err.Error())) },
	}
	if err := client.Start2(); err != nil {
		return 0, fmt.Errorf("%s: start client: %w", c.redacted, err)
	}
	defer context.AfterFunc(ctx, client.Close)() // unblocks DESCRIBE/SETUP/PLAY too
	defer client.Close()

	desc, _, err := client.Describe(c.u)
	if err != nil {
		return 0, fmt.Errorf("%s: describe: %w", c.redacted, err)
	}
	tracks, err := c.choose(desc)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", c.redacted, err)
	}
	recs, deps := make([]recorder.Track, len(tracks)), make([]depacketizer, len(tracks))
	for i, t := range tracks {
		if _, err := client.Setup(desc.BaseURL, t.media, 0, 0); err != nil {
			return 0, fmt.Errorf("%s: setup %s: %w", c.redacted, t.rec.Codec, err)
		}
		recs[i], deps[i] = t.rec, t.dep
	}
	start := c.cfg.Now()
	var upAt time.Time
	p := newPipeline(c.cfg.Sink, &c.h, recs, deps, start)
	p.onDrop = func(now time.Time, what string, err error) { c.warn(now, what, "dropped", err) }
	p.onUp = func(now time.Time) {
		if upAt.IsZero() {
			upAt = now
		}
		c.h.setState(Online, now)
		c.log.Info("camera online", "url", c.redacted, "tracks", codecs(p.tracks))
	}
	for i, t := range tracks {
		ptsOf := func(pkt *rtp.Packet) (int64, bool) { return client.PacketPTS2(t.media, pkt) }
		client.OnPacketRTP(t.media, t.format, func(pkt *rtp.Packet) {
			mu.Lock()
			defer mu.Unlock()
			c.safely(p, i, func() { p.packet(i, pkt, c.cfg.Now(), ptsOf) })
		})
	}
	if _, err := client.Play(nil); err != nil {
		return 0, fmt.Errorf("%s: play: %w", c.redacted, err)
	}

	waitc := make(chan error, 1)
	go func() { waitc <- client.Wait() }()
	tick := time.NewTicker(min(250*time.Millisecond, c.cfg.ReadTimeout/4))
	defer tick.Stop()
	var end error
	for end == nil {
		select {
		case err := <-waitc:
			var tcp liberrors.ErrClientTCPTimeout
			var udp liberrors.ErrClientUDPTimeout
			if errors.As(err, &tcp) || errors.As(err, &udp) {
				err = fmt.Errorf("%w: %w", ErrStalled, err)
			}
			end = fmt.Errorf("%s: %w", c.redacted, err)
		case <-ctx.Done():
			end = ctx.Err()
		case <-tick.C:
			mu.Lock()
			if err := p.check(c.cfg.Now(), c.cfg.ReadTimeout); err != nil {
				end = fmt.Errorf("%s: %w", c.redacted, err)
			}
			mu.Unlock()
		}
	}
	client.Close() // no callbacks after this
	mu.Lock()
	p.end(end)
	mu.Unlock()
	if upAt.IsZero() {
		return 0, end
	}
	return c.cfg.Now().Sub(upAt), end
}

// safely runs f, turning a panic in a decoder (hostile input reaching a
// parser bug) into a dropped packet and a resynchronized track.
func (c *Camera) safely(p *pipeline, i int, f func()) {
	defer func() {
		if r := recover(); r != nil {
			p.deps[i].resync()
			p.drop(c.cfg.Now(), "panic", fmt.Errorf("recovered: %v", r))
		}
	}()
	f()
}

// choose picks the first H264/H265 video and the first AAC/Opus/G711
// audio format, in SDP order.
func (c *Camera) choose(desc *description.Session) ([]track, error) {
	var out []track
	var video, audio bool
	for _, m := range desc.Medias {
		var t *track
		for _, f := range m.Formats {
			if m.IsBackChannel {
				break
			}
			t = c.trackFor(f, &video, &audio)
			if t != nil {
				t.media, t.format = m, f
				out = append(out, *t)
				break
			}
		}
		if t == nil {
			var names []string
			for _, f := range m.Formats {
				names = append(names, f.Codec())
			}
			c.log.Info("camera track ignored", "type", m.Type, "codecs", names, "back_channel", m.IsBackChannel)
		}
	}
	if len(out) == 0 {
		return nil, ErrNoTracks
	}
	return out, nil
}

func (c *Camera) trackFor(f format.Format, video, audio *bool) *track {
	var t track
	var err error
	switch f := f.(type) {
	case *format.H264:
		if *video {
			return nil
		}
		sps, pps := f.SafeParams()
		t.rec = recorder.Track{Codec: recorder.H264, ClockRate: 90000, SPS: clone(sps), PPS: clone(pps)}
		t.dep, err = newH264Depack(f.PacketizationMode, sps, pps)
		*video = err == nil
	case *format.H265:
		if *video {
			return nil
		}
		vps, sps, pps := f.SafeParams()
		t.rec = recorder.Track{Codec: recorder.H265, ClockRate: 90000, VPS: clone(vps), SPS: clone(sps), PPS: clone(pps)}
		t.dep, err = newH265Depack(vps, sps, pps)
		*video = err == nil
	case *format.MPEG4Audio:
		if *audio || f.Config == nil {
			return nil
		}
		var asc []byte
		if asc, err = f.Config.Marshal(); err == nil {
			t.rec = recorder.Track{Codec: recorder.AAC, ClockRate: f.ClockRate(), AACConfig: asc, Channels: f.Config.ChannelCount}
			t.dep, err = newAACDepack(f.SizeLength, f.IndexLength, f.IndexDeltaLength)
		}
		*audio = err == nil
	case *format.Opus:
		if *audio {
			return nil
		}
		ch := f.ChannelCount
		if ch == 0 {
			ch = 1
			if f.IsStereo { //nolint:staticcheck // older SDP parsers only set this
				ch = 2
			}
		}
		t.rec = recorder.Track{Codec: recorder.Opus, ClockRate: f.ClockRate(), Channels: ch}
		t.dep, *audio = &frameDepack{}, true
	case *format.G711:
		if *audio {
			return nil
		}
		t.rec = recorder.Track{Codec: recorder.G711, ClockRate: f.ClockRate(), Channels: max(f.ChannelCount, 1), MULaw: f.MULaw}
		t.dep, *audio = &frameDepack{}, true
	default:
		return nil
	}
	if err != nil {
		c.log.Info("camera track unusable", "codec", f.Codec(), "err", err)
		return nil
	}
	return &t
}

// udpBufferSize returns UDPReadBufferSize when the kernel grants it, else
// 0 (the default) with a warning: gortsplib would refuse to set up.
func (c *Camera) udpBufferSize() int {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err == nil {
		defer pc.Close()
		if pc.SetReadBuffer(UDPReadBufferSize) == nil {
			if v, err := readbuffer.ReadBuffer(pc); err == nil && v == UDPReadBufferSize {
				return UDPReadBufferSize
			}
		}
	}
	c.once.Do(func() {
		c.log.Warn("UDP read buffer of 4 MiB refused (raise net.core.rmem_max); expect loss on key frames")
	})
	return 0
}

// warn logs a per-packet problem at most every 10 s per kind, and keeps
// it as LastError.
func (c *Camera) warn(now time.Time, kind, msg string, err error) {
	text := c.redact(err.Error())
	c.h.update(func(s *Stats) { s.LastError = text })
	c.logMu.Lock()
	defer c.logMu.Unlock()
	if now.Sub(c.logged[kind]) < 10*time.Second {
		return
	}
	c.logged[kind] = now
	c.log.Warn("camera: "+msg, "what", kind, "err", text)
}

// redact removes the password from text that may have picked it up.
func (c *Camera) redact(s string) string {
	if pw := c.cfg.Password; pw != "" {
		for _, v := range []string{pw, url.QueryEscape(pw), url.PathEscape(pw)} {
			s = strings.ReplaceAll(s, v, "xxxxx")
		}
	}
	return s
}

func codecs(ts []recorder.Track) []string {
	var out []string
	for _, t := range ts {
		out = append(out, string(t.Codec))
	}
	return out
}
