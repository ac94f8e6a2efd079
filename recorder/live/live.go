// Package live restreams cameras to LAN viewers over RTSP without
// re-encoding: each camera's one ingest connection feeds a Stream (a
// recorder.Sink), which re-packetizes every access unit once and hands the
// packets to a gortsplib server that fans them out to any number of
// readers at rtsp://BOX:PORT/<camera>. A slow reader overflows its own
// write queue and is disconnected; it never blocks the ingest (and so
// never the recording).
package live

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/headers"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"

	"github.com/outpost-gw/outpost/recorder"
)

// ErrUnauthorized is returned by an Authorize hook for a missing token; the
// server then asks for credentials (401 with a Basic challenge). Any other
// error refuses the request (403).
var ErrUnauthorized = errors.New("live: a viewer token is required")

// AuthRequest is what the Authorize hook decides on.
type AuthRequest struct {
	Remote net.Addr
	Camera string
	// Token is the RTSP password (any user name) or the ?token= query.
	Token string
	// InURL is true when the token came in the URL's query.
	InURL bool
}

// Config configures a Server.
type Config struct {
	// Addr is the RTSP listen address, e.g. ":8554" or "127.0.0.1:0".
	Addr string
	// Authorize decides every DESCRIBE and SETUP; nil refuses everyone.
	// It is called on the connection's goroutine: keep it quick.
	Authorize func(ctx context.Context, req AuthRequest) error
	// WriteQueueSize is each reader's queue of outgoing packets (a power of
	// two, default 2048: about 3 MB, several seconds of a 4 Mbit/s camera
	// and its largest key frames). A reader whose queue overflows is too
	// slow and is disconnected.
	WriteQueueSize int
	Log            *slog.Logger
}

// Server is the RTSP restream server: one listener, one path per camera.
type Server struct {
	cfg  Config
	log  *slog.Logger
	srv  *gortsplib.Server
	addr net.Addr

	mu      sync.Mutex
	streams map[string]*Stream

	overflows atomic.Uint64
}

// NewServer starts listening.
func NewServer(cfg Config) (*Server, error) {
	if cfg.WriteQueueSize == 0 {
		cfg.WriteQueueSize = 2048
	}
	s := &Server{cfg: cfg, log: cfg.Log, streams: map[string]*Stream{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.srv = &gortsplib.Server{
		Handler:        s,
		RTSPAddress:    cfg.Addr,
		WriteQueueSize: cfg.WriteQueueSize,
		// gortsplib takes an address, not a listener: note what the kernel
		// picked for port 0.
		Listen: func(network, address string) (net.Listener, error) {
			ln, err := net.Listen(network, address)
			if err == nil {
				s.addr = ln.Addr()
			}
			return ln, err
		},
	}
	if err := s.srv.Start(); err != nil {
		return nil, fmt.Errorf("live: rtsp server on %s: %w", cfg.Addr, err)
	}
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.addr }

// Overflows counts readers disconnected for a full write queue.
func (s *Server) Overflows() uint64 { return s.overflows.Load() }

// Close disconnects every reader and stops the server.
func (s *Server) Close() {
	s.mu.Lock()
	for _, st := range s.streams {
		st.close()
	}
	s.mu.Unlock()
	s.srv.Close()
}

// Stream returns the camera's Sink, creating it on first use.
func (s *Server) Stream(camera string) *Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[camera]
	if st == nil {
		st = &Stream{srv: s, camera: camera, log: s.log.With("camera", camera)}
		s.streams[camera] = st
	}
	return st
}

// Readers counts the camera's connected RTSP readers.
func (s *Server) Readers(camera string) int {
	s.mu.Lock()
	st := s.streams[camera]
	s.mu.Unlock()
	if st == nil {
		return 0
	}
	return int(st.readers.Load())
}

func (s *Server) lookup(path string) *Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams[strings.Trim(path, "/")]
}

// authorized is kept on a connection once it passed Authorize for a camera.
type authorized struct{ camera string }

func (s *Server) authorize(conn *gortsplib.ServerConn, req *base.Request, path, query string) (*base.Response, *Stream) {
	cam := strings.Trim(path, "/")
	if a, ok := conn.UserData().(authorized); ok && a.camera == cam {
		if st := s.lookup(cam); st != nil {
			return nil, st
		}
	}
	tok, inURL := "", false
	if q, err := url.ParseQuery(query); err == nil {
		tok = q.Get("token")
		inURL = tok != ""
	}
	if tok == "" && len(req.Header["Authorization"]) > 0 {
		var h headers.Authorization
		if h.Unmarshal(req.Header["Authorization"]) == nil && h.Method == headers.AuthMethodBasic {
			tok = h.BasicPass
		}
	}
	st := s.lookup(cam)
	if st == nil {
		return &base.Response{StatusCode: base.StatusNotFound}, nil
	}
	if tok == "" {
		return &base.Response{StatusCode: base.StatusUnauthorized,
			Header: base.Header{"WWW-Authenticate": base.HeaderValue{`Basic realm="outpost"`}}}, nil
	}
	err := ErrUnauthorized
	if s.cfg.Authorize != nil {
		err = s.cfg.Authorize(context.Background(), AuthRequest{Remote: conn.NetConn().RemoteAddr(), Camera: cam, Token: tok, InURL: inURL})
	}
	if err != nil {
		s.log.Info("live: viewer refused", "camera", cam, "remote", conn.NetConn().RemoteAddr().String(), "err", err)
		if errors.Is(err, ErrUnauthorized) {
			return &base.Response{StatusCode: base.StatusUnauthorized,
				Header: base.Header{"WWW-Authenticate": base.HeaderValue{`Basic realm="outpost"`}}}, nil
		}
		return &base.Response{StatusCode: base.StatusForbidden}, nil
	}
	conn.SetUserData(authorized{camera: cam})
	return nil, st
}

