// Package rtsptest provides RTSP endpoints for tests and the demo: a tiny
// loopback relay server (publishers PUBLISH a path, readers READ it, like a
// one-file mediamtx), an in-process H264 publisher, an ffmpeg publisher, and
// a fake camera that misbehaves on request (bad SDP, garbage, jumbo packets,
// stalls, floods).
package rtsptest

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/pion/rtp"
)

// ServerConfig configures a Server. The zero value serves TCP only.
type ServerConfig struct {
	// Log receives connection events and write errors; nil discards.
	Log *slog.Logger
	// UDP also offers the UDP transport, on a free even/odd port pair.
	UDP bool
	// WriteQueueSize is each reader's queue of outgoing packets, a power of
	// two. The default, 4096, holds a 4 Mbit/s camera's IDR frame easily
	// (gortsplib's own default, 256, overflows on big IDR frames).
	WriteQueueSize int
	// ReadTimeout is how long a publisher may stay silent (default 10 s).
	ReadTimeout time.Duration
	// User and Pass, when User is set, are the credentials readers must
	// give (basic or digest) at DESCRIBE and SETUP, as a camera asks for
	// them; publishers are not asked.
	User, Pass string
}

// Server is a loopback RTSP relay: one path, one stream. A publisher
// ANNOUNCEs/RECORDs a path (a new publisher replaces the old one); readers
// DESCRIBE/SETUP/PLAY it and get what the publisher sends. When the
// publisher leaves, its readers are disconnected and the path answers 404.
type Server struct {
	log    *slog.Logger
	srv    *gortsplib.Server
	addr   string
	mu     sync.Mutex
	paths  map[string]*serverPath
	wrErrs atomic.Uint64
	user   string
	pass   string
	authed atomic.Uint64 // requests that passed the credential check
	denied atomic.Uint64 // requests refused for wrong or missing credentials
}

type serverPath struct {
	stream    *gortsplib.ServerStream
	publisher *gortsplib.ServerSession
}

// StartServer starts a Server on 127.0.0.1 with a kernel-chosen port.
func StartServer(cfg ServerConfig) (*Server, error) {
	s := &Server{log: orDiscard(cfg.Log), paths: map[string]*serverPath{}, user: cfg.User, pass: cfg.Pass}
	if cfg.WriteQueueSize == 0 {
		cfg.WriteQueueSize = 4096
	}
	var lastErr error
	for range 20 { // UDP ports are picked at random: retry on collisions
		var bound net.Addr
		s.srv = &gortsplib.Server{
			Handler:        s,
			RTSPAddress:    "127.0.0.1:0",
			ReadTimeout:    cfg.ReadTimeout,
			WriteQueueSize: cfg.WriteQueueSize,
			// gortsplib takes an address, not a listener: bind port 0 here
			// and remember what the kernel picked.
			Listen: func(network, address string) (net.Listener, error) {
				ln, err := net.Listen(network, address)
				if err == nil {
					bound = ln.Addr()
				}
				return ln, err
			},
		}
		if cfg.UDP {
			p := 20000 + 2*rand.IntN(20000)
			s.srv.UDPRTPAddress = "127.0.0.1:" + strconv.Itoa(p)
			s.srv.UDPRTCPAddress = "127.0.0.1:" + strconv.Itoa(p+1)
			s.srv.UDPReadBufferSize = 4 << 20
		}
		if lastErr = s.srv.Start(); lastErr == nil {
			s.addr = bound.String()
			return s, nil
		}
		if !cfg.UDP {
			break
		}
	}
	return nil, fmt.Errorf("rtsptest: start server: %w", lastErr)
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.addr }

// URL is the rtsp:// URL of a path ("cam" or "/cam").
func (s *Server) URL(path string) string {
	return "rtsp://" + s.addr + "/" + strings.TrimPrefix(path, "/")
}

// Close disconnects everyone and stops the server.
func (s *Server) Close() { s.srv.Close() }

// WriteErrors counts packets that could not be queued to a reader (full
// write queue, see ServerConfig.WriteQueueSize).
func (s *Server) WriteErrors() uint64 { return s.wrErrs.Load() }

// Publishing reports whether a publisher currently feeds the path.
func (s *Server) Publishing(path string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paths[cleanPath(path)] != nil
}

// Kick disconnects the path's publisher and readers, as a crashing camera
// would.
func (s *Server) Kick(path string) {
	s.mu.Lock()
	p := s.paths[cleanPath(path)]
	s.mu.Unlock()
	if p != nil {
		p.publisher.Close()
	}
}

func cleanPath(p string) string { return strings.Trim(p, "/") }

