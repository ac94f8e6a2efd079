package cloudlink

import (
	"sync"
	"time"

	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/store"
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

// StoreDedup keeps ids in the state store, so a command replayed after a
// reboot is still refused.
type StoreDedup struct {
	Store *store.Store
	Now   func() time.Time
}

// FirstSeen implements Dedup.
func (d *StoreDedup) FirstSeen(id wire.ID, until time.Time) (bool, error) {
	return d.Store.SeenOnce("cloudlink_seen", id[:], until, d.Now())
}
