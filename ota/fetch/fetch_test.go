package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/ota/manifest"
)

// quick keeps retries short; the speed window stays wide enough for a
// loaded machine (TestSlowRetrieval narrows it).
func quick() Options {
	return Options{Backoff: 5 * time.Millisecond, SpeedWindow: 5 * time.Second, Retries: 3}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{1}).Read(b)
	return b
}

// server is an httptest TLS server that records the Range headers it saw.
type server struct {
	*httptest.Server
	mu     sync.Mutex
	ranges []string
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	s := &server{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.ranges = append(s.ranges, r.Header.Get("Range"))
		s.mu.Unlock()
		h(w, r)
	}))
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // hung-up clients are the point here
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func (s *server) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges...)
}

func (s *server) artifact(data []byte) manifest.Artifact {
	return manifest.Artifact{Name: "root", URL: s.URL + "/root.squashfs", Length: int64(len(data)), SHA256: sha256.Sum256(data)}
}

// dropAfter lets n body bytes through, then kills the connection.
type dropAfter struct {
	http.ResponseWriter
	n int
}

func (d *dropAfter) Write(p []byte) (int, error) {
	if len(p) >= d.n {
		d.ResponseWriter.Write(p[:d.n])
		d.ResponseWriter.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	d.n -= len(p)
	return d.ResponseWriter.Write(p)
}

// endless writes data and then more, until the client hangs up.
func endless(w http.ResponseWriter, data []byte) {
	w.Write(data)
	for {
		if _, err := w.Write(bytes.Repeat([]byte{'x'}, 4096)); err != nil {
			return
		}
		w.(http.Flusher).Flush()
	}
}

// limitWriter fails the test if more than max bytes are written.
type limitWriter struct {
	t   *testing.T
	max int64
	bytes.Buffer
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(l.Len()+len(p)) > l.max {
		l.t.Errorf("written past the signed length: %d + %d > %d", l.Len(), len(p), l.max)
	}
	return l.Buffer.Write(p)
}

func TestResume(t *testing.T) {
	data := randomBytes(1 << 20)
	const step = 200 << 10
	for _, tc := range []struct {
		name     string
		handler  func(req int, w http.ResponseWriter, r *http.Request)
		requests int
	}{
		{"drops every 200 KiB", func(_ int, w http.ResponseWriter, r *http.Request) {
			http.ServeContent(&dropAfter{w, step}, r, "", time.Time{}, bytes.NewReader(data))
		}, 6},
		{"drops, Range ignored", func(req int, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			(&dropAfter{w, (req + 1) * step}).Write(data)
		}, 6},
		{"503 twice, then drops once", func(req int, w http.ResponseWriter, r *http.Request) {
			switch req {
			case 0, 1:
				http.Error(w, "busy", http.StatusServiceUnavailable)
			case 2:
				http.ServeContent(&dropAfter{w, 12345}, r, "", time.Time{}, bytes.NewReader(data))
			default:
				http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
			}
		}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			req := 0
			s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				n := req
				req++
				mu.Unlock()
				tc.handler(n, w, r)
			})
			out := &limitWriter{t: t, max: int64(len(data))}
			var last int64
			o := quick()
			o.Progress = func(n int64) { last = n }
			if err := Fetch(t.Context(), s.Client(), s.artifact(data), out, o); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), data) || last != int64(len(data)) {
				t.Fatalf("got %d bytes, progress %d", out.Len(), last)
			}
			ranges := s.seen()
			t.Logf("%d requests: %q", len(ranges), ranges)
			if len(ranges) != tc.requests || ranges[0] != fmt.Sprintf("bytes=0-%d", len(data)-1) {
				t.Fatalf("requests %q", ranges)
			}
			resumed := 0
			for _, r := range ranges {
				if !strings.HasPrefix(r, "bytes=0-") {
					resumed++
				}
			}
			if resumed == 0 {
				t.Fatal("no request resumed from an offset")
			}
		})
	}
}