// OnSessionClose implements gortsplib.ServerHandlerOnSessionClose.
func (s *Server) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	s.mu.Lock()
	var closing *gortsplib.ServerStream
	for k, p := range s.paths {
		if p.publisher == ctx.Session {
			closing = p.stream
			delete(s.paths, k)
		}
	}
	s.mu.Unlock()
	if closing != nil {
		closing.Close() // disconnects the readers
		s.log.Debug("rtsptest: publisher left", "err", ctx.Error)
	}
}

// Authenticated and Denied count reader requests that passed, or failed,
// the credential check (ServerConfig.User). A client first asks without
// credentials and is told how to authenticate: that counts as denied.
func (s *Server) Authenticated() uint64 { return s.authed.Load() }
func (s *Server) Denied() uint64        { return s.denied.Load() }

// authorize checks a reader's credentials when the server wants them.
func (s *Server) authorize(conn *gortsplib.ServerConn, req *base.Request) (*base.Response, error) {
	if s.user == "" {
		return nil, nil
	}
	if !conn.VerifyCredentials(req, s.user, s.pass) {
		s.denied.Add(1)
		return &base.Response{StatusCode: base.StatusUnauthorized}, liberrors.ErrServerAuth{}
	}
	s.authed.Add(1)
	return nil, nil
}

// OnDescribe implements gortsplib.ServerHandlerOnDescribe.
func (s *Server) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if res, err := s.authorize(ctx.Conn, ctx.Request); res != nil {
		return res, nil, err
	}
	return s.lookup(ctx.Path)
}

func (s *Server) lookup(path string) (*base.Response, *gortsplib.ServerStream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.paths[cleanPath(path)]
	if p == nil {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, p.stream, nil
}

// OnAnnounce implements gortsplib.ServerHandlerOnAnnounce.
func (s *Server) OnAnnounce(ctx *gortsplib.ServerHandlerOnAnnounceCtx) (*base.Response, error) {
	st := &gortsplib.ServerStream{Server: s.srv, Desc: ctx.Description}
	if err := st.Initialize(); err != nil {
		return &base.Response{StatusCode: base.StatusBadRequest}, err
	}
	s.mu.Lock()
	old := s.paths[cleanPath(ctx.Path)]
	s.paths[cleanPath(ctx.Path)] = &serverPath{stream: st, publisher: ctx.Session}
	s.mu.Unlock()
	if old != nil {
		old.stream.Close()
		old.publisher.Close()
	}
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnSetup implements gortsplib.ServerHandlerOnSetup.
func (s *Server) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if ctx.Session.State() == gortsplib.ServerSessionStatePreRecord {
		return &base.Response{StatusCode: base.StatusOK}, nil, nil
	}
	if res, err := s.authorize(ctx.Conn, ctx.Request); res != nil {
		return res, nil, err
	}
	return s.lookup(ctx.Path)
}

// OnPlay implements gortsplib.ServerHandlerOnPlay.
func (s *Server) OnPlay(*gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnRecord implements gortsplib.ServerHandlerOnRecord.
func (s *Server) OnRecord(ctx *gortsplib.ServerHandlerOnRecordCtx) (*base.Response, error) {
	s.mu.Lock()
	p := s.paths[cleanPath(ctx.Path)]
	s.mu.Unlock()
	if p == nil || p.publisher != ctx.Session {
		return &base.Response{StatusCode: base.StatusBadRequest}, errors.New("rtsptest: not the path's publisher")
	}
	st := p.stream
	ctx.Session.OnPacketRTPAny(func(m *description.Media, _ format.Format, pkt *rtp.Packet) {
		// Errors here mean the stream is closing; per-reader queue
		// overflows arrive through OnStreamWriteError.
		_ = st.WritePacketRTP(m, pkt)
	})
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnStreamWriteError implements gortsplib.ServerHandlerOnStreamWriteError.
func (s *Server) OnStreamWriteError(ctx *gortsplib.ServerHandlerOnStreamWriteErrorCtx) {
	if s.wrErrs.Add(1)%1000 == 1 {
		s.log.Warn("rtsptest: reader write error", "err", ctx.Error, "total", s.wrErrs.Load())
	}
}

// OnPacketsLost implements gortsplib.ServerHandlerOnPacketsLost.
func (s *Server) OnPacketsLost(ctx *gortsplib.ServerHandlerOnPacketsLostCtx) {
	s.log.Debug("rtsptest: packets lost", "n", ctx.Lost)
}

// OnDecodeError implements gortsplib.ServerHandlerOnDecodeError.
func (s *Server) OnDecodeError(ctx *gortsplib.ServerHandlerOnDecodeErrorCtx) {
	s.log.Debug("rtsptest: decode error", "err", ctx.Error)
}

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
