// Package lanserver is the box's endpoint on the site LAN: HTTPS with a
// certificate kept in the data dir, and plain HTTP that only redirects to
// HTTPS. Routes belong to the caller, which passes one http.Handler.
package lanserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Server serves Handler over HTTPS on HTTPSAddr and redirects HTTPAddr to it.
type Server struct {
	HTTPSAddr string
	HTTPAddr  string // empty: no redirect listener
	Cert      tls.Certificate
	Handler   http.Handler
	Log       *slog.Logger

	httpsLn, httpLn net.Listener
	servers         []*http.Server
}

// Listen binds the listeners, so that a bad address or a port in use fails
// start-up with a clear error, and so that ":0" addresses are known before
// serving.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.HTTPSAddr)
	if err != nil {
		return fmt.Errorf("lan https: %w", err)
	}
	s.httpsLn = ln
	if s.HTTPAddr != "" {
		ln, err := net.Listen("tcp", s.HTTPAddr)
		if err != nil {
			s.httpsLn.Close()
			return fmt.Errorf("lan http: %w", err)
		}
		s.httpLn = ln
	}
	return nil
}

// HTTPSListenAddr is the bound HTTPS address (after Listen).
func (s *Server) HTTPSListenAddr() net.Addr { return s.httpsLn.Addr() }

// HTTPListenAddr is the bound HTTP address, or nil without one.
func (s *Server) HTTPListenAddr() net.Addr {
	if s.httpLn == nil {
		return nil
	}
	return s.httpLn.Addr()
}

// Run serves until ctx ends, then shuts down gracefully (5 s at most).
func (s *Server) Run(ctx context.Context) error {
	if s.httpsLn == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	errLog := slog.NewLogLogger(s.Log.Handler(), slog.LevelDebug) // TLS handshake noise from scanners
	https := &http.Server{
		Handler: securityHeaders(s.Handler),
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{s.Cert},
			MinVersion:   tls.VersionTLS12,
		},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          errLog,
	}
	servers := []*http.Server{https}
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		errc <- https.ServeTLS(s.httpsLn, "", "")
	}()
	if s.httpLn != nil {
		_, httpsPort, _ := net.SplitHostPort(s.httpsLn.Addr().String())
		redirect := &http.Server{
			Handler:           Redirect(httpsPort),
			ReadHeaderTimeout: 10 * time.Second,
			MaxHeaderBytes:    16 << 10,
			ErrorLog:          errLog,
		}
		servers = append(servers, redirect)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- redirect.Serve(s.httpLn)
		}()
	}
	s.Log.Info("LAN endpoint up", "https", s.httpsLn.Addr().String(), "http_redirect", s.HTTPListenAddr())
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range servers {
		srv.Shutdown(sctx)
	}
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Redirect answers every request with a permanent redirect to the same path
// over HTTPS on httpsPort.
func Redirect(httpsPort string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "" || strings.ContainsAny(host, "/\\@ ") {
			http.Error(w, "bad Host header", http.StatusBadRequest)
			return
		}
		if strings.Contains(host, ":") { // IPv6 literal
			host = "[" + strings.Trim(host, "[]") + "]"
		}
		if httpsPort != "" && httpsPort != "443" {
			host += ":" + httpsPort
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusMovedPermanently)
	})
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Strict-Transport-Security", "max-age=31536000")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		// The LAN page: own scripts and styles only; video from the box, or
		// from Media Source buffers (blob:) where HLS is not native.
		hd.Set("Content-Security-Policy", "default-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
		h.ServeHTTP(w, r)
	})
}