// OnDescribe implements gortsplib.ServerHandlerOnDescribe.
func (s *Server) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	res, st := s.authorize(ctx.Conn, ctx.Request, ctx.Path, ctx.Query)
	if res != nil {
		return res, nil, nil
	}
	return st.serve()
}

// OnSetup implements gortsplib.ServerHandlerOnSetup.
func (s *Server) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if ctx.Session.State() == gortsplib.ServerSessionStatePreRecord {
		return &base.Response{StatusCode: base.StatusBadRequest}, nil, errors.New("live: publishing is not allowed")
	}
	res, st := s.authorize(ctx.Conn, ctx.Request, ctx.Path, ctx.Query)
	if res != nil {
		return res, nil, nil
	}
	return st.serve()
}

// OnAnnounce implements gortsplib.ServerHandlerOnAnnounce: nobody publishes here.
func (s *Server) OnAnnounce(*gortsplib.ServerHandlerOnAnnounceCtx) (*base.Response, error) {
	return &base.Response{StatusCode: base.StatusMethodNotAllowed}, errors.New("live: publishing is not allowed")
}

// OnPlay implements gortsplib.ServerHandlerOnPlay.
func (s *Server) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	if st := s.lookup(ctx.Path); st != nil {
		st.readers.Add(1)
		ctx.Session.SetUserData(st)
	}
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnSessionClose implements gortsplib.ServerHandlerOnSessionClose.
func (s *Server) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	if st, ok := ctx.Session.UserData().(*Stream); ok {
		st.readers.Add(-1)
	}
}

// OnStreamWriteError implements gortsplib.ServerHandlerOnStreamWriteError:
// the reader's queue is full. It is disconnected (a player reconnects and
// starts clean at a key frame), instead of receiving broken pictures.
func (s *Server) OnStreamWriteError(ctx *gortsplib.ServerHandlerOnStreamWriteErrorCtx) {
	if n := s.overflows.Add(1); n%100 == 1 {
		s.log.Warn("live: slow viewer disconnected", "err", ctx.Error, "total", n)
	}
	ctx.Session.Close()
}

// Stream is one camera's restream; it implements recorder.Sink. Samples are
// re-packetized once whatever the number of readers; a reconnection of the
// camera with the same tracks keeps readers connected and the timeline
// continuous.
type Stream struct {
	srv    *Server
	camera string
	log    *slog.Logger

	mu      sync.Mutex
	tracks  []recorder.Track
	stream  *gortsplib.ServerStream
	medias  []*description.Media
	encs    []encoder
	bases   []uint32
	offset  time.Duration // added to the session's timestamps
	last    time.Duration // latest PTS+offset written
	live    bool          // a camera session is running
	closed  bool
	readers atomic.Int64
}

var _ recorder.Sink = (*Stream)(nil)

type encoder func(au [][]byte) ([]*rtp.Packet, error)

func (st *Stream) serve() (*base.Response, *gortsplib.ServerStream, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.stream == nil {
		return &base.Response{StatusCode: base.StatusServiceUnavailable}, nil, nil // camera not seen yet
	}
	return &base.Response{StatusCode: base.StatusOK}, st.stream, nil
}

// Start implements recorder.Sink.
func (st *Stream) Start(tracks []recorder.Track) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return errors.New("live: server closed")
	}
	st.live = true
	if st.stream != nil && recorder.SameTracks(st.tracks, tracks) {
		st.offset = st.last + 40*time.Millisecond // carry on where the last session ended
		return nil
	}
	if st.stream != nil {
		st.stream.Close() // new tracks: readers reconnect and get the new SDP
		st.stream = nil
	}
	desc := &description.Session{}
	var medias []*description.Media
	var encs []encoder
	var bases []uint32
	for i, t := range tracks {
		f, enc, err := formatFor(t, 96+i)
		if err != nil {
			st.log.Warn("live: track not restreamed", "track", i, "codec", t.Codec, "err", err)
			medias, encs, bases = append(medias, nil), append(encs, nil), append(bases, 0)
			continue
		}
		typ := description.MediaTypeAudio
		if t.Codec.IsVideo() {
			typ = description.MediaTypeVideo
		}
		m := &description.Media{Type: typ, Formats: []format.Format{f}}
		desc.Medias = append(desc.Medias, m)
		medias, encs, bases = append(medias, m), append(encs, enc), append(bases, rand.Uint32())
	}
	if len(desc.Medias) == 0 {
		return errors.New("live: no track can be restreamed")
	}
	ss := &gortsplib.ServerStream{Server: st.srv.srv, Desc: desc}
	if err := ss.Initialize(); err != nil {
		return fmt.Errorf("live: %w", err)
	}
	st.tracks = append([]recorder.Track(nil), tracks...)
	st.stream, st.medias, st.encs, st.bases = ss, medias, encs, bases
	st.offset, st.last = 0, 0
	return nil
}

