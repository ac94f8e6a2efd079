package cloudlink

import (
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/outpost-gw/outpost/cloudlink/wire"
)

// Dedup remembers message ids until they expire, so that a replayed command
// is refused. FirstSeen records id and reports whether it was new.
type Dedup interface {
	FirstSeen(id wire.ID, until time.Time) (bool, error)
}

// MemoryDedup keeps ids in memory (tests, and boxes without a store).
type MemoryDedup struct {
	mu   sync.Mutex
	seen map[wire.ID]time.Time
}

// NewMemoryDedup returns an empty MemoryDedup.
func NewMemoryDedup() *MemoryDedup { return &MemoryDedup{seen: map[wire.ID]time.Time{}} }

// FirstSeen implements Dedup.
func (m *MemoryDedup) FirstSeen(id wire.ID, until time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.seen[id]; ok {
		return false, nil
	}
	m.seen[id] = until
	if len(m.seen) > 4096 {
		now := time.Now()
		for k, t := range m.seen {
			if t.Before(now) {
				delete(m.seen, k)
			}
		}
	}
	return true, nil
}

// BoltDedup keeps ids in a bbolt bucket, so a command replayed after a
// reboot is still refused. Expired ids are pruned as new ones arrive.
type BoltDedup struct {
	DB  *bolt.DB
	Now func() time.Time
}

var dedupBucket = []byte("cloudlink_seen")

// FirstSeen implements Dedup in one fsynced transaction.
func (b *BoltDedup) FirstSeen(id wire.ID, until time.Time) (bool, error) {
	first := false
	err := b.DB.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(dedupBucket)
		if err != nil {
			return err
		}
		if bk.Get(id[:]) != nil {
			return nil
		}
		first = true
		exp, _ := until.MarshalBinary()
		if err := bk.Put(id[:], exp); err != nil {
			return err
		}
		// Ids begin with their time, so the oldest come first.
		now := b.Now()
		c := bk.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var t time.Time
			if t.UnmarshalBinary(v) == nil && t.After(now) {
				break
			}
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
	return first, err
}
