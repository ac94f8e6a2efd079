package index

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// Rebuilt reports what Rebuild changed.
type Rebuilt struct {
	// Added counts files that had no entry; Updated, entries that said
	// something else about their file (a segment repaired after a power
	// cut is shorter); Kept, entries without a file in files that keep
	// said to keep.
	Added, Updated, Kept int
	// Dropped are the entries removed: their file is gone (deleted by
	// hand, or a crash between the file's removal and the entry's).
	Dropped []Recording
}

// Rebuild makes the index agree with files, the segments found on disk
// (segment.Scan at start-up): every file gets its entry, added or replaced,
// and every entry whose file is not among files is dropped, unless keep
// (when not nil) says otherwise for it: a caller whose scan failed part way
// keeps the entries whose file may still be there. An entry whose File is
// not a local path cannot name a file under the root and always goes.
// Files with a bad camera id are left out and reported in the error; the
// rest is applied in one transaction, so a crash leaves the old index or
// the new one.
func (ix *Index) Rebuild(files []Recording, keep func(Recording) bool) (Rebuilt, error) {
	var res Rebuilt
	var errs []error
	want := map[string]map[string][]byte{} // camera → key → value
	for _, r := range files {
		if err := checkCamera(r.Camera); err != nil {
			errs = append(errs, fmt.Errorf("index: %s: %w", r.File, err))
			continue
		}
		v, err := json.Marshal(r)
		if err != nil {
			return Rebuilt{}, err
		}
		if want[r.Camera] == nil {
			want[r.Camera] = map[string][]byte{}
		}
		want[r.Camera][string(key(r.Start))] = v
	}
	err := ix.st.Update(func(tx *bolt.Tx) error {
		res = Rebuilt{}
		t, err := tx.CreateBucketIfNotExists(top)
		if err != nil {
			return err
		}
		// Entries without a file.
		var empty [][]byte
		err = t.ForEachBucket(func(cam []byte) error {
			b := t.Bucket(cam)
			mine := want[string(cam)]
			var drop [][]byte
			err := b.ForEach(func(k, v []byte) error {
				if _, ok := mine[string(k)]; ok {
					return nil
				}
				var r Recording
				if err := json.Unmarshal(v, &r); err != nil {
					r = Recording{Camera: string(cam)} // unreadable: nothing to keep it for
				} else if keep != nil && local(r.File) && keep(r) {
					res.Kept++
					return nil
				}
				drop = append(drop, bytes.Clone(k))
				res.Dropped = append(res.Dropped, r)
				return nil
			})
			if err != nil {
				return err
			}
			for _, k := range drop {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			if k, _ := b.Cursor().First(); k == nil && mine == nil {
				empty = append(empty, bytes.Clone(cam))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, cam := range empty { // a camera left with nothing recorded
			if err := t.DeleteBucket(cam); err != nil {
				return err
			}
		}
		// Files without an entry, or with a stale one.
		for cam, recs := range want {
			b, err := t.CreateBucketIfNotExists([]byte(cam))
			if err != nil {
				return err
			}
			for k, v := range recs {
				switch old := b.Get([]byte(k)); {
				case old == nil:
					res.Added++
				case bytes.Equal(old, v):
					continue
				default:
					res.Updated++
				}
				if err := b.Put([]byte(k), v); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return Rebuilt{}, fmt.Errorf("index: rebuild: %w", err)
	}
	return res, errors.Join(errs...)
}

func local(p string) bool {
	return p != "" && filepath.IsLocal(p) && !strings.ContainsAny(p, "\\\x00")
}
