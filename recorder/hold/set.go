package hold

import (
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/outpost-gw/outpost/internal/store"
)

var bucket = store.NewBucket[Hold]("recording_holds")

var (
	// ErrUnknown reports a release of a hold that is not there (never
	// placed, released already, or expired).
	ErrUnknown = errors.New("hold: no such hold")
	// ErrFull reports a new hold beyond MaxHolds.
	ErrFull = errors.New("hold: too many holds")
)

// Set is the holds in force, kept in the store and mirrored in memory.
// Safe for concurrent use; Held is a short scan under a mutex.
type Set struct {
	st  *store.Store
	now func() time.Time
	mu  sync.Mutex
	m   map[string]Hold // by id
}

// Open loads the holds kept in st; now is the clock for expiry (nil =
// time.Now). Expired holds are loaded too, until Expire drops them, so that
// their expiry is reported once.
func Open(st *store.Store, now func() time.Time) (*Set, error) {
	if now == nil {
		now = time.Now
	}
	s := &Set{st: st, now: now, m: map[string]Hold{}}
	err := st.View(func(tx *bolt.Tx) error {
		return bucket.ForEach(tx, func(id string, h Hold) error { s.m[id] = h; return nil })
	})
	if err != nil {
		return nil, fmt.Errorf("hold: load: %w", err)
	}
	return s, nil
}

// Put places h, replacing a hold with the same id (an extension, say).
// replaced reports whether there was one.
func (s *Set) Put(h Hold) (replaced bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, replaced = s.m[h.ID]
	if !replaced && len(s.m) >= MaxHolds {
		return false, fmt.Errorf("%w: %d in force, release one first", ErrFull, len(s.m))
	}
	if err := s.st.Update(func(tx *bolt.Tx) error { return bucket.Put(tx, h.ID, h) }); err != nil {
		return false, fmt.Errorf("hold: %w", err)
	}
	s.m[h.ID] = h
	return replaced, nil
}

// Release drops hold id and returns it.
func (s *Set) Release(id string) (Hold, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.m[id]
	if !ok {
		return Hold{}, fmt.Errorf("%w: %q", ErrUnknown, id)
	}
	if err := s.st.Update(func(tx *bolt.Tx) error { return bucket.Delete(tx, id) }); err != nil {
		return Hold{}, fmt.Errorf("hold: %w", err)
	}
	delete(s.m, id)
	return h, nil
}

// Expire drops the holds whose Until has passed and returns them.
func (s *Set) Expire() ([]Hold, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var gone []Hold
	for _, h := range s.m {
		if !h.Until.After(now) {
			gone = append(gone, h)
		}
	}
	if len(gone) == 0 {
		return nil, nil
	}
	err := s.st.Update(func(tx *bolt.Tx) error {
		for _, h := range gone {
			if err := bucket.Delete(tx, h.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hold: %w", err)
	}
	for _, h := range gone {
		delete(s.m, h.ID)
	}
	return gone, nil
}

// Next is the earliest Until of the holds in force; zero if none.
func (s *Set) Next() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var next time.Time
	for _, h := range s.m {
		if next.IsZero() || h.Until.Before(next) {
			next = h.Until
		}
	}
	return next
}

// List returns the holds, expired ones not yet dropped included.
func (s *Set) List() []Hold {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Hold, 0, len(s.m))
	for _, h := range s.m {
		out = append(out, h)
	}
	return out
}

// Held reports whether a segment of camera spanning [start, end) overlaps
// a hold that has not expired: set it (with the export holds) as
// retention.Cleaner.Held.
func (s *Set) Held(camera string, start, end time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, h := range s.m {
		if h.Until.After(now) && h.Covers(camera, start, end) {
			return true
		}
	}
	return false
}
