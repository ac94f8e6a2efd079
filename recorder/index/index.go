// Package index keeps the recorder's segments by camera and start time in
// the state store, so that listing and playback never walk the disk. The
// files are the truth: at start-up Rebuild makes the index agree with them
// (after a lost store, segments closed while the daemon was dying, files
// deleted by hand, or a crash between a file's removal and its entry's).
package index

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/outpost-gw/outpost/internal/store"
)

var top = []byte("recordings")

// Recording is one closed segment.
type Recording struct {
	Camera string `json:"camera"`
	// File is the segment's path relative to the recordings root
	// (camera/day/name.mp4); playback resolves and re-checks it.
	File     string        `json:"file"`
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration"`
	Bytes    int64         `json:"bytes"`
	Codecs   []string      `json:"codecs,omitempty"`
}

// End is when the recording stops.
func (r Recording) End() time.Time { return r.Start.Add(r.Duration) }

// Index is the segment index.
type Index struct{ st *store.Store }

// New returns the index in st.
func New(st *store.Store) *Index { return &Index{st: st} }

func key(t time.Time) []byte { return binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano())) }

// Add records a segment (replacing one with the same camera and start).
func (ix *Index) Add(r Recording) error {
	if err := checkCamera(r.Camera); err != nil {
		return err
	}
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return ix.st.Update(func(tx *bolt.Tx) error {
		b, err := cameraBucket(tx, r.Camera, true)
		if err != nil {
			return err
		}
		return b.Put(key(r.Start), v)
	})
}

// Remove drops a segment from the index.
func (ix *Index) Remove(camera string, start time.Time) error {
	return ix.st.Update(func(tx *bolt.Tx) error {
		b, err := cameraBucket(tx, camera, false)
		if b == nil || err != nil {
			return err
		}
		return b.Delete(key(start))
	})
}

func cameraBucket(tx *bolt.Tx, camera string, create bool) (*bolt.Bucket, error) {
	if !create {
		t := tx.Bucket(top)
		if t == nil {
			return nil, nil
		}
		return t.Bucket([]byte(camera)), nil
	}
	t, err := tx.CreateBucketIfNotExists(top)
	if err != nil {
		return nil, err
	}
	return t.CreateBucketIfNotExists([]byte(camera))
}

// List returns a camera's recordings that overlap [from, to), in order.
func (ix *Index) List(camera string, from, to time.Time) ([]Recording, error) {
	var out []Recording
	err := ix.st.View(func(tx *bolt.Tx) error {
		b, _ := cameraBucket(tx, camera, false)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		// Start one before from: that segment may reach into the range.
		k, v := c.Seek(key(from))
		if k == nil {
			k, v = c.Last()
		} else if pk, pv := c.Prev(); pk != nil {
			k, v = pk, pv
		} else {
			k, v = c.First()
		}
		for ; k != nil; k, v = c.Next() {
			var r Recording
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("index %s/%x: %w", camera, k, err)
			}
			if !r.Start.Before(to) {
				break
			}
			if r.End().After(from) {
				out = append(out, r)
			}
		}
		return nil
	})
	return out, err
}

// Oldest returns the oldest recordings over all cameras, up to n, oldest
// first (for retention).
func (ix *Index) Oldest(n int) ([]Recording, error) {
	var all []Recording
	err := ix.st.View(func(tx *bolt.Tx) error {
		t := tx.Bucket(top)
		if t == nil {
			return nil
		}
		return t.ForEachBucket(func(cam []byte) error {
			c := t.Bucket(cam).Cursor()
			i := 0
			for k, v := c.First(); k != nil && i < n; k, v = c.Next() {
				var r Recording
				if err := json.Unmarshal(v, &r); err != nil {
					return err
				}
				all = append(all, r)
				i++
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	sortByStart(all)
	if len(all) > n {
		all = all[:n]
	}
	return all, nil
}

// Cameras lists the cameras that have recordings.
func (ix *Index) Cameras() ([]string, error) {
	var out []string
	err := ix.st.View(func(tx *bolt.Tx) error {
		t := tx.Bucket(top)
		if t == nil {
			return nil
		}
		return t.ForEachBucket(func(k []byte) error { out = append(out, string(k)); return nil })
	})
	return out, err
}

// Span is a stretch of continuous recording.
type Span struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Spans merges recordings that follow each other within maxGap into spans;
// what lies between spans is a gap.
func Spans(recs []Recording, maxGap time.Duration) []Span {
	var out []Span
	for _, r := range recs {
		if n := len(out); n > 0 && !r.Start.After(out[n-1].End.Add(maxGap)) {
			if r.End().After(out[n-1].End) {
				out[n-1].End = r.End()
			}
			continue
		}
		out = append(out, Span{Start: r.Start, End: r.End()})
	}
	return out
}

func sortByStart(rs []Recording) {
	sort.Slice(rs, func(i, j int) bool { return rs[i].Start.Before(rs[j].Start) })
}

// ErrBadCamera means a camera id that could reach outside its directory.
var ErrBadCamera = errors.New("bad camera id")

func checkCamera(c string) error {
	if c == "" || len(c) > 64 || strings.ContainsAny(c, "/\\.") || filepath.Base(c) != c {
		return fmt.Errorf("%w: %q", ErrBadCamera, c)
	}
	return nil
}
