package export

import (
	"sync"
	"time"
)

// Holds keeps the time ranges under export, per camera, so that retention
// passes their segments over: set Holds.Held as retention.Cleaner.Held.
// Safe for concurrent use; Held is a map lookup and a short scan.
type Holds struct {
	mu sync.Mutex
	m  map[string]hold // by export id
}

type hold struct {
	camera     string
	start, end time.Time
}

// Add holds camera's recordings overlapping [start, end) for export id,
// replacing any earlier hold of that id.
func (h *Holds) Add(id, camera string, start, end time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[string]hold{}
	}
	h.m[id] = hold{camera, start, end}
}

// Release drops export id's hold.
func (h *Holds) Release(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.m, id)
}

// Held reports whether a segment of camera spanning [start, end) overlaps
// a range on hold.
func (h *Holds) Held(camera string, start, end time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, x := range h.m {
		if x.camera == camera && start.Before(x.end) && end.After(x.start) {
			return true
		}
	}
	return false
}
