package segment

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/recorder"
	"github.com/outpost-gw/outpost/recorder/synth"
)

// tinySegment writes a small two-track segment (32x32 video, Opus) of
// about three parts and returns its bytes.
func tinySegment(t testing.TB) []byte {
	var infos []SegmentInfo
	w := newWriter(t, Config{PartDuration: 200 * time.Millisecond}, &infos)
	v := mustSynth(t, synth.Options{Width: 32, Height: 32, FPS: 10, GOP: 5})
	a := mustAudio(t, synth.AudioOptions{Codec: recorder.Opus, Track: 1})
	if err := w.Start([]recorder.Track{v.Track(), a.Track()}); err != nil {
		t.Fatal(err)
	}
	feed(t, w, 600*time.Millisecond, v, a)
	w.End(nil)
	b, err := os.ReadFile(infos[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzWalk feeds arbitrary bytes to the box walker behind Repair: it must
// not panic, must stay within the input, and repairing its own result must
// change nothing. The seed corpus in testdata/fuzz/FuzzWalk holds real
// segments, cut and damaged; regenerate it with SEGMENT_WRITE_CORPUS=1
// go test -run TestWriteCorpus.
func FuzzWalk(f *testing.F) {
	f.Add(tinySegment(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := walk(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, ErrUnrecoverable) {
				t.Fatalf("not an I/O error source, yet: %v", err)
			}
			return
		}
		if res.good < 0 || res.good > int64(len(data)) || res.parts < 0 {
			t.Fatalf("good %d of %d, parts %d", res.good, len(data), res.parts)
		}
		again, err := walk(bytes.NewReader(data[:res.good]), res.good)
		if err != nil || again.good != res.good || again.parts != res.parts || again.duration() != res.duration() {
			t.Fatalf("not idempotent: %+v then %+v, %v", res, again, err)
		}
	})
}

// TestWriteCorpus regenerates the committed seed corpus when
// SEGMENT_WRITE_CORPUS is set.
func TestWriteCorpus(t *testing.T) {
	if os.Getenv("SEGMENT_WRITE_CORPUS") == "" {
		t.Skip("set SEGMENT_WRITE_CORPUS=1 to regenerate testdata/fuzz/FuzzWalk")
	}
	full := tinySegment(t)
	boxes := topBoxes(t, full)
	seeds := map[string][]byte{
		"whole":      full,
		"header":     full[:boxes[1].end],
		"mid-mdat":   full[:(boxes[3].off+boxes[3].end)/2],
		"mid-moof":   full[:boxes[4].off+20],
		"two-parts":  full[:boxes[5].end],
		"zero-tail":  append(bytes.Clone(full[:boxes[3].end]), make([]byte, 64)...),
		"large-size": append(bytes.Clone(full[:boxes[1].end]), "\x00\x00\x00\x01moof\x7f\xff\xff\xff\xff\xff\xff\xff"...),
		"huge-trun":  hugeTrun(full, boxes),
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzWalk")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range seeds {
		body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// hugeTrun sets the first trun's sample count to 2^32-1.
func hugeTrun(full []byte, boxes []box) []byte {
	b := bytes.Clone(full[:boxes[3].end])
	moof := b[boxes[2].off:boxes[2].end]
	if i := bytes.Index(moof, []byte("trun")); i >= 0 {
		copy(moof[i+8:], "\xff\xff\xff\xff")
	}
	return b
}