// Write implements recorder.Sink. It never blocks on readers.
func (st *Stream) Write(s recorder.Sample) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.stream == nil || s.Track < 0 || s.Track >= len(st.encs) || st.encs[s.Track] == nil {
		return nil
	}
	pts := s.PTS + st.offset
	st.last = max(st.last, pts)
	if st.readers.Load() == 0 {
		return nil // nobody watching: no packets to make (most of the time, on most cameras)
	}
	pkts, err := st.encs[s.Track](s.AU)
	if err != nil {
		return nil // unpacketizable unit: the recording does not care
	}
	ts := st.bases[s.Track] + uint32(recorder.Ticks(pts, st.tracks[s.Track].ClockRate))
	ntp := s.Received
	if ntp.IsZero() {
		ntp = time.Now()
	}
	for _, p := range pkts {
		p.Timestamp = ts
		// An error means the stream is closing; queue overflows of single
		// readers arrive in OnStreamWriteError.
		_ = st.stream.WritePacketRTPWithNTP(st.medias[s.Track], p, ntp)
	}
	return nil
}

// End implements recorder.Sink: readers stay connected and wait for the
// camera's next session.
func (st *Stream) End(error) {
	st.mu.Lock()
	st.live = false
	st.mu.Unlock()
}

func (st *Stream) close() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.closed = true
	if st.stream != nil {
		st.stream.Close()
		st.stream = nil
	}
}

// formatFor builds the SDP format of a track (parameter sets from the
// Track) and its RTP encoder.
func formatFor(t recorder.Track, pt int) (format.Format, encoder, error) {
	switch t.Codec {
	case recorder.H264:
		f := &format.H264{PayloadTyp: uint8(pt), SPS: t.SPS, PPS: t.PPS, PacketizationMode: 1}
		e, err := f.CreateEncoder()
		if err != nil {
			return nil, nil, err
		}
		return f, e.Encode, nil
	case recorder.H265:
		f := &format.H265{PayloadTyp: uint8(pt), VPS: t.VPS, SPS: t.SPS, PPS: t.PPS}
		e, err := f.CreateEncoder()
		if err != nil {
			return nil, nil, err
		}
		return f, e.Encode, nil
	case recorder.AAC:
		var c mpeg4audio.AudioSpecificConfig
		if err := c.Unmarshal(t.AACConfig); err != nil {
			return nil, nil, err
		}
		f := &format.MPEG4Audio{PayloadTyp: uint8(pt), Config: &c, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
		e, err := f.CreateEncoder()
		if err != nil {
			return nil, nil, err
		}
		return f, e.Encode, nil
	case recorder.Opus:
		f := &format.Opus{PayloadTyp: uint8(pt), ChannelCount: max(t.Channels, 1)}
		e, err := f.CreateEncoder()
		if err != nil {
			return nil, nil, err
		}
		return f, func(au [][]byte) ([]*rtp.Packet, error) {
			var out []*rtp.Packet
			for _, fr := range au {
				p, err := e.Encode(fr)
				if err != nil {
					return nil, err
				}
				out = append(out, p)
			}
			return out, nil
		}, nil
	case recorder.G711:
		f := &format.G711{PayloadTyp: 8, MULaw: t.MULaw, SampleRate: t.ClockRate, ChannelCount: max(t.Channels, 1)}
		if t.MULaw {
			f.PayloadTyp = 0
		}
		if t.ClockRate != 8000 || f.ChannelCount != 1 {
			f.PayloadTyp = uint8(pt)
		}
		e, err := f.CreateEncoder()
		if err != nil {
			return nil, nil, err
		}
		return f, func(au [][]byte) ([]*rtp.Packet, error) {
			var out []*rtp.Packet
			for _, fr := range au {
				p, err := e.Encode(fr)
				if err != nil {
					return nil, err
				}
				out = append(out, p...)
			}
			return out, nil
		}, nil
	}
	return nil, nil, fmt.Errorf("codec %q", t.Codec)
}

// Tee fans one camera's samples out to several sinks: the first (the
// recorder) decides; the others' errors are ignored, so live viewing never
// stops a recording.
type Tee []recorder.Sink

// Start implements recorder.Sink.
func (t Tee) Start(tracks []recorder.Track) error {
	err := t[0].Start(tracks)
	for _, s := range t[1:] {
		s.Start(tracks)
	}
	return err
}

// Write implements recorder.Sink.
func (t Tee) Write(s recorder.Sample) error {
	err := t[0].Write(s)
	for _, o := range t[1:] {
		o.Write(s)
	}
	return err
}

// End implements recorder.Sink.
func (t Tee) End(reason error) {
	for _, s := range t {
		s.End(reason)
	}
}