func TestEndlessData(t *testing.T) {
	data := randomBytes(100 << 10)
	n := len(data)
	for _, tc := range []struct {
		name    string
		h       http.HandlerFunc
		written int // bytes the fetcher may pass on
	}{
		{"declared length too long", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(n+1))
			w.Write(append(data, 'x'))
		}, 0},
		{"Content-Range beyond the signed length", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", 2*n-1, 2*n))
			w.WriteHeader(http.StatusPartialContent)
			endless(w, data)
		}, 0},
		{"Content-Range total beyond the signed length", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", n-1, n+1))
			w.WriteHeader(http.StatusPartialContent)
			endless(w, data)
		}, 0},
		{"endless body, no length", func(w http.ResponseWriter, r *http.Request) {
			endless(w, data)
		}, n},
		{"endless 206 body, no length", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/*", n-1))
			w.WriteHeader(http.StatusPartialContent)
			endless(w, data)
		}, n},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, tc.h)
			out := &limitWriter{t: t, max: int64(n)}
			start := time.Now()
			err := Fetch(t.Context(), s.Client(), s.artifact(data), out, quick())
			if !errors.Is(err, ErrTooLong) {
				t.Fatalf("got %v, want ErrTooLong", err)
			}
			t.Logf("%v after %v", err, time.Since(start).Round(time.Millisecond))
			if out.Len() != tc.written {
				t.Fatalf("wrote %d bytes, want %d", out.Len(), tc.written)
			}
			if len(s.seen()) != 1 {
				t.Fatalf("retried an endless-data server: %q", s.seen())
			}
		})
	}
}

func TestSlowRetrieval(t *testing.T) {
	data := randomBytes(1 << 20)
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
	}{
		{"drip", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			for i := 0; i < len(data); i += 256 {
				if _, err := w.Write(data[i : i+256]); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				time.Sleep(10 * time.Millisecond)
			}
		}},
		{"stall mid-body", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.Write(data[:200<<10])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}},
		{"stall before headers", func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		}},
		{"a few bytes per connection", func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(&dropAfter{w, 64}, r, "", time.Time{}, bytes.NewReader(data))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, tc.h)
			o := quick()
			o.MinSpeed = 64 << 10
			o.SpeedWindow = 200 * time.Millisecond
			start := time.Now()
			err := Fetch(t.Context(), s.Client(), s.artifact(data), io.Discard, o)
			took := time.Since(start)
			if !errors.Is(err, ErrTooSlow) {
				t.Fatalf("got %v, want ErrTooSlow", err)
			}
			t.Logf("%v after %v, %d requests", err, took.Round(time.Millisecond), len(s.seen()))
			if took > 5*time.Second {
				t.Fatalf("took %v to notice", took)
			}
		})
	}
}

func TestHashMismatch(t *testing.T) {
	data := randomBytes(300 << 10)
	bad := bytes.Clone(data)
	bad[len(bad)/2] ^= 1
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(bad))
	})
	out := &limitWriter{t: t, max: int64(len(data))}
	err := Fetch(t.Context(), s.Client(), s.artifact(data), out, quick())
	if !errors.Is(err, ErrHash) || out.Len() != len(data) {
		t.Fatalf("got %v after %d bytes, want ErrHash", err, out.Len())
	}
	t.Log(err)
}

func TestRefusals(t *testing.T) {
	data := randomBytes(10 << 10)
	for _, tc := range []struct {
		name     string
		h        http.HandlerFunc
		requests int
	}{
		{"not found", http.NotFound, 1},
		{"shorter than signed", func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data[:100]))
		}, 1},
		{"range not satisfiable", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "no", http.StatusRequestedRangeNotSatisfiable)
		}, 1},
		{"always ends early", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.Write(data[:100])
		}, 4}, // one with progress, then Retries without
		{"server error", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "down", http.StatusBadGateway)
		}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, tc.h)
			err := Fetch(t.Context(), s.Client(), s.artifact(data), io.Discard, quick())
			if err == nil || errors.Is(err, ErrHash) {
				t.Fatalf("got %v", err)
			}
			t.Log(err)
			if got := len(s.seen()); got != tc.requests {
				t.Fatalf("%d requests, want %d", got, tc.requests)
			}
		})
	}

	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := Fetch(ctx, s.Client(), s.artifact(data), io.Discard, Options{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled: got %v", err)
	}
	art := s.artifact(data)
	art.URL = strings.Replace(art.URL, "https:", "http:", 1)
	if err := Fetch(t.Context(), s.Client(), art, io.Discard, Options{}); err == nil || len(s.seen()) != 1 {
		t.Fatalf("plain http: got %v", err)
	}
	ok := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	})
	if err := Fetch(t.Context(), ok.Client(), ok.artifact(data), failingWriter{}, quick()); err == nil || !strings.Contains(err.Error(), "disk full") || len(ok.seen()) != 1 {
		t.Fatalf("writer error: got %v", err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// TestStreams checks that an artifact is never held in memory: fetching
// 48 MiB allocates a fraction of that (a few hundred KiB; more under -race).
func TestStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 48 MiB")
	}
	const size = 48 << 20
	h := sha256.New()
	io.Copy(h, io.LimitReader(rand.NewChaCha8([32]byte{2}), size))
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		io.Copy(w, io.LimitReader(rand.NewChaCha8([32]byte{2}), size))
	})
	art := manifest.Artifact{Name: "root", URL: s.URL, Length: size, SHA256: manifest.Digest(h.Sum(nil))}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if err := Fetch(t.Context(), s.Client(), art, io.Discard, Options{}); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("allocated %d KiB (client and server) for %d MiB", alloc>>10, size>>20)
	if alloc > size/3 { // buffering it would take at least size
		t.Fatalf("allocated %d bytes for a %d-byte artifact", alloc, size)
	}
}
