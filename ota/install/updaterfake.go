package install

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"net/http"
	"os"
	"sync"

	"github.com/gokrazy/updater"
)

// UpdaterServer speaks gokrazy's update protocol (the endpoints
// github.com/gokrazy/updater calls) for tests and the benchmark: PUT
// /update/root writes the body over Path from offset 0 and syncs it, as
// gokrazy writes the inactive root partition, and answers the body's hash;
// testboot, switch and reboot are only recorded.
type UpdaterServer struct {
	Path string

	mu    sync.Mutex
	calls []string
}

// Calls lists the endpoints called, in order.
func (s *UpdaterServer) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

func (s *UpdaterServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.calls = append(s.calls, r.Method+" "+r.URL.Path)
	s.mu.Unlock()
	switch r.URL.Path {
	case "/update/features":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"features":"partuuid,updatehash"}`)
	case "/update/root":
		if r.Method != http.MethodPut {
			http.Error(w, "expected a PUT request", http.StatusBadRequest)
			return
		}
		var h hash.Hash = sha256.New()
		if r.Header.Get("X-Gokrazy-Update-Hash") == "crc32" {
			h = crc32.NewIEEE()
		}
		if err := s.write(io.TeeReader(r.Body, h)); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%x", h.Sum(nil))
	case "/update/testboot", "/update/switch", "/reboot":
		if r.Method != http.MethodPost {
			http.Error(w, "expected a POST request", http.StatusBadRequest)
		}
	default:
		http.NotFound(w, r)
	}
}

func (s *UpdaterServer) write(r io.Reader) error {
	f, err := os.OpenFile(s.Path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.Copy(f, r); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// NewGokrazyAt is a Gokrazy target over an update API at baseURL (with a
// trailing slash) reached through client: the benchmark and tests, against
// an UpdaterServer.
func NewGokrazyAt(ctx context.Context, baseURL string, client updater.HTTPDoer) (*Gokrazy, error) {
	t, err := updater.NewTarget(ctx, baseURL, client)
	if err != nil {
		return nil, err
	}
	return &Gokrazy{t: t}, nil
}
