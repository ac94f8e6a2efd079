package ingest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/recorder"
)

// checkSink records what a camera hands on and checks the Sink contract as
// it goes: Write only between Start and End, the first sample after Start
// is a video key frame carrying SPS/PPS (when there is video), DTS strictly
// increases per track, PTS ≥ DTS.
type checkSink struct {
	mu      sync.Mutex
	starts  [][]recorder.Track
	ends    []error
	counts  map[int]int // samples per track, all sessions
	reorder int         // video samples with PTS > DTS
	keep    []recorder.Sample
	bad     []string
	started bool
	fresh   bool
	last    map[int]time.Duration
}

func newCheckSink() *checkSink { return &checkSink{counts: map[int]int{}} }

func (s *checkSink) Start(tracks []recorder.Track) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		s.fail("Start without End")
	}
	s.starts = append(s.starts, tracks)
	s.started, s.fresh, s.last = true, true, map[int]time.Duration{}
	return nil
}

func (s *checkSink) Write(x recorder.Sample) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		s.fail("Write outside a session")
		return nil
	}
	tracks := s.starts[len(s.starts)-1]
	if x.Track < 0 || x.Track >= len(tracks) {
		s.fail("bad track %d", x.Track)
		return nil
	}
	tr := tracks[x.Track]
	if s.fresh && tracks[0].Codec.IsVideo() {
		if x.Track != 0 || !x.Key || len(x.AU) < 2 || !bytes.Equal(x.AU[0], tr.SPS) && !bytes.Equal(x.AU[1], tr.SPS) {
			s.fail("first sample is not a key frame with parameter sets: track %d key %v", x.Track, x.Key)
		}
	}
	s.fresh = false
	if l, ok := s.last[x.Track]; ok && x.DTS <= l {
		s.fail("track %d: DTS %v after %v", x.Track, x.DTS, l)
	}
	if x.PTS < x.DTS || x.DTS < 0 {
		s.fail("track %d: PTS %v DTS %v", x.Track, x.PTS, x.DTS)
	}
	if x.Received.IsZero() || len(x.AU) == 0 {
		s.fail("track %d: empty sample", x.Track)
	}
	s.last[x.Track] = x.DTS
	s.counts[x.Track]++
	if tr.Codec.IsVideo() && x.PTS > x.DTS {
		s.reorder++
	}
	if len(s.keep) < 5000 {
		s.keep = append(s.keep, x)
	}
	return nil
}

func (s *checkSink) End(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		s.fail("End without Start")
	}
	s.started = false
	s.ends = append(s.ends, err)
}

func (s *checkSink) fail(f string, args ...any) {
	if len(s.bad) < 10 {
		s.bad = append(s.bad, fmt.Sprintf(f, args...))
	}
}

// view runs f under the sink's lock.
func (s *checkSink) view(f func(s *checkSink)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *checkSink) count(track int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[track]
}

func (s *checkSink) verify(t *testing.T) {
	t.Helper()
	s.view(func(s *checkSink) {
		for _, b := range s.bad {
			t.Error("sink contract: " + b)
		}
	})
}

// eventually polls cond every 20 ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runCamera starts a camera on url; it stops at the end of the test.
func runCamera(t *testing.T, url string, sink *checkSink, mod func(*Config)) *Camera {
	t.Helper()
	cfg := Config{
		ID: t.Name(), URL: url, Sink: sink, Log: testLog(t),
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, ReadTimeout: 2 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
		if st := c.Stats(); st.State != Offline {
			t.Errorf("state after Run: %s", st.State)
		}
		sink.view(func(s *checkSink) {
			if s.started {
				t.Error("sink not ended after Run returned")
			}
		})
	})
	return c
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimSpace(p)))
	return len(p), nil
}
