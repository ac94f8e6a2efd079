package daemon

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"

	"github.com/outpost-gw/outpost/recorder/index"
	"github.com/outpost-gw/outpost/recorder/segment"
)

// reindex repairs what a power cut left half-written and makes the index
// agree with the files, before any camera writes: files without an entry
// are added, and entries whose file is gone (deleted by hand, or a crash
// between the file's removal and the entry's) are dropped. An entry whose
// file is still there but could not be read this time is kept.
func (r *recording) reindex(log *slog.Logger) {
	found, err := segment.Scan(r.root)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Warn("scanning recordings", "err", err)
	}
	var files []index.Recording
	for _, info := range found {
		if info.Trimmed > 0 {
			log.Info("repaired a segment cut by a power failure", "file", info.Path, "trimmed_bytes", info.Trimmed)
		}
		rec, err := r.entry(info)
		if err != nil {
			log.Warn("indexing a segment", "file", info.Path, "err", err)
			continue
		}
		files = append(files, rec)
	}
	root, rerr := os.OpenRoot(r.root)
	if rerr != nil {
		log.Error("recordings root", "err", rerr)
		return // keep the index as it is rather than guess
	}
	defer root.Close()
	present := func(rec index.Recording) bool {
		_, err := root.Lstat(rec.File)
		return !errors.Is(err, fs.ErrNotExist)
	}
	res, err := r.ix.Rebuild(files, present)
	if err != nil {
		log.Warn("rebuilding the recordings index", "err", err)
	}
	for _, rec := range res.Dropped {
		log.Warn("index entry without its file dropped", "camera", rec.Camera, "start", rec.Start, "file", rec.File)
	}
	if res.Added > 0 || res.Updated > 0 || len(res.Dropped) > 0 || res.Kept > 0 {
		log.Info("recordings index rebuilt", "files", len(files), "added", res.Added, "updated", res.Updated,
			"dropped", len(res.Dropped), "kept_unread", res.Kept)
	}
}
