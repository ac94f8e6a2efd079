// Package hls restreams cameras to browsers as HLS (fMP4 segments) without
// re-encoding: each camera's one ingest connection feeds a Stream (a
// recorder.Sink, teed beside the recording), which hands access units to a
// gohlslib muxer kept in memory. Server.ServeFile answers the playlist and
// segment requests of /…/<camera>/<file>.
//
// The plain fMP4 variant is used, not Low-Latency HLS: gohlslib v2.2.2's
// LL preload-hint handler returns with its lock held when the muxer
// closes, which would wedge every later request on a camera that
// reconnected. With segments cut on every key frame after one second the
// delay is about three key-frame intervals.
package hls

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/outpost-gw/outpost/recorder"
)

// Config configures a Server.
type Config struct {
	// SegmentMinDuration is the least length of a segment (default 1 s);
	// segments are cut on key frames.
	SegmentMinDuration time.Duration
	// SegmentCount is the number of segments kept per camera (default 5).
	SegmentCount int
	// PlaylistWait bounds how long a playlist request waits for the first
	// segments of a camera that just came up (default 5 s); it then gets
	// 503 with Retry-After.
	PlaylistWait time.Duration
	// MaxWaiters bounds the playlist requests waiting per camera
	// (default 16); more get 503 at once.
	MaxWaiters int
	// Idle is how long a camera's muxer runs after its last request
	// (default 30 s). Muxing starts at the first request, so cameras
	// nobody watches cost neither memory nor CPU.
	Idle time.Duration
	Log  *slog.Logger
}

// Server holds one Stream per camera.
type Server struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	streams map[string]*Stream
	closed  bool
}

// New makes a Server.
func New(cfg Config) *Server {
	if cfg.SegmentMinDuration <= 0 {
		cfg.SegmentMinDuration = time.Second
	}
	if cfg.SegmentCount < 3 {
		cfg.SegmentCount = 5
	}
	if cfg.PlaylistWait <= 0 {
		cfg.PlaylistWait = 5 * time.Second
	}
	if cfg.MaxWaiters <= 0 {
		cfg.MaxWaiters = 16
	}
	if cfg.Idle <= 0 {
		cfg.Idle = 30 * time.Second
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log, streams: map[string]*Stream{}}
}

// Stream returns the camera's Sink, creating it on first use.
func (s *Server) Stream(camera string) *Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[camera]
	if st == nil {
		st = &Stream{srv: s, log: s.log.With("camera", camera), waiters: make(chan struct{}, s.cfg.MaxWaiters)}
		st.closed = s.closed
		s.streams[camera] = st
	}
	return st
}

// Close stops every muxer; waiting requests return.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, st := range s.streams {
		st.close()
	}
}

