package playback

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/recorder"
	"github.com/outpost-gw/outpost/recorder/segment"
)

// FuzzParams feeds arbitrary query strings to the handler's parser: it must
// not panic, refuse with errParams, or return what the handler can use. The
// seed corpus is in testdata/fuzz/FuzzParams.
func FuzzParams(f *testing.F) {
	f.Fuzz(func(t *testing.T, query string) {
		q, _ := url.ParseQuery(query) // what parses is what a handler sees
		p, err := parseParams(q)
		if err != nil {
			if !errors.Is(err, errParams) {
				t.Fatalf("error %v does not wrap errParams", err)
			}
			return
		}
		if !segment.ValidCamera(p.camera) || p.dur <= 0 || p.dur > MaxDuration || p.start.IsZero() {
			t.Fatalf("accepted %+v", p)
		}
	})
}

// FuzzSegment feeds arbitrary bytes to the segment reader as one segment
// file: it must not panic, and never write more than it read (parts are
// copied, not made up). The seeds are a real two-track segment, cut short,
// and the committed corpus in testdata/fuzz/FuzzSegment (empty, garbage, an
// init alone, parts without an init, boxes with bad sizes, a whole segment).
func FuzzSegment(f *testing.F) {
	root := f.TempDir()
	recs := record(f, root, rec{fps: 10, gop: 5, seg: time.Minute, part: 200 * time.Millisecond, audio: recorder.Opus,
		sessions: [][2]time.Duration{{0, 600 * time.Millisecond}}})
	seg, err := os.ReadFile(filepath.Join(root, recs[0].File))
	if err != nil {
		f.Fatal(err)
	}
	for _, n := range []int{len(seg), len(seg) - 1, len(seg) * 2 / 3, 900, 40} {
		f.Add(seg[:n], int64(250))
	}
	f.Fuzz(func(t *testing.T, data []byte, from int64) {
		var out bytes.Buffer
		s := &stream{w: &out, start: t0.Add(time.Duration(from) * time.Millisecond), buf: make([]byte, 512)}
		s.end = s.start.Add(time.Second)
		s.segment(context.Background(), bytes.NewReader(data), int64(len(data)), t0)
		if out.Len() > len(data) || s.off != int64(out.Len()) {
			t.Fatalf("wrote %d bytes (counted %d) from %d", out.Len(), s.off, len(data))
		}
		if s.head != nil && !bytes.HasPrefix(out.Bytes(), s.head.raw) {
			t.Fatal("output does not start with the init")
		}
		io.Copy(io.Discard, &out)
	})
}
