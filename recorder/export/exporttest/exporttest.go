// Package exporttest is an upload server for tests of recorder/export and
// of what drives it: resumable upload sessions in the manner of GCS's, one
// per URL path, with faults to inject.
//
// A chunk is a PUT with "Content-Range: bytes A-B/N" whose A must be where
// the session is; "bytes */N" asks where it is. The answer is 308 with
// "Range: bytes=0-K" (or no Range for nothing yet) until all N bytes are
// in, then Final (default 200).
package exporttest

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Fault is what a chunk PUT suffers.
type Fault int

const (
	// Drop keeps the first half of the chunk, then drops the connection.
	Drop Fault = iota + 1
	// Hang keeps the first half of the chunk, then neither reads nor
	// answers until the client goes, Release is sent on (or closed), or
	// HangLimit passes; then it drops the connection.
	Hang
)

// Server is the upload server (an http.Handler).
type Server struct {
	// Sig is the "sig" query value every request must carry.
	Sig string
	// Final is the status of the PUT that completes a session (default
	// 200; GCS also answers 201).
	Final int
	// Block, if set, makes every chunk PUT with a body wait for a receive
	// from it (or its close) first.
	Block chan struct{}
	// Release ends a Hang.
	Release chan struct{}
	// HangLimit bounds a Hang (default 30 s).
	HangLimit time.Duration

	mu       sync.Mutex
	sessions map[string]*session
	faults   map[string][]Fault
	gone     bool
	puts     int
}

type session struct {
	got      []byte
	complete bool
	applied  []int // offsets of the chunks taken whole
}

// Inject queues faults for the next chunk PUTs to path, one each, in
// order; path "" means whichever path comes next.
func (s *Server) Inject(path string, f ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.faults == nil {
		s.faults = map[string][]Fault{}
	}
	s.faults[path] = append(s.faults[path], f...)
}

// SetGone makes every request from now on get 410 Gone (a session the
// server forgot).
func (s *Server) SetGone() {
	s.mu.Lock()
	s.gone = true
	s.mu.Unlock()
}

// File is what the session at path holds, and whether it is complete.
func (s *Server) File(path string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[path]
	if ss == nil {
		return nil, false
	}
	return bytes.Clone(ss.got), ss.complete
}

// Applied lists the offsets of the chunks to path taken whole.
func (s *Server) Applied(path string) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss := s.sessions[path]; ss != nil {
		return append([]int(nil), ss.applied...)
	}
	return nil
}

// Puts counts the PUTs that reached a session (well-formed, signed).
func (s *Server) Puts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.puts
}

// fault takes the next fault for path, if any.
func (s *Server) fault(path string) Fault {
	for _, p := range []string{path, ""} {
		if q := s.faults[p]; len(q) > 0 {
			s.faults[p] = q[1:]
			return q[0]
		}
	}
	return 0
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	span, total, _ := strings.Cut(strings.TrimPrefix(r.Header.Get("Content-Range"), "bytes "), "/")
	n, err := strconv.Atoi(total)
	if r.Method != http.MethodPut || r.URL.Query().Get("sig") != s.Sig || err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if s.Block != nil && r.ContentLength > 0 {
		select {
		case <-s.Block:
		case <-r.Context().Done():
			return
		}
	}
	s.mu.Lock()
	s.puts++
	if s.gone {
		s.mu.Unlock()
		http.Error(w, "gone", http.StatusGone)
		return
	}
	if s.sessions == nil {
		s.sessions = map[string]*session{}
	}
	ss := s.sessions[r.URL.Path]
	if ss == nil {
		ss = &session{}
		s.sessions[r.URL.Path] = ss
	}
	at := len(ss.got)
	var f Fault
	if span != "*" {
		f = s.fault(r.URL.Path)
	}
	s.mu.Unlock()

	if span != "*" {
		a, b, _ := strings.Cut(span, "-")
		from, err1 := strconv.Atoi(a)
		to, err2 := strconv.Atoi(b)
		if err1 != nil || err2 != nil || from != at || int64(to-from+1) != r.ContentLength {
			http.Error(w, "chunk not where the session is: "+span, http.StatusBadRequest)
			return
		}
		if f != 0 {
			half := make([]byte, r.ContentLength/2)
			k, _ := io.ReadFull(r.Body, half)
			s.mu.Lock()
			ss.got = append(ss.got, half[:k]...)
			s.mu.Unlock()
			if f == Hang {
				s.hang(r)
			}
			panic(http.ErrAbortHandler) // the connection drops mid-body
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		s.mu.Lock()
		ss.applied = append(ss.applied, from)
		ss.got = append(ss.got, body...)
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(ss.got) == n {
		ss.complete = true
		w.WriteHeader(cmp.Or(s.Final, http.StatusOK))
		return
	}
	if len(ss.got) > 0 {
		w.Header().Set("Range", fmt.Sprintf("bytes=0-%d", len(ss.got)-1))
	}
	w.WriteHeader(http.StatusPermanentRedirect)
}

// hang waits for the client to go (a handler that has not read the whole
// body does not see that in r.Context(), so the rest is read), for Release
// or for HangLimit.
func (s *Server) hang(r *http.Request) {
	gone := make(chan struct{})
	go func() {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			close(gone)
		}
	}()
	limit := time.NewTimer(cmp.Or(s.HangLimit, 30*time.Second))
	defer limit.Stop()
	select {
	case <-s.Release:
	case <-gone:
	case <-r.Context().Done():
	case <-limit.C:
	}
}