// fileName is what gohlslib names its playlists and segments.
var fileName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}\.(m3u8|mp4)$`)

// ErrNotFound is a file name that is not one of a stream's.
var ErrNotFound = errors.New("hls: no such file")

// ServeFile answers a request for one file of a camera's stream: 404 for a
// name that is not one, 503 (Retry-After) while the camera has no video
// yet. The caller has authorized the request.
func (s *Server) ServeFile(w http.ResponseWriter, r *http.Request, camera, file string) {
	if !fileName.MatchString(file) {
		http.Error(w, "hls: no such file", http.StatusNotFound)
		return
	}
	s.mu.Lock()
	st := s.streams[camera]
	s.mu.Unlock()
	if st == nil {
		http.Error(w, "hls: unknown camera", http.StatusNotFound)
		return
	}
	st.wanted.Store(time.Now().UnixNano())
	m := st.muxer()
	if m == nil { // muxing starts with the camera's next sample
		unavailable(w)
		return
	}
	if bytes.HasSuffix([]byte(file), []byte(".m3u8")) {
		st.servePlaylist(w, r, m, s.cfg.PlaylistWait)
		return
	}
	tw := &trackedWriter{ResponseWriter: w}
	m.Handle(tw, r)
	if !tw.wrote { // gohlslib answers an unknown file with nothing at all
		http.Error(w, "hls: no such file (segments expire after a few seconds)", http.StatusNotFound)
	}
}

func unavailable(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "1")
	http.Error(w, "hls: the camera has no live video yet", http.StatusServiceUnavailable)
}

// Stream is one camera's HLS muxer; it implements recorder.Sink. The muxer
// runs while viewers ask for the stream. A reconnection of the camera with
// the same tracks carries on in the same muxer (players keep playing); new
// tracks start a new one.
type Stream struct {
	srv     *Server
	log     *slog.Logger
	waiters chan struct{}
	wanted  atomic.Int64 // UnixNano of the last request

	mu     sync.Mutex
	tracks []recorder.Track
	mux    *gohlslib.Muxer
	htr    []*gohlslib.Track // per recorder track; nil when not muxed
	offset time.Duration
	last   time.Duration
	closed bool
}

var _ recorder.Sink = (*Stream)(nil)

func (st *Stream) muxer() *gohlslib.Muxer {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.mux
}

// Start implements recorder.Sink.
func (st *Stream) Start(tracks []recorder.Track) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return errors.New("hls: server closed")
	}
	if !restreamable(tracks) {
		return errors.New("hls: no track can be restreamed")
	}
	if st.mux != nil && recorder.SameTracks(st.tracks, tracks) {
		st.offset = st.last + 40*time.Millisecond
		return nil
	}
	st.stopMuxer()
	st.tracks = append([]recorder.Track(nil), tracks...)
	st.offset, st.last = 0, 0
	return nil
}

func (st *Stream) stopMuxer() {
	if st.mux != nil {
		st.mux.Close()
		st.mux, st.htr = nil, nil
	}
}

func restreamable(tracks []recorder.Track) bool {
	for _, t := range tracks {
		if _, err := codecFor(t); err == nil {
			return true
		}
	}
	return false
}

// startMuxer starts a muxer for st.tracks.
func (st *Stream) startMuxer() error {
	var htr []*gohlslib.Track
	var all []*gohlslib.Track
	video := false
	for i, t := range st.tracks {
		c, err := codecFor(t)
		if err == nil && c.IsVideo() && video {
			err = errors.New("a second video track")
		}
		if err != nil {
			st.log.Info("hls: track not restreamed", "track", i, "codec", t.Codec, "err", err)
			htr = append(htr, nil)
			continue
		}
		video = video || c.IsVideo()
		ht := &gohlslib.Track{Codec: c, ClockRate: t.ClockRate}
		if !c.IsVideo() && !hasDefault(all) {
			ht.IsDefault, ht.Name = true, "audio"
		}
		htr, all = append(htr, ht), append(all, ht)
	}
	if len(all) == 0 {
		return errors.New("hls: no track can be restreamed")
	}
	m := &gohlslib.Muxer{
		Tracks:             all,
		Variant:            gohlslib.MuxerVariantFMP4,
		SegmentCount:       st.srv.cfg.SegmentCount,
		SegmentMinDuration: st.srv.cfg.SegmentMinDuration,
		SegmentMaxSize:     16 << 20,
		OnEncodeError: func(err error) {
			st.log.Debug("hls: encode", "err", err)
		},
	}
	if err := m.Start(); err != nil {
		return fmt.Errorf("hls: %w", err)
	}
	st.mux, st.htr = m, htr
	return nil
}

// Write implements recorder.Sink. It never blocks on viewers: gohlslib
// only appends to its in-memory segments.
func (st *Stream) Write(s recorder.Sample) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.tracks == nil || st.closed {
		return nil
	}
	if time.Since(time.Unix(0, st.wanted.Load())) > st.srv.cfg.Idle {
		st.stopMuxer() // nobody watching: free the segments
		return nil
	}
	if st.mux == nil {
		if err := st.startMuxer(); err != nil {
			st.log.Warn("hls: muxer", "err", err)
			st.tracks = nil
			return nil
		}
		st.log.Info("hls: viewer arrived, muxing")
	}
	if s.Track < 0 || s.Track >= len(st.htr) || st.htr[s.Track] == nil {
		return nil
	}
	ht, t := st.htr[s.Track], st.tracks[s.Track]
	pts := s.PTS + st.offset
	st.last = max(st.last, pts)
	ticks := recorder.Ticks(pts, t.ClockRate)
	ntp := s.Received
	if ntp.IsZero() {
		ntp = time.Now()
	}
	var err error
	switch t.Codec {
	case recorder.H264:
		err = st.mux.WriteH264(ht, ntp, ticks, s.AU)
	case recorder.H265:
		err = st.mux.WriteH265(ht, ntp, ticks, s.AU)
	case recorder.AAC:
		err = st.mux.WriteMPEG4Audio(ht, ntp, ticks, s.AU)
	case recorder.Opus:
		err = st.mux.WriteOpus(ht, ntp, ticks, s.AU)
	}
	if err != nil {
		st.log.Debug("hls: write", "err", err) // a unit the muxer refuses: the recording does not care
	}
	return nil
}

// End implements recorder.Sink: the playlist stays, players wait for the
// camera's next session.
func (st *Stream) End(error) {}

func (st *Stream) close() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.closed = true
	st.stopMuxer()
}

// servePlaylist runs gohlslib's playlist handler, which waits without a
// deadline until the stream has segments, into a buffer, and gives up on
// it after wait. The abandoned handler ends when the segments come or the
// muxer closes; at most MaxWaiters are pending per camera.
func (st *Stream) servePlaylist(w http.ResponseWriter, r *http.Request, m *gohlslib.Muxer, wait time.Duration) {
	select {
	case st.waiters <- struct{}{}:
	default:
		unavailable(w)
		return
	}
	rec := &bufferedWriter{header: http.Header{}}
	done := make(chan struct{})
	req := r.Clone(r.Context())
	go func() {
		defer func() { <-st.waiters }()
		m.Handle(rec, req)
		close(done)
	}()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		unavailable(w)
		return
	case <-r.Context().Done():
		return
	}
	if rec.code == 0 && rec.body.Len() == 0 {
		http.Error(w, "hls: no such playlist", http.StatusNotFound)
		return
	}
	if rec.code == http.StatusInternalServerError { // the muxer closed: a new one is coming
		unavailable(w)
		return
	}
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	if rec.code != 0 {
		w.WriteHeader(rec.code)
	}
	w.Write(rec.body.Bytes())
}

type trackedWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *trackedWriter) WriteHeader(code int) { w.wrote = true; w.ResponseWriter.WriteHeader(code) }
func (w *trackedWriter) Write(p []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(p)
}

type bufferedWriter struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (w *bufferedWriter) Header() http.Header { return w.header }
func (w *bufferedWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
func (w *bufferedWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.body.Write(p)
}

func codecFor(t recorder.Track) (codecs.Codec, error) {
	switch t.Codec {
	case recorder.H264:
		return &codecs.H264{SPS: t.SPS, PPS: t.PPS}, nil
	case recorder.H265:
		return &codecs.H265{VPS: t.VPS, SPS: t.SPS, PPS: t.PPS}, nil
	case recorder.AAC:
		var c mpeg4audio.AudioSpecificConfig
		if err := c.Unmarshal(t.AACConfig); err != nil {
			return nil, fmt.Errorf("AAC config: %w", err)
		}
		return &codecs.MPEG4Audio{Config: c}, nil
	case recorder.Opus:
		return &codecs.Opus{ChannelCount: max(t.Channels, 1)}, nil
	}
	return nil, fmt.Errorf("HLS does not carry %s", t.Codec)
}

func hasDefault(ts []*gohlslib.Track) bool {
	for _, t := range ts {
		if t.IsDefault {
			return true
		}
	}
	return false
}
